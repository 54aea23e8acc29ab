"""Data set folders: a data set grows when asked for more of the same shots; anything else
different is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from xray_platform.io.dataset_writer import (
    finish,
    manifest_info,
    plan_shards,
    prepare_directory,
    write_shard,
)
from xray_platform.io.shots import ShotDataset, read_manifest
from xray_platform.physics.presets import preset


def _simulate(out: Path, n: int, seed: int = 4) -> set[int]:
    p = preset("quick-resolution").with_n(n)
    info = manifest_info(p, seed, 4, False)
    done = prepare_directory(out, info)
    for plan in plan_shards(n, 4):
        if plan.index not in done:
            write_shard(p, seed, plan, out)
    finish(out, info)
    return done


def test_a_data_set_grows_with_the_same_shots(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert _simulate(out, 8) == set()
    first = [ShotDataset(out)[i].record["seed"] for i in range(8)]
    assert _simulate(out, 12) == {0, 1}  # the two complete shards are kept
    ds = ShotDataset(out)
    assert len(ds) == 12 and [ds[i].record["seed"] for i in range(8)] == first
    assert read_manifest(out)["n_shots"] == 12 and read_manifest(out)["complete"]
    with pytest.raises(ValueError, match="grow, not shrink"):
        _simulate(out, 4)
    with pytest.raises(ValueError, match="seed"):
        _simulate(out, 12, seed=5)
