"""jobs/zoo_gpu.py, the time-boxed zoo recipe for a GPU machine without Ray or MLflow: its CPU
path end to end (tiny), and its learning-rate schedule over the time budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))

from zoo_gpu import PART_BYTES, lr_at  # noqa: E402


def test_the_rate_warms_up_then_anneals_to_zero_at_the_budget() -> None:
    assert lr_at(0.0, 100.0) == pytest.approx(1 / 3000)  # 3 % of the budget warms up
    assert lr_at(3.0, 100.0) == pytest.approx(1.0, abs=1e-6)
    rates = [lr_at(t, 100.0) for t in range(3, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert lr_at(100.0, 100.0) == pytest.approx(0.0) == lr_at(250.0, 100.0)


def test_a_tiny_run_without_ray_or_mlflow_writes_a_calibrated_usable_model(tmp_path: Path
                                                                          ) -> None:
    out = tmp_path / "out"
    argv = ["jobs/zoo_gpu.py", "lattice", "--out", str(out), "--minutes", "0.1", "--device",
            "cpu", "--workers", "1", "--n-val", "8", "--chunk", "4", "--min-start", "2",
            "--val-every-s", "3", "--batch-size", "4"]
    code = ("import runpy, sys\n"
            "sys.modules['ray'] = sys.modules['mlflow'] = None  # importing either fails\n"
            f"sys.argv = {argv!r}\n"
            "runpy.run_path('jobs/zoo_gpu.py', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    from xray_platform.core.models import load_model

    model, meta = load_model(out / "model.pt")
    assert model.task == "lattice" and meta["preprocessing"]["grid_size"] == 128
    assert meta["calibration"]["temperature"] > 0 and meta["init"] == "transfer"
    prov = meta["provenance"]  # the release's frozen presets, as xrp train records them
    assert prov["data"]["preset"] == "zoo-lattice" and prov["data"]["version"] == "2026.12"
    assert prov["code"]["commit"] and prov["hyperparameters"]["lr"] > 0
    parts = sorted(out.glob("model.pt.part*"))
    assert b"".join(p.read_bytes() for p in parts) == (out / "model.pt").read_bytes()
    assert all(p.stat().st_size <= PART_BYTES for p in parts) and len(parts) >= 2
    history = json.loads((out / "history.json").read_text())
    assert history and history[-1]["images"] > 0 and history[-1]["train_shots"] >= 4, history
    assert 0.0 <= history[-1]["val_accuracy"] <= 1.0
