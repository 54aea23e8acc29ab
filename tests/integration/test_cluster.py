"""What clusters do, on one machine: two Ray nodes sharing work (simulating an HDF5 data set,
then training on it with its d_B label), a lattice training worker killed mid-run (a Serve
replica killed under load: test_serve.py). Every test stops what it started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import LOOPBACK_ENV as LOOPBACK
from helpers import RAY, descendants, free_port, processes, ray_head, xrp

from xray_platform.core.forward import predict
from xray_platform.core.models import load_model
from xray_platform.core.training import val_seed
from xray_platform.orchestration.data import SimulateShots
from xray_platform.physics.presets import preset


def _processes(pattern: str) -> list[tuple[int, int]]:
    """(pid, RSS kB) of processes whose command line matches ``pattern``."""
    return [(pid, rss) for pid, _, rss, _ in processes(pattern)]


def test_simulate_and_train_use_both_nodes_of_a_two_node_cluster(tmp_path: Path) -> None:
    """A head and a second node (`ray start --address`), each with its own CPUs: shards of
    `xrp simulate` and the two DDP workers of `xrp train` land on both."""
    # Ray refuses a second node while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the loopback-only
    # mode of one-node runs): this cluster runs on the machine's own address, as a real one
    env = {k: v for k, v in LOOPBACK.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_AUTH_MODE"] = "token"  # the head turns token auth on; joining nodes need it too
    with ray_head(f"--port={free_port()}", "--num-cpus=3", f"--dashboard-port={free_port()}",
                  env=env) as head:
        assert head.returncode == 0, head.stdout + head.stderr
        addr = re.search(r"--address='([\d.]+:\d+)'", head.stdout).group(1)
        node2 = subprocess.run([RAY, "start", f"--address={addr}", "--num-cpus=3",
                                f"--temp-dir={head.temp_dir}", "--disable-usage-stats",
                                f"--dashboard-agent-listen-port={free_port()}"],
                               env=env, capture_output=True, text=True, timeout=180)
        assert node2.returncode == 0, node2.stdout + node2.stderr
        r = xrp("simulate", "quick-resolution", "-n", "40", "--shard-size", "4", "--out",
                str(tmp_path / "data"), "--address", addr, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "2 node(s) wrote shards" in r.stdout, r.stdout
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        # 2 CPUs per worker: one worker per 3-CPU node, the third CPU reads its data; trained
        # on the HDF5 data set just written, with its d_B label
        r = xrp("train", "resolution", "--data", str(tmp_path / "data"), "--label", "d_B",
                "--workers", "2", "--cpus-per-worker", "2", "--epochs", "1", "--batch-size",
                "8", "--name", "two", "--out", str(tmp_path / "runs"), "--mlflow-uri", uri,
                "--address", addr, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        summary = json.loads((tmp_path / "runs" / "two" / "summary.json").read_text())
        run = mlflow.MlflowClient(uri).get_run(summary["run_id"])
        assert run.data.metrics["train_nodes"] == 2
        _, meta = load_model(summary["model"])
        assert meta["label"] == "d_B" and meta["training_data"]["source"] == "HDF5 shot data set"
        assert meta["training_data"]["val_indices"] == [36, 40]


def test_a_training_worker_killed_mid_run_restores_from_its_checkpoint(tmp_path: Path) -> None:
    """kill -9 of a DDP worker after the first checkpoint: FailureConfig restarts the worker
    group from the last checkpoint and the run finishes with every epoch logged once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "xray_platform.cli", "train", "lattice", "--data",
           "quick-lattice", "--workers", "2", "--cpus-per-worker", "0.5", "--epochs", "3",
           "--shots-per-epoch", "32", "--val-shots", "16", "--batch-size", "8", "--name", "ft",
           "--out", str(tmp_path / "runs"), "--mlflow-uri", uri]
    # this run's workers: descendants of its driver (its local Ray), not those of another
    # run on the machine (the suite runs test files in parallel)
    # verbose: the test reads Ray Train's own lines (checkpoint reported, failure policy)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**LOOPBACK, "XRP_VERBOSE": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    t0 = time.time()
    killed = None
    try:
        while killed is None and proc.poll() is None and time.time() - t0 < 600:
            if any("Reporting training result 1:" in ln for ln in lines):  # checkpoint 1 saved
                time.sleep(2)  # and registered by the controller
                mine = descendants({proc.pid})
                workers = [p for p, _ in _processes(r"ray::RayTrainWorker") if p in mine]
                if len(workers) == 2:
                    killed = workers[-1]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.5)
        assert killed is not None, "no worker to kill:\n" + "".join(lines)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join()
    out = "".join(lines)
    print(f"worker killed at {killed}; run finished {time.time() - t0:.0f} s after it started")
    assert proc.returncode == 0, out[-5000:]
    assert "[FailurePolicy] RETRY" in out, out[-5000:]  # the kill was seen, and survived
    assert "resumed from the checkpoint of epoch" in out, out[-5000:]
    summary = json.loads((tmp_path / "runs" / "ft" / "summary.json").read_text())
    hist = mlflow.MlflowClient(uri).get_metric_history(summary["run_id"], "val_accuracy")
    steps = sorted(h.step for h in hist)
    assert set(steps) == {1, 2, 3}  # no lost epoch
    assert steps.count(1) == 1  # restored from the checkpoint of epoch 1, not from scratch
    # the lattice model it wrote: its recorded accuracy is the model's own on the run's fixed
    # validation shots (val_seed), whatever the restarts
    model, meta = load_model(summary["model"])
    assert meta["task"] == "lattice" and meta["label"] == "is_multi"
    rows = SimulateShots(preset("quick-lattice"), "lattice", None, val_seed(0),
                         fresh=False)({"id": np.arange(16)})
    p = predict(model, rows["x"])["p_multi"]
    assert meta["metrics"]["val_accuracy"] == pytest.approx(
        float(np.mean((p >= 0.5) == (rows["y"] > 0.5))), abs=1e-6)
