"""Provenance records: the code commit (never a failure outside a checkout), fingerprints of
preset and stored training data, and the one-line summary `xrp models show` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xray_platform.core.models import provenance_summary
from xray_platform.io import provenance as pv
from xray_platform.io.dataset_writer import finish, manifest_info, plan_shards, write_shard
from xray_platform.io.shots import write_manifest
from xray_platform.physics.presets import preset


def test_a_preset_data_fingerprint_is_its_inputs_and_changes_with_the_seed() -> None:
    p = preset("quick-resolution")
    a = pv.preset_data(p, 0, shots_per_epoch=256, val_shots=128)
    assert a == pv.preset_data(preset("quick-resolution"), 0, shots_per_epoch=256, val_shots=128)
    assert re.fullmatch(r"[0-9a-f]{16}", a["fingerprint"])
    assert pv.preset_data(p, 1, shots_per_epoch=256, val_shots=128)["fingerprint"] \
        != a["fingerprint"]
    assert pv.preset_data(p, 0, shots_per_epoch=512, val_shots=128)["fingerprint"] \
        != a["fingerprint"]
    assert a["version"] == "current" and a["preset"] == "quick-resolution"
    frozen = pv.preset_data(preset("zoo-resolution@2026.12"), 0)
    assert frozen["preset"] == "zoo-resolution" and frozen["version"] == "2026.12"


def test_a_preset_fingerprint_is_what_its_shots_depend_on() -> None:
    p = preset("zoo-lattice")
    assert pv.preset_fingerprint(p.with_n(10)) == pv.preset_fingerprint(p)  # shot i: (seed, i)
    assert pv.preset_fingerprint(p.with_detector("cspad")) != pv.preset_fingerprint(p)
    assert pv.preset_fingerprint(preset("zoo-lattice@2026.12")) == pv.preset_fingerprint(p)


def _write(out: Path, seed: int, n: int = 4) -> Path:
    p = preset("quick-resolution").with_n(n)
    info = manifest_info(p, seed, 2, False)
    out.mkdir()
    write_manifest(out, info)
    for plan in plan_shards(n, 2):
        write_shard(p, seed, plan, out)
    finish(out, info)
    return out


def test_a_stored_data_set_is_fingerprinted_by_its_shards_and_labels(tmp_path: Path) -> None:
    a = pv.stored_data(_write(tmp_path / "a", seed=3))
    assert a["n_shots"] == 4 and a["shards"] == 2
    assert a["simulated"]["preset"] == "quick-resolution" and a["simulated"]["seed"] == 3
    again = pv.stored_data(_write(tmp_path / "again", seed=3))  # the same shots rebuilt
    assert (again["labels"], again["fingerprint"]) == (a["labels"], a["fingerprint"])
    other = pv.stored_data(_write(tmp_path / "other", seed=4))
    assert other["labels"] != a["labels"] and other["fingerprint"] != a["fingerprint"]
    shard = pv.stored_data(tmp_path / "a" / "shard-00000.h5")  # one shard of it: another set
    assert shard["n_shots"] == 2 and shard["fingerprint"] != a["fingerprint"]


def test_the_code_commit_is_recorded_or_unknown_never_an_error(tmp_path: Path,
                                                              monkeypatch) -> None:
    here = pv.code_version()
    assert here["commit"] == pv.UNKNOWN or re.fullmatch(r"[0-9a-f]{40}", here["commit"])
    assert here["dirty"] in (True, False, None)
    assert pv.code_version(tmp_path) == {"commit": pv.UNKNOWN, "dirty": None}  # no checkout
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert pv.code_version() == {"commit": pv.UNKNOWN, "dirty": None}


@pytest.mark.parametrize("dirty", [True, False])
def test_the_summary_names_commit_data_and_hyperparameters(dirty: bool) -> None:
    data = pv.preset_data(preset("zoo-resolution@2026.12"), 0, shots_per_epoch=64)
    meta = {"provenance": {"code": {"commit": "0123456789abcdef" * 2 + "01234567",
                                    "dirty": dirty},
                           "data": data, "seeds": {"seed": 0},
                           "hyperparameters": {"lr": 0.001, "batch_size": 32, "epochs": 16}}}
    line = provenance_summary(meta)
    assert line.startswith("commit 0123456789ab" + (" (dirty)" if dirty else " |"))
    assert "preset zoo-resolution@2026.12 seed 0" in line and data["fingerprint"] in line
    assert "epochs 16, batch_size 32, lr 0.001" in line
    assert provenance_summary({}).startswith("not recorded")
