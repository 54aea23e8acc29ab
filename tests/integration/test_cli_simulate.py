"""`xrp simulate` and `xrp show` as a user runs them: real processes, a real local Ray."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import LOOPBACK_ENV, free_port, ray_head, xrp, xrp_here  # noqa: E402
from helpers import NANOBRAGG as REF

from xray_platform.io.shots import ShotDataset, ShotFile


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "quick"
    r = xrp("simulate", "quick-resolution", "-n", "8", "--shard-size", "4", "--seed", "3",
            "--out", str(out), "--num-cpus", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "summary" in r.stdout and "8 new" in r.stdout
    return out


def test_simulate_writes_a_complete_labelled_dataset(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert manifest["complete"] is True and manifest["preset"] == "quick-resolution"
    assert manifest["n_shots"] == 8 and manifest["seed"] == 3
    assert manifest["parameters"]["sim"]["distance_mm"] == [100.0, 400.0]  # preset recorded
    assert sorted(p.name for p in dataset.glob("*.h5")) == ["shard-00000.h5", "shard-00001.h5"]
    assert not list(dataset.glob("*.partial"))
    ds = ShotDataset(dataset)
    assert len(ds) == 8
    t = ds.table
    assert list(t["index"]) == list(range(8))
    for k in ("d_vis", "d_B", "hit", "n_lattices", "is_multi", "misorientation_deg",
              "distance_mm", "wavelength_A", "detector", "seed"):
        assert k in t
    for i in range(8):
        shot = ds[i]
        assert shot.inputs.shape == (64, 64) and shot.inputs.dtype == np.float32
        assert ((shot.inputs >= 0) | (shot.inputs == -1)).all()
        r = shot.record
        if r["hit"]:
            assert math.isfinite(r["d_vis"]) and r["n_detectable"] >= 15
        if math.isnan(r["d_vis"]):
            assert r["n_detectable"] == 0  # NaN only where nothing is detectable
    # provenance per shard
    with ShotFile(dataset / "shard-00001.h5") as f:
        assert f.attrs["preset"] == "quick-resolution" and f.attrs["start"] == 4


def test_shots_are_reproducible_from_their_seed(dataset: Path) -> None:
    from xray_platform.physics.presets import preset
    from xray_platform.physics.simulate import simulate

    p = preset("quick-resolution").with_n(8)
    shot = ShotDataset(dataset)[5]
    again = simulate(p.params(3, 5), p.grid)
    np.testing.assert_array_equal(shot.inputs, again.inputs)
    assert shot.record["seed"] == again.record["seed"]


def test_rerun_resumes_and_conflicts_are_refused(dataset: Path) -> None:
    r = xrp("simulate", "quick-resolution", "-n", "8", "--shard-size", "4", "--seed", "3",
            "--out", str(dataset))
    assert r.returncode == 0, r.stderr
    assert "0 new, 2 shard(s) already complete" in r.stdout
    r = xrp("simulate", "quick-resolution", "-n", "8", "--shard-size", "4", "--seed", "4",
            "--out", str(dataset))
    assert r.returncode == 2 and "different data set" in r.stderr


def test_bad_input_gets_clear_errors(tmp_path: Path) -> None:
    r = xrp_here("simulate", "no-such-preset", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown preset 'no-such-preset'" in r.stderr
    assert "quick-resolution" in r.stderr
    r = xrp_here("simulate", "quick-resolution", "-n", "0", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "-n must be a positive" in r.stderr
    afile = tmp_path / "file"
    afile.write_text("x")
    r = xrp_here("simulate", "quick-resolution", "--out", str(afile))
    assert r.returncode == 2 and "not a directory" in r.stderr
    r = xrp_here("simulate", "quick-resolution", "--out", str(afile / "sub"))
    assert r.returncode == 2 and "cannot create output directory" in r.stderr
    r = xrp_here("simulate", "quick-resolution", "-n", "abc", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "Invalid value for '-n'" in r.stderr
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.h5"))
    r = xrp_here("show", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_killed_run_leaves_nothing_that_looks_complete_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "xray_platform.cli", "simulate", "quick-lattice", "-n", "24",
           "--shard-size", "3", "--out", str(out), "--num-cpus", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 600  # a busy machine: correctness, not speed
        while time.time() < deadline and not list(out.glob("shard-*.h5")):
            time.sleep(0.2)
        assert list(out.glob("shard-*.h5")), "no shard finished in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray and its workers
        proc.wait()
    time.sleep(1.0)
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["complete"] is False
    finals = sorted(out.glob("shard-*.h5"))
    assert 1 <= len(finals) < 8
    for f in finals:  # every final-named file is complete; partial work hides as .partial
        with ShotFile(f) as sf:
            assert len(sf) == 3
    r = xrp("simulate", "quick-lattice", "-n", "24", "--shard-size", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "already complete" in r.stdout
    assert json.loads((out / "dataset.json").read_text())["complete"] is True
    assert len(ShotDataset(out)) == 24 and not list(out.glob("*.partial"))


def test_simulate_on_a_cluster_by_address(tmp_path: Path) -> None:
    """`--address` sends the shards to a running cluster (here a head node on loopback)."""
    port = str(free_port())
    with ray_head("--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                  "--include-dashboard=false", env=LOOPBACK_ENV) as start:
        assert start.returncode == 0, start.stderr
        out = tmp_path / "cluster"
        r = xrp("simulate", "quick-lattice", "-n", "6", "--shard-size", "3", "--out", str(out),
                "--address", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(ShotDataset(out)) == 6


def test_show_writes_a_png(dataset: Path, tmp_path: Path) -> None:
    png = tmp_path / "shot.png"
    r = xrp("show", str(dataset), "--index", "2", "--out", str(png))
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 20_000 and png.read_bytes()[:4] == b"\x89PNG"
    r = xrp("show", str(dataset), "--index", "99")
    assert r.returncode == 2 and "out of range" in r.stderr


@pytest.mark.skipif(not REF.is_dir(), reason="shared reference data not present")
def test_show_reads_a_detector_file(tmp_path: Path) -> None:
    png = tmp_path / "ref.png"
    r = xrp("show", str(REF / "ref_000.cbf"), "--out", str(png), "--size", "256")
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 20_000
