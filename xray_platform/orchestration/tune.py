"""Ray Tune: a tracked search over ResNet depth x weight initialisation x learning rate x batch
size that ends in a registered champion model.

Each trial is a Tune function trainable that runs one Ray Train TorchTrainer (Train V2: the
trainer lives inside the trial; its per-epoch reports reach Tune through TuneReportCallback) and
logs to an MLflow child run of the search's parent run. ASHA stops weak trials early on the
validation score. Every trial validates on the same fixed shots, so the best trial is compared
with the current champion on exactly those shots before the alias `champion` moves.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from xray_platform import __version__
from xray_platform.core.metrics import headline
from xray_platform.core.models import DEPTHS, INITS
from xray_platform.core.training import score_model, val_seed
from xray_platform.orchestration.train import MODEL_FILE, DataSettings, TrainSettings
from xray_platform.reports.trials import write_trial_table
from xray_platform.tracking.champion import decide
from xray_platform.tracking.runs import ChildRun, Tracker

#: Search presets: `quick` fits a 2-core laptop in about 10 minutes (64^2 inputs), `full` is the
#: GPU-cluster search (512^2 inputs, the poster's data set sizes). Command-line options win.
SEARCH_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"data": {"resolution": "quick-resolution", "lattice": "quick-lattice"},
              "samples": 1, "epochs": 8, "shots_per_epoch": 256, "val_shots": 128,
              "batch_sizes": (8, 16), "lr_range": (2e-4, 1.5e-3), "max_concurrent": 2,
              "grace_epochs": 3},
    "full": {"data": {"resolution": "resmos2", "lattice": "master-baxter"},
             "samples": 4, "epochs": 30, "shots_per_epoch": None, "val_shots": 1000,
             "batch_sizes": (32, 64, 128), "lr_range": (1e-4, 3e-3), "max_concurrent": None,
             "grace_epochs": 5},
}
TRIALS_DIR = "trials"
TUNE_DIR = "tune"  # Tune's experiment folder inside the search folder (what --resume restores)
PARENT_RUN_FILE = "mlflow_parent_run_id"


class SearchInterrupted(RuntimeError):
    """The search stopped before all trials ended (Ctrl-C); --resume continues it."""


@dataclass
class SearchSettings(DataSettings):
    preset: str = "quick"  # data default: the preset's data preset for the task
    samples: int | None = None  # lr/batch draws per depth x init combination
    epochs: int | None = None
    max_concurrent: int | None = None
    depths: tuple[int, ...] = DEPTHS
    inits: tuple[str, ...] | None = None  # default: every init that is available
    lr_range: tuple[float, float] | None = None
    batch_sizes: tuple[int, ...] | None = None
    grace_epochs: int | None = None  # ASHA: epochs every trial gets before it can be stopped
    workers_per_trial: int = 1
    gpus_per_trial: float = 0.0
    out: str = "runs"
    name: str | None = None
    address: str | None = None
    resume: bool = False
    force: bool = False
    extra: dict = field(default_factory=dict)

    def resolved(self) -> SearchSettings:
        """A copy with the preset's values filled in where no option was given, checked."""
        if self.preset not in SEARCH_PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(SEARCH_PRESETS)}, "
                             f"got {self.preset!r}")
        p = SEARCH_PRESETS[self.preset]
        s = SearchSettings(**{**asdict(self)})
        s.data = s.data or p["data"].get(s.task)
        for k in ("samples", "epochs", "max_concurrent", "lr_range", "batch_sizes",
                  "grace_epochs", "shots_per_epoch", "val_shots"):
            if getattr(s, k) is None:
                setattr(s, k, p[k])
        if s.task not in ("resolution", "lattice"):
            raise ValueError(f"task must be resolution or lattice, got {s.task!r}")
        for k in ("samples", "epochs", "workers_per_trial"):
            if getattr(s, k) < 1:
                raise ValueError(f"{k.replace('_', '-')} must be >= 1, got {getattr(s, k)}")
        if s.max_concurrent is not None and s.max_concurrent < 1:
            raise ValueError(f"max-concurrent must be >= 1, got {s.max_concurrent}")
        bad = [d for d in s.depths if d not in DEPTHS]
        if bad or not s.depths:
            raise ValueError(f"depths must be among {DEPTHS}, got {list(s.depths)}")
        if s.inits is not None:
            bad = [i for i in s.inits if i not in INITS]
            if bad or not s.inits:
                raise ValueError(f"inits must be among {INITS}, got {list(s.inits)}")
            if "imagenet" in s.inits and not s.imagenet_weights:
                raise ValueError("init imagenet needs --imagenet-weights FILE (a local "
                                 "torchvision ResNet state dict; downloads are not possible)")
        lo, hi = s.lr_range
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"learning-rate range must be 0 < low <= high, got {lo}, {hi}")
        if not s.batch_sizes or min(s.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {list(s.batch_sizes)}")
        if s.gpus_per_trial < 0 or s.cpus_per_worker <= 0:
            raise ValueError("gpus per trial must be >= 0 and cpus per worker > 0")
        if s.imagenet_weights and not Path(s.imagenet_weights).is_file():
            raise ValueError(f"--imagenet-weights {s.imagenet_weights} does not exist")
        s.grace_epochs = max(1, min(s.grace_epochs, s.epochs))
        self.train_settings(s, {"depth": s.depths[0], "init": "scratch", "lr": lo,
                                "batch_size": s.batch_sizes[0]}).validate()
        return s

    @staticmethod
    def train_settings(s: SearchSettings, config: dict, **kw) -> TrainSettings:
        """The TrainSettings of one trial."""
        return TrainSettings(
            **s.shared(), depth=int(config["depth"]), init=config["init"], epochs=s.epochs,
            batch_size=int(config["batch_size"]), lr=float(config["lr"]),
            workers=s.workers_per_trial, gpus_per_worker=s.gpus_per_trial / s.workers_per_trial,
            **kw)


# ----------------------------------------------------------------------------------------
# the trial (runs in a Tune actor; Ray Train does the work)
# ----------------------------------------------------------------------------------------
def run_trial(config: dict, setup: dict, val_ds) -> None:
    """Tune function trainable: one TorchTrainer run with this trial's hyperparameters."""
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from xray_platform.orchestration.train import data_sources, fit, log_params

    ray.data.DataContext.get_current().enable_progress_bars = False
    s: SearchSettings = setup["search"]
    trial_id = tune.get_context().get_trial_id()
    name = f"r{config['depth']}-{config['init']}-{trial_id}"
    ts = SearchSettings.train_settings(
        s, config, name=name, out=str(Path(setup["search_dir"]) / TRIALS_DIR),
        experiment=setup["experiment"],
        transfer_from=setup["transfer_from"] if config["init"] == "transfer" else None)
    out_dir = Path(ts.out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(setup["uri"])
    run_id = tracker.child_run(setup["experiment_id"], setup["parent_run_id"], trial_id, name,
                               {"xrp.task": s.task, "xrp.version": __version__,
                                "xrp.depth": str(config["depth"]), "xrp.init": config["init"]})
    if not tracker.has_params(run_id):
        log_params(tracker, run_id, ts, setup["grid"], setup["data_desc"])
    train_ds, _, grid, _ = data_sources(ts, with_val=False)
    # the Train run is named after the trial: when a search resumes, Train V2 finds its saved
    # state under the same name and storage and continues from the last checkpoint
    fit(ts, out_dir=out_dir, run_id=run_id, uri=setup["uri"], train_ds=train_ds, val_ds=val_ds,
        grid=grid, data_desc=setup["data_desc"], ray_name=f"trial-{trial_id}",
        callbacks=(TuneReportCallback(),), log_every=0)


#: search folder -> ids of the trials that ended (completed, stopped by ASHA, or failed), kept by
#: the progress callback in the driver. Tune ends an interrupted (Ctrl-C) search quietly; a
#: search is complete only if every trial is in here.
_ENDED: dict[str, set[str]] = {}


class TrialProgress(Callback):
    """A Tune callback printing one line per trial epoch and per finished trial, and recording
    which trials ended in _ENDED. Module level on purpose: the copy Tune unpickles on --resume
    must be this class, writing to this module's _ENDED (a pickled local class carries copies
    of the globals it uses)."""

    def __init__(self, task: str, n_trials: int, epochs: int, search_key: str) -> None:
        self.task, self.n_trials, self.epochs, self.key = task, n_trials, epochs, search_key
        self.best: float | None = None
        self.t0 = time.perf_counter()
        self.started = False

    def setup(self, **info) -> None:  # also when a resumed search starts again
        self.t0 = time.perf_counter()
        self.started = False

    def on_step_begin(self, iteration, trials, **info):
        if not self.started:  # a resumed search: the trials that ended before
            self.started = True
            _ENDED.setdefault(self.key, set()).update(
                t.trial_id for t in trials if t.is_finished())

    def _done(self, trials, trial) -> str:
        n = sum(1 for t in trials if t is trial or t.is_finished())
        return f"{n}/{self.n_trials}"

    @staticmethod
    def _name(trial) -> str:
        c = trial.config
        return (f"r{c['depth']} {c['init']:<8} lr {c['lr']:.1e} bs {c['batch_size']:<3}"
                f" [{trial.trial_id}]")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key, label, direction = headline(self.task)
        v = result.get(key)
        if v is None:
            return
        self.best = v if self.best is None else (min if direction == "min" else max)(
            self.best, v)
        print(f"[xrp tune] {time.perf_counter() - self.t0:6.0f} s  {self._name(trial)}  "
              f"epoch {result.get('epoch')}/{self.epochs}  {label} {v:.3f}  "
              f"(best so far {self.best:.3f})", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        _ENDED.setdefault(self.key, set()).add(trial.trial_id)
        print(f"[xrp tune] trial {self._done(trials, trial)} done: {self._name(trial)}",
              flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        _ENDED.setdefault(self.key, set()).add(trial.trial_id)
        where = getattr(trial, "error_file", None) or getattr(trial, "path", "")
        print(f"[xrp tune] trial {self._done(trials, trial)} FAILED: {self._name(trial)}; "
              f"error: {where}", flush=True)

# ----------------------------------------------------------------------------------------
# the search (driver)
# ----------------------------------------------------------------------------------------
def _search_dir(s: SearchSettings) -> Path:
    root = Path(s.out).resolve()
    if s.name:
        return root / s.name
    if s.resume:  # the newest search of this task
        found = sorted((p for p in root.glob(f"tune-{s.task}-*")
                        if (p / TUNE_DIR).is_dir()), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ValueError(f"--resume: no search of {s.task} under {root} (give --name)")
        return found[-1]
    return root / f"tune-{s.task}-{datetime.now():%Y%m%d-%H%M%S}"


def _trial_rows(results, task: str, tracker: Tracker, parent: str, search_dir: Path
                ) -> tuple[list[dict[str, Any]], dict[str | None, ChildRun]]:
    """One row per trial: hyperparameters and status (from Tune), the per-epoch validation
    metrics (from the trial's MLflow child run: complete across resumes) and the checkpoint of
    its best epoch (from its Ray Train storage). Also returns trial id -> child run."""
    kids = tracker.child_runs(parent)
    key = headline(task)[0]
    rows = []
    for r in results:
        c = r.config or {}
        tid = Path(r.path).name.removeprefix("trial-")  # see _trial_dirname
        row: dict[str, Any] = {"trial_id": tid, "depth": c.get("depth"), "init": c.get("init"),
                               "lr": c.get("lr"), "batch_size": c.get("batch_size"),
                               "epochs_run": 0, "status": "error" if r.error else "finished",
                               "curve": [], "checkpoint": None}
        kid = kids.get(tid)
        if kid is not None:
            hist = tracker.history(kid.run_id, [m for m in kid.metrics if m.startswith("val_")])
            score = hist.get("val_score", {})
            if score:
                best_epoch = max(score, key=score.get)
                row.update({m: v[best_epoch] for m, v in hist.items() if best_epoch in v})
                row.update(best_epoch=best_epoch, epochs_run=max(score),
                           curve=sorted(hist.get(key, {}).items()))
                row["checkpoint"] = _best_checkpoint(
                    search_dir / TRIALS_DIR / kid.name / "ray" / f"trial-{tid}",
                    best_epoch)
        rows.append(row)
    return rows, kids


def _best_checkpoint(train_dir: Path, epoch: int) -> str | None:
    """The kept checkpoint of ``epoch`` in a trial's Ray Train folder (else its best kept)."""
    found = []
    for m in train_dir.glob("checkpoint_*/metrics.json"):
        meta = json.loads(m.read_text())
        found.append((meta.get("epoch") == epoch, meta.get("val_score", -np.inf), m.parent))
    return str(max(found, key=lambda t: t[:2])[2]) if found else None


def _val_rows_on(s: SearchSettings, prep, n: int) -> dict[str, np.ndarray]:
    """The search's validation shots on another model's grid (to score the incumbent on the
    same shots): preset shots simulated again from their seeds on that grid, or a data set's
    shots regridded (ValueError when the grid cannot be derived)."""
    from xray_platform.core.preprocess import normalise, regrid
    from xray_platform.core.targets import training_target
    from xray_platform.io.shots import ShotDataset
    from xray_platform.orchestration.data import SimulateShots
    from xray_platform.physics.presets import PRESETS

    if s.data in PRESETS:
        preset = PRESETS[s.data].with_grid(prep.grid)
        rows = SimulateShots(preset, s.task, s.label, val_seed(s.seed), fresh=False,
                             options=prep.options)(
            {"id": np.arange(n)})
        return {"x": rows["x"], "y": rows["y"]}
    ds = ShotDataset(s.data)  # the search validated on the data set's last shots
    y, keep = training_target(ds.table, s.task, s.label)
    idx = np.nonzero(keep)[0][-n:]
    counts = regrid(np.stack([ds[int(i)].inputs for i in idx]), ds.grid, prep.grid)
    return {"x": normalise(counts, prep)[:, 0].numpy(), "y": y[idx]}


def _val_rows(val_ds) -> dict[str, np.ndarray]:
    rows = val_ds.take_all()
    return {"x": np.stack([r["x"] for r in rows]),
            "y": np.array([r["y"] for r in rows], np.float32)}


def run_search(s: SearchSettings) -> dict:
    """Run (or resume) the search; returns a summary (parent run, trials, champion decision)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from xray_platform.orchestration.env import init_ray
    from xray_platform.orchestration.train import data_sources
    from xray_platform.tracking.store import tracking_uri, ui_command

    s = s.resolved()
    search_dir = _search_dir(s)
    tune_path = search_dir / TUNE_DIR
    if s.resume and not tune.Tuner.can_restore(str(tune_path)):
        raise ValueError(f"--resume: {search_dir} holds no search to continue")
    if not s.resume and tune_path.exists():
        raise ValueError(f"{search_dir} already holds a search: pass --resume to continue it "
                         "or choose another --name")
    search_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(s.mlflow_uri)
    tracker = Tracker(uri)
    exp_name = f"xrp-{s.task}"
    exp = tracker.experiment(exp_name)

    # inits: scratch always, imagenet with a weights file, transfer from the other task's
    # champion when there is one (its trunk starts the model)
    other = "lattice" if s.task == "resolution" else "resolution"
    transfer_from = None
    inits = list(s.inits) if s.inits else ["scratch"] + (["imagenet"] if s.imagenet_weights
                                                          else [])
    other_mv = tracker.champion(other)
    if other_mv is not None and (s.inits is None or "transfer" in s.inits):
        transfer_from = str(tracker.download(other_mv, search_dir / f"transfer-{other}"))
        if "transfer" not in inits:
            inits.append("transfer")
    elif "transfer" in inits:
        raise ValueError(f"init transfer needs a champion of the {other} task in the registry "
                         f"({other_mv and other_mv.name or 'xrp-' + other} has none)")
    n_trials = s.samples * len(s.depths) * len(inits)

    local_cpus = None
    if not s.address:  # room for the concurrent trials' workers plus Ray Data
        import os

        conc = s.max_concurrent or n_trials
        local_cpus = max(os.cpu_count() or 1,
                         int(math.ceil(conc * s.workers_per_trial * s.cpus_per_worker)) + 2)
    init_ray(s.address, local_cpus, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    probe = SearchSettings.train_settings(s, {"depth": 18, "init": "scratch", "lr": 1e-3,
                                              "batch_size": 8})
    _, val_ds, grid, data_desc = data_sources(probe)

    parent_file = search_dir / PARENT_RUN_FILE
    if s.resume and parent_file.exists():
        parent = parent_file.read_text().strip()
        tracker.reopen(parent)
    else:
        parent = tracker.open_run(exp, search_dir.name, {
            "xrp.task": s.task, "xrp.version": __version__, "xrp.kind": "search"})
        parent_file.write_text(parent)
        params = {k: v for k, v in asdict(s).items()
                  if v is not None and k not in ("address", "extra", "resume")}
        params.update(inits=inits, n_trials=n_trials, grid_size=grid.size,
                      transfer_from=f"{other_mv.name} v{other_mv.version}" if other_mv else None,
                      val_shots=len(val_ds.take_all()) if s.val_shots is None else s.val_shots)
        tracker.log_params(parent, params)

    setup = {"search": s, "search_dir": str(search_dir), "uri": uri, "experiment": exp_name,
             "experiment_id": exp, "parent_run_id": parent, "transfer_from": transfer_from,
             "grid": grid, "data_desc": data_desc}
    # the trial itself only waits for its TorchTrainer: a token CPU share, the workers hold
    # the real resources (a bundle may not be empty)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup, val_ds=val_ds),
                                    {"CPU": 0.01})
    space = {"depth": tune.grid_search(list(s.depths)), "init": tune.grid_search(inits),
             "lr": tune.loguniform(*s.lr_range), "batch_size": tune.choice(list(s.batch_sizes))}
    scheduler = ASHAScheduler(time_attr="epoch", max_t=s.epochs, grace_period=s.grace_epochs,
                              reduction_factor=2)
    callbacks = [TrialProgress(s.task, n_trials, s.epochs, str(search_dir))]
    run_config = tune.RunConfig(name=TUNE_DIR, storage_path=str(search_dir), verbose=0,
                                callbacks=callbacks)
    t0 = time.perf_counter()
    if s.resume:
        tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=space, run_config=run_config,
                           tune_config=tune.TuneConfig(metric="val_score", mode="max",
                                                       scheduler=scheduler,
                                                       num_samples=s.samples,
                                                       max_concurrent_trials=s.max_concurrent,
                                                       trial_dirname_creator=_trial_dirname))
    try:
        results = tuner.fit()
    except BaseException:
        tracker.close(parent, "KILLED")
        raise
    wall = time.perf_counter() - t0
    # Ctrl-C / SIGUSR1; a stop between trials leaves the later ones out of ``results``
    if len(_ENDED.get(str(search_dir), ())) < max(len(results), n_trials):
        tracker.close(parent, "KILLED")
        raise SearchInterrupted(f"search interrupted after {wall:.0f} s; its state is saved: "
                                f"continue it with `xrp tune {s.task} --resume --name "
                                f"{search_dir.name} --out {search_dir.parent}`")
    summary = _finish(tracker, s, search_dir, parent, results, val_ds, grid, wall, inits)
    summary.update(tracking_uri=uri, mlflow_ui=ui_command(uri), experiment=exp_name)
    (search_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if not s.address:
        ray.shutdown()
    return summary


def _trial_dirname(trial) -> str:
    return f"trial-{trial.trial_id}"


def _finish_trial_run(tracker: Tracker, run_id: str, row: dict, epochs: int, out: Path) -> None:
    """Log a trial's best model and training curves to its child run and close the run."""
    import shutil

    from xray_platform.orchestration.train import _write_history
    from xray_platform.reports.figures import plot_history

    out.mkdir(parents=True, exist_ok=True)
    if row.get("checkpoint") and (Path(row["checkpoint"]) / MODEL_FILE).is_file():
        shutil.copy2(Path(row["checkpoint"]) / MODEL_FILE, out / MODEL_FILE)
        tracker.log_artifacts(run_id, [out / MODEL_FILE], "model")
    if row["epochs_run"]:
        hist = _write_history(tracker, run_id, out / "history.csv")
        tracker.log_artifacts(run_id, [hist])
        tracker.log_artifacts(run_id, [plot_history(hist, out / "history.png")], "validation")
    finished = row["status"] != "error" and row["epochs_run"] >= epochs
    row["status"] = "finished" if finished else \
        ("error" if row["status"] == "error" else "stopped early")
    tracker.set_tags(run_id, {"xrp.trial_status": row["status"]})
    tracker.close(run_id, "FINISHED" if finished else
                  "FAILED" if row["status"] == "error" else "KILLED")


def _finish(tracker: Tracker, s: SearchSettings, search_dir: Path, parent: str, results,
            val_ds, grid, wall: float, inits: list[str]) -> dict:
    """Trial table and plots in the parent run; register the best trial; move the alias."""
    import shutil

    key, label, _ = headline(s.task)
    rows, kids = _trial_rows(results, s.task, tracker, parent, search_dir)
    # Tune ends a trial as soon as the scheduler says stop (ASHA at a rung, or the last epoch),
    # before fit() writes its outputs (fit() may even see the stop as a failure): finish those
    # child runs here, with the status Tune's record gives them
    for row in rows:
        kid = kids.get(row["trial_id"])
        if kid is not None and kid.status != "FINISHED":
            _finish_trial_run(tracker, kid.run_id, row, s.epochs,
                              search_dir / TRIALS_DIR / kid.name)
    tracker.log_artifacts(parent, write_trial_table(rows, s.task, s.epochs,
                                                    search_dir / "report"))
    scored = [r for r in rows if r.get("checkpoint") and "val_score" in r]
    summary: dict[str, Any] = {"search_dir": str(search_dir), "parent_run_id": parent,
                               "wall_s": wall, "n_trials": len(rows),
                               "trials": [{k: v for k, v in r.items() if k != "curve"}
                                          for r in rows]}
    tracker.log_metrics(parent, {"wall_s": wall})
    if not scored:
        tracker.close(parent, "FAILED")
        raise RuntimeError(f"no trial finished an epoch; see {search_dir / TUNE_DIR}")
    best = max(scored, key=lambda r: r["val_score"])
    cand_dir = search_dir / "best"
    cand_dir.mkdir(exist_ok=True)
    cand_model = cand_dir / MODEL_FILE
    shutil.copy2(Path(best["checkpoint"]) / MODEL_FILE, cand_model)
    val_rows = _val_rows(val_ds)
    cand = score_model(cand_model, val_rows)  # re-scored by the driver: same code as champion
    tracker.log_artifacts(parent, [cand_model], "model")
    tracker.log_metrics(parent, {f"best_{k}": v for k, v in cand.items()})
    tracker.set_tags(parent, {f"xrp.best.{k}": str(best.get(k)) for k in
                              ("depth", "init", "lr", "batch_size", "trial_id", "best_epoch")})

    inc = tracker.incumbent(s.task, search_dir)
    promote, why, champ_metrics = decide(s.task, cand, inc, val_rows,
                                         lambda prep: _val_rows_on(s, prep, len(val_rows["y"])),
                                         s.force, val_grid=(grid.size, grid.d_min_A))
    mv = tracker.register(s.task, parent, tags={
        "xrp.search": search_dir.name, "xrp.depth": best["depth"], "xrp.init": best["init"],
        "xrp.lr": f"{best['lr']:.3g}", "xrp.batch_size": best["batch_size"],
        "xrp.grid_size": val_rows["x"].shape[-1], "xrp.data": s.data,
        "xrp.val_shots": len(val_rows["y"]), "xrp.val_seed": val_seed(s.seed),
        **{f"xrp.{k}": f"{v:.5g}" for k, v in cand.items()}},
        description=f"best of search {search_dir.name}: ResNet-{best['depth']} "
                    f"({best['init']}), {label} {cand[key]:.4g}")
    if promote:
        tracker.crown(mv)
    tracker.set_tags(parent, {"xrp.registered": f"{mv.name} v{mv.version}",
                              "xrp.champion_decision": why})
    tracker.close(parent, "FINISHED")
    summary.update(best={k: v for k, v in best.items() if k != "curve"}, candidate_metrics=cand,
                   registered={"name": mv.name, "version": int(mv.version)},
                   promoted=promote, decision=why, previous_champion=(
                       {"model": inc.label, "metrics": champ_metrics}
                       if inc is not None else None),
                   report=str(search_dir / "report"), inits=inits)
    return summary
