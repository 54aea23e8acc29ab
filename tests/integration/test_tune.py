"""`xrp tune`, the model registry and `xrp models` as a user runs them (real Ray Tune + Train,
real MLflow sqlite store), an interrupted search resumed, and a tune job submitted to a local
cluster with `ray job submit`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers import (  # noqa: E402
    LOOPBACK_ENV,
    RAY,
    ROOT,
    free_port,
    ray_head,
    sigint_default,
    xrp_here,
)

from xray_platform.core.models import build_model, load_model, save_model
from xray_platform.core.preprocess import Preprocessing
from xray_platform.core.training import score_model, val_seed
from xray_platform.orchestration.data import SimulateShots
from xray_platform.physics.presets import preset
from xray_platform.tracking.champion import Incumbent
from xray_platform.tracking.champion import decide as _decide
from xray_platform.tracking.registry import CHAMPION, champion, download, get_version, register
from xray_platform.zoo import zoo_model

# a search small enough for 2 CPU cores: 2 epochs of 32 fresh 64^2 shots per trial
TINY = ["--samples", "1", "--epochs", "2", "--shots-per-epoch", "32", "--val-shots", "32",
        "--batch-sizes", "8", "--lr-range", "5e-4,1e-3"]


def xrp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "xray_platform.cli", *args]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tune")
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", "out": root / "runs"}


@pytest.fixture(scope="module")
def search(store) -> dict:
    """A 2-trial search, interrupted (Ctrl-C) after its first trial and resumed."""
    args = ["tune", "resolution", "--depths", "18,34", "--max-concurrent", "1", *TINY,
            "--name", "s1", "--out", str(store["out"]), "--mlflow-uri", store["uri"]]
    proc = subprocess.Popen(xrp_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=store["root"], preexec_fn=sigint_default)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    t0 = time.time()
    while not any("trial 1/2 done" in ln for ln in lines) and proc.poll() is None:
        assert time.time() - t0 < 600, "".join(lines)
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be interrupted:\n" + \
        "".join(lines)
    first = next(ln for ln in lines if "trial 1/2 done" in ln).split("[")[-1].split("]")[0]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    reader.join()
    out1 = "".join(lines)
    assert proc.returncode == 2 and "--resume" in out1, out1

    r = subprocess.run(xrp_cmd(*args, "--resume"), capture_output=True, text=True,
                       cwd=store["root"], timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((store["out"] / "s1" / "summary.json").read_text())
    zoo = zoo_model("resolution")
    if zoo is not None:  # a 2-epoch toy must not displace the shipped model; a user promotes it
        assert not summary["promoted"] and zoo.name in summary["decision"], summary["decision"]
        p = subprocess.run(xrp_cmd("models", "promote", "resolution/1", "--mlflow-uri",
                                   store["uri"]), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
    return {"first_trial": first, "resume_stdout": r.stdout, "summary": summary, **store}


def test_resume_continues_without_redoing_finished_trials(search) -> None:
    s = search["summary"]
    assert s["n_trials"] == 2
    assert f"[{search['first_trial']}]" not in search["resume_stdout"]  # not run again
    client = mlflow.MlflowClient(search["uri"])
    kids = client.search_runs([client.get_run(s["parent_run_id"]).info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = "
                                            f"'{s['parent_run_id']}'")
    assert len(kids) == 2  # the resumed trial kept its child run
    for k in kids:
        steps = [m.step for m in client.get_metric_history(k.info.run_id, "val_mae_A")]
        assert sorted(set(steps)) == list(range(1, max(steps) + 1))


def test_every_trial_is_a_tracked_child_run(search) -> None:
    s = search["summary"]
    client = mlflow.MlflowClient(search["uri"])
    parent = client.get_run(s["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["xrp.registered"] == "xrp-resolution v1"
    arts = {a.path for a in client.list_artifacts(s["parent_run_id"])}
    assert {"trials.csv", "trials.md", "trials.png", "model"} <= arts
    kids = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = "
                                            f"'{s['parent_run_id']}'")
    assert sorted(k.data.params["depth"] for k in kids) == ["18", "34"]
    for k in kids:
        assert k.info.status in ("FINISHED", "KILLED")
        assert {"lr", "batch_size", "init", "epochs"} <= set(k.data.params)
        assert [a.path for a in client.list_artifacts(k.info.run_id, "model")] == \
            ["model/model.pt"]
    rows = (search["out"] / "s1" / "report" / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trial_id,depth,init,lr")


def test_the_champion_is_the_best_trial_and_scores_the_same_on_the_same_shots(search) -> None:
    s = search["summary"]
    client = mlflow.MlflowClient(search["uri"])
    mv = champion(client, "resolution")
    assert mv is not None and int(mv.version) == 1
    assert s["promoted"] == (zoo_model("resolution") is None)
    assert mv.source == f"runs:/{s['parent_run_id']}/model"
    best = max(s["trials"], key=lambda t: t.get("val_score", -np.inf))
    assert str(best["depth"]) == mv.tags["xrp.depth"]
    # the validation shots, regenerated from their seeds without Ray
    rows = SimulateShots(preset("quick-resolution"), "resolution", None, val_seed(0),
                         fresh=False)({"id": np.arange(32)})
    m = score_model(download(client, mv, search["root"] / "dl"), rows)
    assert m["val_mae_A"] == pytest.approx(s["candidate_metrics"]["val_mae_A"], rel=1e-4)
    assert m["val_mae_A"] == pytest.approx(best["val_mae_A"], rel=1e-3)


def test_models_cli_lists_shows_and_promotes(search) -> None:
    uri = ["--mlflow-uri", search["uri"]]
    r = subprocess.run(xrp_cmd("models", "list", *uri), capture_output=True, text=True)
    assert r.returncode == 0 and "xrp-resolution" in r.stdout and "champion" in r.stdout, \
        r.stdout + r.stderr
    r = subprocess.run(xrp_cmd("models", "show", "resolution", *uri), capture_output=True,
                       text=True)
    assert r.returncode == 0 and "ResNet-" in r.stdout and "grid=64" in r.stdout, r.stderr
    r = subprocess.run(xrp_cmd("models", "promote", "resolution/9", *uri), capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no version 9" in r.stderr
    r = subprocess.run(xrp_cmd("models", "promote", "resolution", *uri), capture_output=True,
                       text=True)
    assert r.returncode == 2 and "explicit version" in r.stderr


def test_champion_moves_only_to_a_better_model(tmp_path: Path) -> None:
    """Two models scored on the same shots: whichever is champion, only the better one may take
    the alias from the other; --force overrides; an incomparable champion is kept."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    rows = SimulateShots(preset("quick-resolution"), "resolution", None, 5, fresh=False)(
        {"id": np.arange(24)})
    meta = {"task": "resolution", "depth": 18, "init": "scratch", "label": "d_vis",
            "preprocessing": Preprocessing(64).to_dict()}
    versions, scores = [], []
    for i in range(2):
        torch.manual_seed(i)
        path = tmp_path / f"m{i}" / "model.pt"
        path.parent.mkdir()
        save_model(path, build_model("resolution", 18), meta)
        run = client.create_run(exp).info.run_id
        client.log_artifact(run, str(path), artifact_path="model")
        versions.append(register(client, "resolution", run, tags={}))
        scores.append(score_model(path, rows))
    assert scores[0]["val_score"] != scores[1]["val_score"]
    decisions = []
    for cand, champ in ((0, 1), (1, 0)):
        inc = Incumbent(download(client, versions[champ], tmp_path / f"d{champ}"),
                        f"champion v{versions[champ].version}")
        ok, why, champ_m = _decide("resolution", scores[cand], inc, rows, None, False)
        assert champ_m["val_score"] == pytest.approx(scores[champ]["val_score"])
        decisions.append(ok)
        assert ok == (scores[cand]["val_score"] > scores[champ]["val_score"]), why
        assert _decide("resolution", scores[cand], inc, rows, None, True)[0]
    assert sorted(decisions) == [False, True]
    assert _decide("resolution", scores[0], None, rows, None, False)[:2] == (True,
                                                                               "no champion yet")
    # an incumbent reading another input grid is scored on the same shots on its grid, when
    # they can be put there; otherwise it is kept
    torch.manual_seed(5)
    small = save_model(tmp_path / "m32.pt", build_model("resolution", 18),
                       {**meta, "preprocessing": Preprocessing(32).to_dict()})
    inc = Incumbent(small, "zoo test")
    rows32 = SimulateShots(preset("quick-resolution").with_grid(Preprocessing(32).grid),
                           "resolution", None, 5, fresh=False)({"id": np.arange(24)})
    ok, why, champ_m = _decide("resolution", scores[0], inc, rows, lambda prep: rows32, False)
    assert champ_m["val_score"] == pytest.approx(score_model(small, rows32)["val_score"])
    assert ("better" in why) and "zoo test" in why
    ok, why, _ = _decide("resolution", scores[0], inc, rows, None, False)
    assert not ok and "--force" in why
    client.set_registered_model_alias("xrp-resolution", CHAMPION, versions[1].version)
    assert get_version(client, "resolution").version == versions[1].version
    assert load_model(download(client, get_version(client, "xrp-resolution/1"),
                               tmp_path / "dl"))[1]["depth"] == 18


def test_bad_search_options_get_clear_errors(tmp_path: Path) -> None:
    for args, msg in ((["--depths", "19"], "depths must be among"),
                      (["--inits", "imagenet"], "needs --imagenet-weights"),
                      (["--lr-range", "1e-3"], "LOW,HIGH"),
                      (["--preset", "huge"], "--preset must be one of"),
                      (["--resume", "--name", "nothing-here"], "no search to continue")):
        r = xrp_here("tune", "resolution", *args, "--out", str(tmp_path), "--mlflow-uri",
                     f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stdout, r.stderr)


def test_tune_job_on_a_cluster_registers_a_champion(search) -> None:
    """`ray start --head` on loopback, `ray job submit` the lattice tune job (with a resolution
    champion in the store, so transfer init joins the search), SUCCEEDED, champion found."""
    # as with an activated venv: the job's `python` is the one the cluster runs on
    env = {**LOOPBACK_ENV, "RAY_AUTH_MODE": "token"}
    dash = free_port()
    with ray_head("--node-ip-address=127.0.0.1", f"--port={free_port()}",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=4",
                  env=env) as start:
        assert start.returncode == 0, start.stdout + start.stderr
        submit = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                  "--runtime-env", "jobs/runtime_env.yaml", "--", "python", "jobs/tune_lattice.py",
                  "--depths", "18", *TINY, "--epochs", "1", "--name", "job", "--out",
                  str(search["out"]), "--mlflow-uri", search["uri"]]
        for _ in range(30):  # the head's job agent comes up a little after `ray start`
            job = subprocess.run(submit, env=env, cwd=ROOT, capture_output=True, text=True,
                                 timeout=900)
            if "No available agent" not in job.stdout + job.stderr:
                break
            time.sleep(5)
        assert job.returncode == 0 and "succeeded" in job.stdout.lower(), \
            job.stdout[-5000:] + job.stderr[-3000:]
        job_id = next(w.strip("'") for w in job.stdout.split() if w.strip("'").startswith(
            "raysubmit_"))
        status = subprocess.run([RAY, "job", "status", "--address",
                                 f"http://127.0.0.1:{dash}", job_id], env=env,
                                capture_output=True, text=True, timeout=120)
        assert "succeeded" in status.stdout.lower(), status.stdout + status.stderr
        client = mlflow.MlflowClient(search["uri"])
        summary = json.loads((search["out"] / "job" / "summary.json").read_text())
        zoo = zoo_model("lattice")
        if zoo is not None and not summary["promoted"]:  # the shipped model stayed: why
            assert zoo.name in summary["decision"], summary["decision"]
            assert champion(client, "lattice") is None
            p = subprocess.run(xrp_cmd("models", "promote", "lattice/1", "--mlflow-uri",
                                       search["uri"]), capture_output=True, text=True,
                               timeout=300)
            assert p.returncode == 0, p.stdout + p.stderr
        mv = champion(client, "lattice")
        assert mv is not None and mv.tags["xrp.data"] == "quick-lattice"
        assert sorted(summary["inits"]) == ["scratch", "transfer"]
        assert {t["init"] for t in summary["trials"]} == {"scratch", "transfer"}
