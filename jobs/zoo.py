r"""The zoo's production recipe for one task (xray_platform/zoo/recipes.py), end to end and
resumable: simulate the training, validation and evaluation sets (complete shards are kept),
train (continuing from the last checkpoint if there is one), evaluate on the held-out sets and,
with --export VERSION, put the model into the package's zoo with its card.

    python jobs/zoo.py resolution --data data --runs runs           # on this machine
    python jobs/zoo.py lattice --export 2026.12
    ray job submit --runtime-env jobs/runtime_env.yaml -- python jobs/zoo.py resolution \
        --data /shared/data --runs /shared/runs --address auto   # on a cluster

Interrupt it at any point and run the same command again: it continues where it stopped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def xrp(*args: str) -> None:
    print(f"[xrp zoo] xrp {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "xray_platform.cli", *args], check=True, cwd=ROOT)


def local_cores() -> int:
    """The cores this process may use: a local run's one worker should train on all of them
    (xrp train's default of 1 CPU per worker is 1 torch thread: the lattice recipe trained at
    6.3 img/s on 2 cores with it, 24-26 img/s with both, history.csv's epoch averages)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_inputs(run: Path, r, stage: int) -> None:
    """Refuse to reuse a run whose model reads other inputs than the recipe's stage (a run of
    an earlier recipe under the same name would otherwise be continued or shipped)."""
    from xray_platform.core.models import model_metadata
    from xray_platform.core.preprocess import Preprocessing

    if not (run / "model.pt").is_file():
        return
    prep = Preprocessing.from_dict(model_metadata(run / "model.pt")["preprocessing"])
    want = r.preprocessing(stage)
    if (prep.grid, prep.options) != (want.grid, want.options):
        sys.exit(f"{run} was trained on other inputs ({prep}) than the recipe's stage {stage} "
                 f"(grid {want.grid_size}² to {want.d_min_A} Å, {want.options}): move it "
                 "away and run again")


def main() -> None:
    from xray_platform.zoo.recipes import RECIPES

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=sorted(RECIPES))
    ap.add_argument("--data", default="data", help="folder of the data sets")
    ap.add_argument("--runs", default="runs", help="folder of the training run")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    ap.add_argument("--mlflow-uri", default=None)
    ap.add_argument("--cpus-per-worker", type=float, default=None,
                    help="CPUs (torch threads) of the training worker (default: every core of "
                         "this machine for a local run, 1 on a cluster)")
    ap.add_argument("--export", metavar="VERSION", default=None,
                    help="put the trained model into xray_platform/zoo as VERSION")
    a = ap.parse_args()
    r = RECIPES[a.task]
    data, runs = str(Path(a.data).resolve()), str(Path(a.runs).resolve())
    cluster = ["--address", a.address] if a.address else []
    tracking = ["--mlflow-uri", a.mlflow_uri] if a.mlflow_uri else []
    for cmd in r.simulate_commands(data):
        xrp(*cmd, *cluster)
    cpus = a.cpus_per_worker or (1 if a.address else local_cores())
    for stage, name in enumerate(r.run_names(), start=1):
        run = Path(runs) / name
        check_inputs(run, r, stage)
        if not (run / "summary.json").exists():  # written when the run has finished
            resume = ["--resume"] if list(run.glob("**/train_state.pt")) else []
            xrp(*r.train_command(data, runs, stage), "--cpus-per-worker", f"{cpus:g}",
                *resume, *cluster, *tracking)
    model = Path(runs) / name / "model.pt"  # the last stage's
    if r.calibrate:  # temperature-scale P(multi) on the validation shots (core/calibration.py)
        cal = model.with_name("model-calibrated.pt")
        if not cal.exists():
            xrp(*r.calibrate_command(data, str(model), str(cal)))
        model = cal
    reports = []
    for preset, _ in r.evaluations:
        out = Path(runs) / name / f"eval-{preset}"
        xrp("evaluate", str(model), "--data", f"{data}/{preset}-test", "--out", str(out),
            *tracking)
        reports.append(out / "report.md")
    if a.export:
        from xray_platform.zoo.export import export

        print(export(a.task, model, a.export, reports))


if __name__ == "__main__":
    main()
