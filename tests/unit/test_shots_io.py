"""Tests for xray_platform.io.shots: round trip, laziness, crash safety, schema, pickling."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ROOT as REPO

from xray_platform.io import shots
from xray_platform.io.shots import (
    SHARD_PATTERN,
    Shot,
    ShotDataset,
    ShotFile,
    ShotWriter,
    clean_partials,
    completed_shards,
    read_manifest,
    write_manifest,
)

H, W = 8, 10
S, F = 12, 14
ATTRS = {"preset": "tiny", "seeds": [1, 2, 3], "master_seed": np.int64(7)}


def make_shot(g: int, full: bool = True) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """Deterministic shot number g (global index)."""
    rng = np.random.default_rng(g)
    x = rng.normal(size=(H, W)).astype(np.float32)
    x[0, :3] = -1.0  # masked cells
    frame = None
    if full:
        frame = rng.integers(0, 500, size=(S, F), dtype=np.int32)
        frame[:, 5] = -1  # module gap
    record = {
        "n_lattices": g % 3,
        "d_vis": float("nan") if g % 4 == 0 else 2.0 + g / 10,
        "is_blank": g % 4 == 0,
        "name": f"shot-{g}-Å",
        "misorientation": json.dumps([0.5 * g, 1.25]),
        "distance_mm": 100.0 + g,
    }
    return x, record, frame


def write_shard(directory: Path, index: int, start: int, n: int, full: bool = True, **kw) -> Path:
    path = directory / SHARD_PATTERN.format(index=index)
    ff_shape = (S, F) if full else None
    with ShotWriter(
        path, input_shape=(H, W), expected=n, attrs=ATTRS, full_frame_shape=ff_shape, **kw
    ) as w:
        for g in range(start, start + n):
            x, rec, frame = make_shot(g, full)
            w.append(x, rec, frame)
    return path


def assert_shot(shot: Shot, g: int, full: bool = True) -> None:
    x, rec, frame = make_shot(g, full)
    np.testing.assert_array_equal(shot.inputs, x)
    assert shot.inputs.dtype == np.float32
    if full:
        np.testing.assert_array_equal(shot.full_frame, frame)
        assert shot.full_frame.dtype == np.int32
    else:
        assert shot.full_frame is None
    assert list(shot.record) == list(rec)
    for k, v in rec.items():
        got = shot.record[k]
        assert type(got) is type(v), k
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(got)
        else:
            assert got == v, k


@pytest.fixture()
def three_shards(tmp_path: Path) -> Path:
    for index, (start, n) in enumerate([(0, 3), (3, 2), (5, 4)]):
        write_shard(tmp_path, index, start, n)
    write_manifest(tmp_path, {"preset": "tiny", "n_shards": 3, "shots": 9})
    return tmp_path


def test_round_trip_across_shards(three_shards: Path) -> None:
    assert sorted(p.name for p in three_shards.iterdir()) == [
        "dataset.json",
        "shard-00000.h5",
        "shard-00001.h5",
        "shard-00002.h5",
    ]
    ds = ShotDataset(three_shards)
    assert len(ds) == 9
    assert [p.name for p in ds.shard_paths] == [f"shard-{i:05d}.h5" for i in range(3)]
    for g in range(9):
        assert_shot(ds[g], g)
    assert_shot(ds[-1], 8)
    assert_shot(ds[np.int64(4)], 4)
    with pytest.raises(IndexError):
        ds[9]
    with pytest.raises(IndexError):
        ds[-10]

    table = ds.table
    assert table["n_lattices"].tolist() == [g % 3 for g in range(9)]
    assert table["n_lattices"].dtype == np.int64
    assert table["is_blank"].dtype == np.bool_
    assert table["is_blank"].tolist() == [g % 4 == 0 for g in range(9)]
    assert table["name"].tolist() == [f"shot-{g}-Å" for g in range(9)]
    assert np.isnan(table["d_vis"][[0, 4, 8]]).all()
    assert json.loads(table["misorientation"][3]) == [1.5, 1.25]

    assert ds.attrs == read_manifest(three_shards) == {"preset": "tiny", "n_shards": 3, "shots": 9}
    with ShotFile(three_shards / "shard-00001.h5") as f:
        assert len(f) == 2
        assert f.attrs["preset"] == "tiny"
        assert f.attrs["seeds"] == [1, 2, 3]
        assert f.attrs["master_seed"] == 7
        assert "xrp_version" in f.attrs
        assert_shot(f[-1], 4)
        assert f.table["n_lattices"].tolist() == [0, 1]
        assert_shot(f[0], 3)  # served from the cached table now
        raw = f._file
        assert raw.attrs["format"] == "xrp-shots"
        assert raw.attrs["format_version"] == 1
        assert bool(raw.attrs["complete"]) and raw.attrs["n_shots"] == 2
        assert raw["inputs"].chunks == (1, H, W)
        assert raw["full_frames"].chunks == (1, S, F)
        assert raw["inputs"]._filters and raw["full_frames"]._filters  # compressed
    ds.close()

    single = ShotDataset(three_shards / "shard-00002.h5")
    assert len(single) == 4
    assert_shot(single[0], 5)
    assert single.attrs["preset"] == "tiny"
    single.close()


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_other_compressions_and_no_full_frames(tmp_path: Path, compression: str | None) -> None:
    write_shard(tmp_path, 0, 0, 3, full=False, compression=compression)
    with ShotDataset(tmp_path) as ds:
        for g in range(3):
            assert_shot(ds[g], g, full=False)


def test_lazy_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n, size = 48, 128
    path = tmp_path / SHARD_PATTERN.format(index=0)
    with ShotWriter(path, input_shape=(size, size), expected=n, attrs={}) as w:
        for g in range(n):
            w.append(np.full((size, size), g, np.float32), {"g": g})
    ds = ShotDataset(tmp_path)

    reads: list[tuple[str, object]] = []
    orig = h5py.Dataset.__getitem__

    def spy(self, args, *rest):
        reads.append((self.name, args))
        return orig(self, args, *rest)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    tracemalloc.start()
    try:
        shot = ds[37]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shot.record == {"g": 37}
    assert shot.inputs.shape == (size, size) and (shot.inputs == 37).all()
    input_reads = [args for name, args in reads if name == "/inputs"]
    assert input_reads == [37]
    assert all(args == 37 for _, args in reads)
    frame_bytes = size * size * 4
    assert peak < 8 * frame_bytes  # the whole inputs array would be 48 frames
    ds.close()


def test_exception_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / SHARD_PATTERN.format(index=0)
    with pytest.raises(RuntimeError, match="boom"):
        with ShotWriter(path, input_shape=(H, W), expected=3, attrs=ATTRS) as w:
            x, rec, _ = make_shot(0)
            w.append(x, rec)
            assert (tmp_path / "shard-00000.h5.partial").exists()
            assert not path.exists()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_short_count_is_not_finalised(tmp_path: Path) -> None:
    path = tmp_path / SHARD_PATTERN.format(index=0)
    with pytest.raises(ValueError, match="only 2 of 3"):
        with ShotWriter(path, input_shape=(H, W), expected=3, attrs=ATTRS) as w:
            for g in range(2):
                x, rec, _ = make_shot(g)
                w.append(x, rec)
    assert list(tmp_path.iterdir()) == []
    assert completed_shards(tmp_path) == set()


def test_too_many_appends(tmp_path: Path) -> None:
    path = tmp_path / SHARD_PATTERN.format(index=0)
    with ShotWriter(path, input_shape=(H, W), expected=1, attrs={}) as w:
        x, rec, _ = make_shot(0)
        w.append(x, rec)
        with pytest.raises(ValueError, match="already holds"):
            w.append(x, rec)
    assert len(ShotFile(path)) == 1


KILL_SCRIPT = """
import os, sys
import numpy as np
from xray_platform.io.shots import ShotWriter
w = ShotWriter(sys.argv[1], input_shape=(8, 10), expected=5, attrs={"preset": "tiny"},
               full_frame_shape=(12, 14))
for g in range(3):
    w.append(np.zeros((8, 10), np.float32), {"g": g}, np.zeros((12, 14), np.int32))
w._file.flush()
os._exit(1)
"""


def test_hard_kill_leaves_only_partial_and_resumes(tmp_path: Path) -> None:
    write_shard(tmp_path, 0, 0, 3)
    killed = tmp_path / SHARD_PATTERN.format(index=1)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_SCRIPT), str(killed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    partial = tmp_path / "shard-00001.h5.partial"
    assert partial.exists() and not killed.exists()

    with pytest.raises(ValueError, match="unfinished"):
        ShotFile(partial)
    ds = ShotDataset(tmp_path)
    assert len(ds) == 3 and [p.name for p in ds.shard_paths] == ["shard-00000.h5"]
    assert completed_shards(tmp_path) == {0}
    assert completed_shards(tmp_path, expected=3) == {0}
    assert completed_shards(tmp_path, expected={0: 4}) == set()

    assert clean_partials(tmp_path) == [partial]
    assert not partial.exists()
    assert clean_partials(tmp_path) == []

    # resume: rewrite only the missing shard
    todo = [i for i in range(2) if i not in completed_shards(tmp_path)]
    assert todo == [1]
    write_shard(tmp_path, 1, 3, 2)
    assert completed_shards(tmp_path) == {0, 1}
    ds = ShotDataset(tmp_path)
    assert len(ds) == 5
    assert_shot(ds[4], 4)
    ds.close()


def test_writer_overwrites_stale_partial(tmp_path: Path) -> None:
    (tmp_path / "shard-00000.h5.partial").write_bytes(b"garbage")
    write_shard(tmp_path, 0, 0, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.h5"]


def _writer(tmp_path: Path) -> ShotWriter:
    return ShotWriter(
        tmp_path / "shard-00000.h5",
        input_shape=(H, W),
        expected=4,
        attrs={},
        full_frame_shape=(S, F),
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r.pop("d_vis"), "d_vis"),
        (lambda r: r.update(extra_col=1.0), "extra_col"),
        (lambda r: r.update(n_lattices=1.5), "n_lattices"),
        (lambda r: r.update(n_lattices=True), "n_lattices"),
        (lambda r: r.update(d_vis="2.0"), "d_vis"),
        (lambda r: r.update(is_blank=1), "is_blank"),
        (lambda r: r.update(name=3), "name"),
        (lambda r: r.update(misorientation=[1.0, 2.0]), "misorientation"),
    ],
)
def test_schema_errors_name_the_key(tmp_path: Path, change, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        with _writer(tmp_path) as w:
            x, rec, frame = make_shot(1)
            w.append(x, rec, frame)
            x, rec, frame = make_shot(2)
            change(rec)
            w.append(x, rec, frame)
    assert list(tmp_path.iterdir()) == []


def test_failed_append_writes_nothing(tmp_path: Path) -> None:
    with _writer(tmp_path) as w:
        x, rec, frame = make_shot(0)
        w.append(x, rec, frame)
        with pytest.raises(ValueError, match="name"):
            w.append(*make_shot(1)[:1], {**make_shot(1)[1], "name": None}, make_shot(1)[2])
        with pytest.raises(ValueError, match="shape"):
            w.append(np.zeros((H, W + 1), np.float32), rec, frame)
        with pytest.raises(ValueError, match="full_frame"):
            w.append(x, rec)
        with pytest.raises(ValueError, match="int32"):
            w.append(x, rec, np.full((S, F), 2**40, np.int64))
        assert len(w) == 1
        for g in range(1, 4):
            w.append(*make_shot(g))
    with ShotFile(tmp_path / "shard-00000.h5") as f:
        for g in range(4):
            assert_shot(f[g], g)


def test_int_accepted_in_float_column(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    with ShotWriter(path, input_shape=(H, W), expected=2, attrs={}) as w:
        w.append(np.zeros((H, W)), {"d": 1.5})
        w.append(np.zeros((H, W), np.int16), {"d": 2})
    with ShotFile(path) as f:
        assert f[1].record == {"d": 2.0} and type(f[1].record["d"]) is float
        assert f[1].inputs.dtype == np.float32


def test_first_record_type_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vec"):
        with ShotWriter(tmp_path / "a.h5", input_shape=(H, W), expected=1, attrs={}) as w:
            w.append(np.zeros((H, W), np.float32), {"vec": np.zeros(3)})
    with pytest.raises(ValueError, match="full_frame_shape"):
        with ShotWriter(tmp_path / "a.h5", input_shape=(H, W), expected=1, attrs={}) as w:
            w.append(np.zeros((H, W), np.float32), {"a": 1}, np.zeros((S, F), np.int32))
    assert list(tmp_path.iterdir()) == []


def test_shotfile_rejects_foreign_and_incomplete_files(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "random.h5", "w") as f:
        f["data"] = np.arange(5)
    with pytest.raises(ValueError, match="not an xrp shot shard"):
        ShotFile(tmp_path / "random.h5")

    (tmp_path / "bytes.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        ShotFile(tmp_path / "bytes.h5")

    inc = tmp_path / "shard-00000.h5"
    with h5py.File(inc, "w") as f:
        f.attrs.update(format="xrp-shots", format_version=1, complete=False, n_shots=0)
        f.create_dataset("inputs", shape=(1, H, W), dtype=np.float32)
        f.create_group("labels")
    with pytest.raises(ValueError, match="incomplete"):
        ShotFile(inc)
    assert completed_shards(tmp_path) == set()

    (tmp_path / "x.h5.partial").write_bytes(b"")
    with pytest.raises(ValueError, match="partial"):
        ShotFile(tmp_path / "x.h5.partial")
    with pytest.raises(FileNotFoundError):
        ShotFile(tmp_path / "missing.h5")


def test_dataset_without_complete_shards(tmp_path: Path) -> None:
    (tmp_path / "shard-00000.h5.partial").write_bytes(b"")
    with pytest.raises(ValueError, match="no complete shard"):
        ShotDataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        ShotDataset(tmp_path / "nope")


def test_pickled_dataset_reads(three_shards: Path) -> None:
    ds = ShotDataset(three_shards)
    assert_shot(ds[5], 5)  # opens a handle
    assert ds._files
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._files == {}
    assert len(clone) == 9
    for g in (0, 4, 8):
        assert_shot(clone[g], g)
    assert clone.table["name"].tolist() == ds.table["name"].tolist()
    clone.close()
    ds.close()
    f = pickle.loads(pickle.dumps(ShotFile(three_shards / "shard-00000.h5")))
    assert_shot(f[1], 1)
    f.close()


def test_manifest_atomic(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    write_manifest(d, {"a": 1, "seed": np.int64(3), "path": Path("/x")})
    write_manifest(d, {"a": 2, "seed": np.int64(3), "path": Path("/x")})
    assert read_manifest(d) == {"a": 2, "seed": 3, "path": "/x"}
    assert [p.name for p in d.iterdir()] == [shots.MANIFEST_NAME]
