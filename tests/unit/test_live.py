"""At the beamline: the run store (a real SQLite database) and `xrp watch` following a folder
that is being written."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import xrp_here

from xray_platform.io.cbf import write_cbf
from xray_platform.live.store import RunStore
from xray_platform.live.watch import watch_folder

GEOM = dict(wavelength_A=1.0, distance_mm=150.0, pixel_size_mm=0.172,
            beam_center_px=(130.0, 120.0))


def _cbf(path: Path, seed: int) -> bytes:
    img = np.random.default_rng(seed).poisson(2.0, (240, 260)).astype(np.int32)
    write_cbf(path, img, **GEOM)
    return path.read_bytes()


def test_the_store_keeps_one_answer_per_frame_and_resumes_runs(tmp_path: Path) -> None:
    s = RunStore(f"sqlite:///{tmp_path}/db/runs.db")
    run = s.open_run("r1", "folder:/data/r1")
    assert s.open_run("r1", "folder:/data/r1") == run  # resumed
    with pytest.raises(ValueError, match="already exists"):
        s.open_run("r1", "folder:/elsewhere")
    a = {"file": "/data/r1/a.cbf", "frame": 0, "hit": True, "n_spots": 40,
         "resolution_A": float("nan"), "wavelength_A": 1.0, "timings_ms": {"grid_ms": 3.0}}
    b = {"file": "/data/r1/b.cbf", "frame": 0, "error": "truncated CBF"}
    assert s.add(run, [a, b]) == 2 and s.add(run, [a]) == 0  # never twice
    assert s.answered(run) == {("/data/r1/a.cbf", 0), ("/data/r1/b.cbf", 0)}
    (row,) = s.runs()
    assert (row["frames"], row["hits"], row["errors"]) == (2, 1, 1)
    got = RunStore(f"sqlite:///{tmp_path}/db/runs.db").answers("r1")  # a new connection
    assert [g["file"] for g in got] == ["/data/r1/a.cbf", "/data/r1/b.cbf"]
    assert got[0]["resolution_A"] is None and got[0]["timings_ms"] == {"grid_ms": 3.0}
    with pytest.raises(ValueError, match="no run"):
        s.answers("r2")
    with pytest.raises(ValueError, match="database URL"):
        RunStore("nosuchdb://x")


def test_watch_follows_a_folder_being_written_and_a_restart_answers_nothing_twice(
        tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    _cbf(folder / "f_0001.cbf", 1)
    result = {}
    opts = dict(poll_s=0.05, settle_s=0.2, give_up_s=1.5, exit_when_idle_s=2.5)
    t = threading.Thread(target=lambda: result.update(
        s=watch_folder(folder, store, "run", {}, **opts)))
    t.start()
    full = _cbf(tmp_path / "f_0002.cbf", 2)
    part = folder / "f_0002.cbf"
    part.write_bytes(full[: len(full) // 2])  # the detector is still writing it ...
    time.sleep(0.6)  # ... long enough to be read (and fail), not long enough to give up
    part.write_bytes(full)
    (folder / "f_0003.cbf").write_bytes(b"###CBF: VERSION 1.5\n" + b"x" * 100)  # stays broken
    (folder / "notes.txt").write_text("not a frame")
    t.join(timeout=60)
    assert not t.is_alive()
    by = {Path(a["file"]).name: a for a in store.answers("run")}
    assert set(by) == {"f_0001.cbf", "f_0002.cbf", "f_0003.cbf"}
    assert by["f_0002.cbf"].get("error") is None and by["f_0002.cbf"]["n_spots"] >= 0
    assert "f_0003.cbf" in by["f_0003.cbf"]["error"]
    assert result["s"].answered == 3 and result["s"].errors == 1
    again = watch_folder(folder, store, "run", {}, **{**opts, "exit_when_idle_s": 0.3})
    assert again.answered == 0 and len(store.answers("run")) == 3


def test_watch_follows_links_only_inside_its_folder(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    _cbf(folder / "f_0001.cbf", 1)
    _cbf(elsewhere / "other_user.cbf", 2)
    (folder / "f_0002.cbf").symlink_to(elsewhere / "other_user.cbf")
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    opts = dict(poll_s=0.05, settle_s=0.0, give_up_s=0.0, exit_when_idle_s=0.3)
    s = watch_folder(folder, store, "run", {}, **opts)
    by = {Path(a["file"]).name: a for a in store.answers("run")}
    assert s.answered == 2 and by["f_0001.cbf"].get("error") is None
    assert "outside the watched folder (--allow-links-outside" in by["f_0002.cbf"]["error"]
    assert str(elsewhere) not in by["f_0002.cbf"]["error"]
    s = watch_folder(folder, store, "open", {}, allow_links_outside=True, **opts)
    assert s.answered == 2 and s.errors == 0  # the user said so


def test_a_backlog_beyond_its_bound_is_dropped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "burst"
    folder.mkdir()
    for i in range(5):
        _cbf(folder / f"f_{i:04d}.cbf", i)
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    s = watch_folder(folder, store, "burst", {}, poll_s=0.05, settle_s=0.0, max_backlog=2,
                     exit_when_idle_s=0.3)
    assert (s.answered, s.dropped) == (2, 3)
    assert [Path(a["file"]).name for a in store.answers("burst")] == ["f_0003.cbf",
                                                                      "f_0004.cbf"]
    assert store.run("burst")["dropped"] == 3


def test_the_runs_commands(tmp_path: Path) -> None:
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    run = store.open_run("r", "folder:/x")
    store.add(run, [{"file": "/x/a.cbf", "frame": 0, "hit": True, "n_spots": 30,
                     "resolution_A": 2.1}])
    assert store.info(run) == {}
    store.set_info(run, cell=[57.8, 57.8, 150.2, 90, 90, 90])  # what --cell keeps
    store.set_info(run, source_note="x")  # merged, not replaced
    assert store.info(run)["cell"][2] == 150.2 and store.info(run)["source_note"] == "x"
    url = f"sqlite:///{tmp_path}/runs.db"
    assert "r" in xrp_here("runs", "list", "--store", url).stdout
    out = xrp_here("runs", "show", "r", "--store", url).stdout
    assert "1 frames, 1 hits" in out and "2.10" in out and "cell 57.8/57.8/150.2/90/90/90" in out
    r = xrp_here("runs", "export", "r", "--out", str(tmp_path / "r.csv"), "--store", url)
    assert r.returncode == 0 and "a.cbf" in (tmp_path / "r.csv").read_text()
    r = xrp_here("runs", "show", "nope", "--store", url)
    assert r.returncode != 0 and "no run 'nope'" in r.stdout + r.stderr
    r = xrp_here("watch", str(tmp_path / "missing"), "--store", url, "--lattice-model",
                 "none", "--resolution-model", "none", "--exit-when-idle", "0")
    assert r.returncode != 0 and "no such folder" in r.stdout + r.stderr
