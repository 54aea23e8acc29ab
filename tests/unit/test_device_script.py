"""benchmarks/device.sh, the one device-tool call that measures xrp on a GPU and trains a zoo
lattice model: a tiny CPU dry run of the script itself where Ray, MLflow, fabio and hdf5plugin
cannot be imported (as on the GPU machine), its report surviving a failed step, and the
training budget that a deadline shortens (jobs/zoo_gpu.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "jobs"))

from device_figures import FRAMES, Report  # noqa: E402
from zoo_gpu import FINISH_S, MIN_TRAIN_S, train_minutes  # noqa: E402

ABSENT = ("ray", "mlflow", "fabio", "hdf5plugin")  # not on the GPU machine
MAX_FILES, MAX_BYTES = 8, 16 * 2**20  # what the device tool returns


def figure_names() -> list[str]:
    sim = ["simulate.fast_path_shots_per_s", "simulate.fast_path_median_ms",
           *(f"simulate.full_frame_{d}_shots_per_s" for d in FRAMES)]
    answer = [f"answer.{d}.{k}" for d in FRAMES for k in (
        "frames_per_s", "p50_ms", "p99_ms", "first_frame_ms", "peak_memory_mib",
        "grid_on_device_ms")]
    train = ["train.minutes", "train.wall_s", "train.images", "train.img_per_s",
             "train.shots_simulated", "train.best_val_accuracy", "train.best_val_roc_auc"]
    return sim + answer + train


def without_gpu_machine_packages(tmp_path: Path) -> dict[str, str]:
    """An environment whose Pythons (spawned workers too) cannot import ABSENT."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ABSENT))
    return {**os.environ, "PYTHONPATH": str(site), "PYTHON": sys.executable}


@pytest.mark.slow
def test_the_tiny_cpu_dry_run_returns_every_figure_and_a_loadable_model(tmp_path: Path) -> None:
    env = without_gpu_machine_packages(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import fabio"], env=env, capture_output=True)
    assert probe.returncode != 0  # the poison works
    out = tmp_path / "out"
    env.update(OUT=str(out), XRP_DEVICE="cpu", XRP_DEVICE_TINY="1",
               XRP_DEVICE_TRAIN_MINUTES="0.1")
    t0 = time.monotonic()
    r = subprocess.run(["bash", "benchmarks/device.sh"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=400)
    logs = {p.name: p.read_text()[-1500:] for p in out.glob("*.log")}
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:], logs)
    report = json.loads((out / "device.json").read_text())
    assert report["failed"] == {} and report["skipped"] == {}, (report, logs)
    assert report["device"] and report["torch"] and report["tiny"] is True
    for name in figure_names():
        fig = report["figures"][name]
        assert fig["unit"] and (fig["value"] >= 0 if fig["unit"] == "fraction" else
                                fig["value"] > 0), (name, fig)
    files = list(out.iterdir())
    assert len(files) <= MAX_FILES and all(p.stat().st_size <= MAX_BYTES for p in files), files
    assert not (out / "model.pt").exists()
    parts = sorted(out.glob("model.pt.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    joined = tmp_path / "model.pt"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    from xray_platform.core.models import load_model

    model, meta = load_model(joined)
    assert model.task == "lattice" and meta["calibration"]["temperature"] > 0
    print(f"dry run {time.monotonic() - t0:.0f} s: {report['figures']}")


def test_a_failed_step_keeps_the_other_figures(tmp_path: Path) -> None:
    r = Report(tmp_path / "device.json", time.time() + 60)
    r.step("good", lambda: r.figure("good.x", 1.5, "s"), 0.0)

    def broken() -> None:
        raise RuntimeError("no CUDA")

    r.step("bad", broken, 0.0)
    r.step("late", lambda: r.figure("late.x", 1.0, "s"), 600.0)
    saved = json.loads((tmp_path / "device.json").read_text())
    assert saved["figures"] == {"good.x": {"value": 1.5, "unit": "s"}}
    assert saved["failed"] == {"bad": "RuntimeError: no CUDA"}
    assert "deadline" in saved["skipped"]["late"]
    again = Report(tmp_path / "device.json", time.time() + 60)  # a later call adds to it
    again.step("more", lambda: again.figure("more.x", 2.0, "s"), 0.0)
    assert set(json.loads((tmp_path / "device.json").read_text())["figures"]) == {
        "good.x", "more.x"}


def test_a_deadline_shortens_the_training_but_leaves_some() -> None:
    assert train_minutes(5.0, None, 0.0) == 5.0
    assert train_minutes(5.0, 1000.0 + FINISH_S + 600, 1000.0) == 5.0
    assert train_minutes(5.0, 1000.0 + FINISH_S + 120, 1000.0) == pytest.approx(2.0)
    assert train_minutes(5.0, 900.0, 1000.0) == MIN_TRAIN_S / 60


def test_the_answer_path_imports_without_the_gpu_machines_missing_packages(tmp_path: Path
                                                                         ) -> None:
    import numpy as np

    from xray_platform.io.cbf import write_cbf

    cbf = tmp_path / "f.cbf"  # written here, with fabio
    write_cbf(cbf, np.zeros((256, 256), np.int32), wavelength_A=1.0, distance_mm=200.0,
              pixel_size_mm=0.172, beam_center_px=(128.0, 128.0))
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ABSENT) +
            "import xray_platform.core.answer, xray_platform.io.formats, xray_platform.io.shots\n"
            "from xray_platform.io.formats import read_frame\n"
            "try:\n    read_frame(sys.argv[1])\nexcept ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(cbf)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "needs the fabio package" in r.stdout, r.stdout  # a clear error, where it is needed
