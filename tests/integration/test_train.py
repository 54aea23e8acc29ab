"""Training as a user runs it: `xrp train` with 2 Ray Train workers on fresh simulated shots,
MLflow tracking, resume, `xrp evaluate`, and model behaviour."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import helpers  # noqa: I001
import numpy as np
import pytest
import torch

from xray_platform.core.forward import predict
from xray_platform.core.models import load_model, model_metadata
from xray_platform.core.preprocess import Preprocessing, normalise
from xray_platform.core.training import val_seed
from xray_platform.io.provenance import preset_data, stored_data
from xray_platform.physics.presets import preset
from xray_platform.physics.sampling import sample_params, shot_seed
from xray_platform.physics.simulate import simulate

EPOCHS = 8  # 5 reached r 0.67 but once not the mean predictor's MAE (0.761 vs 0.759)
TRAIN = ["resolution", "--data", "quick-resolution", "--workers", "2", "--batch-size", "8",
         "--shots-per-epoch", "256", "--val-shots", "128", "--name", "res"]


def xrp(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return helpers.xrp(*args, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run of EPOCHS - 1 epochs, then resumed with --epochs EPOCHS (as a user continues a
    run that was stopped or asked for too few epochs); the resumed run's output in resume.log."""
    d = tmp_path_factory.mktemp("train")
    r = xrp(d, "train", *TRAIN, "--epochs", str(EPOCHS - 1))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "xrp train: summary" in r.stdout
    first_run_id = (d / "runs" / "res" / "mlflow_run_id").read_text()
    r = xrp(d, "train", *TRAIN, "--epochs", str(EPOCHS), "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "xrp train: summary" in r.stdout
    assert (d / "runs" / "res" / "mlflow_run_id").read_text() == first_run_id
    (d / "resume.log").write_text(r.stdout + r.stderr)
    return d


def test_training_beats_the_mean_predictor_on_held_out_shots(run: Path) -> None:
    summary = json.loads((run / "runs" / "res" / "summary.json").read_text())
    model, meta = load_model(summary["model"])
    assert meta["task"] == "resolution" and meta["depth"] == 18 and meta["label"] == "d_vis"
    assert meta["preprocessing"]["grid_size"] == 64
    assert meta["training_data"]["preset"] == "quick-resolution"
    m = meta["metrics"]  # of the best epoch, on the fixed validation shots (never trained on)
    print("validation metrics of the best epoch:", m)
    assert m["val_mae_A"] < m["val_baseline_mae_A"]
    assert m["val_pearson_r"] > 0.3
    history = (run / "runs" / "res" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + EPOCHS  # header + a row per epoch (EPOCHS - 1, then 1 resumed)


def test_the_model_file_records_commit_data_seeds_and_hyperparameters(run: Path) -> None:
    """The module's run (resumed to EPOCHS epochs): its model file says which code trained it
    on which shots with which settings (io/provenance.py)."""
    p = model_metadata(run / "runs" / "res" / "model.pt")["provenance"]
    commit = p["code"]["commit"]  # the checkout the tests run from, or unknown outside one
    assert re.fullmatch(r"[0-9a-f]{40}", commit) or (commit, p["code"]["dirty"]) == (
        "unknown", None)
    want = preset_data(preset("quick-resolution"), 0, shots_per_epoch=256, val_shots=128)
    assert p["data"] == want and p["data"]["version"] == "current"
    assert p["seeds"] == {"seed": 0, "val_seed": val_seed(0)}
    h = p["hyperparameters"]
    assert (h["epochs"], h["batch_size"], h["lr"], h["weight_decay"]) == (EPOCHS, 8, 1e-3, 1e-4)
    assert (h["depth"], h["init"], h["workers"], h["label"]) == (18, "scratch", 2, "d_vis")
    assert not {"out", "name", "mlflow_uri", "resume"} & set(h)


def test_mlflow_tracks_the_run(run: Path) -> None:
    import mlflow

    summary = json.loads((run / "runs" / "res" / "summary.json").read_text())
    client = mlflow.MlflowClient(summary["tracking_uri"])
    r = client.get_run(summary["run_id"])
    assert r.info.status == "FINISHED"
    assert r.data.params["depth"] == "18" and r.data.params["task"] == "resolution"
    hist = client.get_metric_history(summary["run_id"], "val_mae_A")
    assert sorted(h.step for h in hist) == list(range(1, EPOCHS + 1))
    arts = [a.path for a in client.list_artifacts(summary["run_id"])]
    assert "model" in arts and "history.csv" in arts
    assert [a.path for a in client.list_artifacts(summary["run_id"], "model")] == ["model/model.pt"]
    plots = [a.path for a in client.list_artifacts(summary["run_id"], "validation")]
    for f in ("pred_vs_true.png", "calibration.png", "history.png", "report.md"):
        assert f"validation/{f}" in plots


def test_a_larger_b_never_gets_a_finer_prediction_on_average(run: Path) -> None:
    model, meta = load_model(run / "runs" / "res" / "model.pt")
    prep = Preprocessing.from_dict(meta["preprocessing"])
    p = preset("quick-resolution")
    fine, coarse = [], []
    for i in range(16):
        base = replace(sample_params(shot_seed(777, i), p.sim.with_(n_lattices={1: 1.0})),
                       spot_scale=3000.0)
        for d_B, out in ((1.8, fine), (4.0, coarse)):
            out.append(simulate(replace(base, d_B=d_B), p.grid).inputs)
    torch.manual_seed(0)
    d_fine = predict(model, normalise(np.stack(fine), prep))["d_A"]
    d_coarse = predict(model, normalise(np.stack(coarse), prep))["d_A"]
    assert d_coarse.mean() > d_fine.mean()


def test_resume_continues_from_the_last_checkpoint(run: Path) -> None:
    assert f"resumed from the checkpoint of epoch {EPOCHS - 1}" in (run / "resume.log").read_text()
    history = (run / "runs" / "res" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + EPOCHS  # the same run, one epoch more, none trained twice
    assert [int(h.split(",")[0]) for h in history[1:]] == list(range(1, EPOCHS + 1))


def test_lattice_on_a_data_set_judged_on_hits_and_resume_after_its_last_epoch(
        tmp_path: Path) -> None:
    """The zoo's lattice recipe in small (an HDF5 data set, label is_multi_hits): the final
    validation report is written, and --resume of a run whose epochs are all done (killed
    after the last epoch, before the report) finishes it without training again."""
    data = tmp_path / "shots"
    r = xrp(tmp_path, "simulate", "quick-lattice", "-n", "24", "--shard-size", "12",
            "--out", str(data), "--num-cpus", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    args = ["train", "lattice", "--data", str(data), "--label", "is_multi_hits", "--epochs",
            "1", "--batch-size", "4", "--name", "lat"]
    r = xrp(tmp_path, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "runs" / "lat"
    report = json.loads((run / "validation" / "report.json").read_text())
    assert report["lattice"]["n"] > 0
    made = model_metadata(run / "model.pt")["provenance"]  # a stored data set's fingerprint
    assert made["data"] == stored_data(data) and made["seeds"] == {"seed": 0}
    assert made["data"]["simulated"]["preset"] == "quick-lattice"
    assert made["hyperparameters"]["label"] == "is_multi_hits"
    (run / "summary.json").unlink()  # as if killed before the summary
    first = (run / "model.pt").read_bytes()
    r = xrp(tmp_path, *args, "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed from the checkpoint of epoch 1" in r.stdout + r.stderr
    assert (run / "summary.json").is_file() and (run / "model.pt").read_bytes() == first
    assert len((run / "history.csv").read_text().splitlines()) == 2  # no epoch trained again


def test_evaluate_writes_the_report_and_user_set_figures(run: Path) -> None:
    out = run / "eval"
    r = xrp(run, "evaluate", "runs/res/model.pt", "--data", "quick-user-sets", "-n", "6",
            "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["resolution"]["n"] > 0 and rep["user_sets"]["n_sets"] == 4
    for png in ("pred_vs_true.png", "calibration.png", "user_sets.png"):
        assert (out / png).stat().st_size > 5000
    assert "user sets" in (out / "report.md").read_text().lower()
    r = xrp(run, "evaluate", "runs/res/model.pt", "--data", "no-such-thing")
    assert r.returncode == 2 and "neither a preset nor an existing data set" in r.stderr


def test_train_rejects_bad_options(tmp_path: Path) -> None:
    r = helpers.xrp_here("train", "colour", "--data", "quick-lattice")
    assert r.returncode == 2 and "unknown task" in r.stderr
    r = helpers.xrp_here("train", "lattice", "--depth", "19")
    assert r.returncode == 2 and "--depth must be one of" in r.stderr
    r = helpers.xrp_here("train", "lattice", "--init", "imagenet")
    assert r.returncode == 2 and "--imagenet-weights" in r.stderr
    r = helpers.xrp_here("train", "resolution", "--label", "is_multi")
    assert r.returncode == 2 and "not a resolution label" in r.stderr
    r = helpers.xrp_here("train", "lattice", "--data", "nope")
    assert r.returncode == 2 and "neither a preset" in r.stderr
