"""`xrp watch FOLDER` (follow a run as it is written) and `xrp runs list | show | export` (the
run store)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from xray_platform.cli.common import console, err, fail
from xray_platform.cli.options import LatticeModel, MlflowUri, ResolutionModel, model_specs

Store = typer.Option(None, "--store", help="The run store: a SQLAlchemy URL (default "
                     "sqlite:///xrp-runs.db in the working directory).")
runs_app = typer.Typer(help="The run store: every answer of every `xrp watch` run.",
                       no_args_is_help=True)


def _store(url: str | None):
    from xray_platform.live.store import RunStore

    try:
        return RunStore(url)
    except ValueError as e:
        fail(str(e))


def watch(
    folder: Path = typer.Argument(..., help="The folder the detector writes to (searched "
                                  "recursively: CBF, SMV, EIGER/NeXus HDF5, .gz/.bz2)."),
    run: str | None = typer.Option(None, "--run", help="Run name (default: the folder's "
                                   "name); an existing run of the same folder is resumed."),
    store: str | None = Store,
    lattice_model: LatticeModel = "champion",
    resolution_model: ResolutionModel = "champion",
    mlflow_uri: MlflowUri = None,
    poll_s: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between scans."),
    settle_s: float = typer.Option(1.0, "--settle", min=0.0, help="A file is read once its "
                                   "size and time stamp have not changed for this long (s)."),
    give_up_s: float = typer.Option(60.0, "--give-up", min=0.0, help="A frame that keeps "
                                    "failing to read (half-written, data file not there "
                                    "yet) is stored with its error after this long (s)."),
    max_backlog: int = typer.Option(1000, "--max-backlog", min=1, help="Frames waiting "
                                    "beyond this are dropped (oldest first) and counted."),
    exit_when_idle: float | None = typer.Option(None, "--exit-when-idle", min=0.0,
                                                help="Stop after this many seconds without a "
                                                "new frame (default: run until Ctrl-C)."),
) -> None:
    """Follow a run as the detector writes it: answer every new frame (hit, lattices,
    resolution, ice, classical d_min) in this process and append it to the run store."""
    from xray_platform.live.watch import WatchStats, watch_folder
    from xray_platform.tracking.resolve import load

    specs = model_specs(lattice_model, resolution_model)
    models = {}
    for task, spec in specs.items():
        try:
            models[task] = load(task, spec, mlflow_uri)
        except ValueError as e:
            if spec != "champion":
                fail(f"{task} model {spec!r}: {e}")
            err.print(f"[yellow]no {task} model answers[/]: {e}", soft_wrap=True)
    for task, m in models.items():
        console.print(f"{task}: {m.source}")
    rs = _store(store)
    name = run or folder.resolve().name
    shown = [0]

    def update(s: WatchStats) -> None:
        if s.answered != shown[0] or s.dropped:
            shown[0] = s.answered
            last = s.last or {}
            res = last.get("resolution_A")
            console.print(f"[xrp watch] {name}: {s.answered} answered ({s.hits} hits, "
                          f"{s.errors} unreadable), {s.dropped} dropped, {s.backlog} waiting, "
                          f"{s.retrying} retrying; last {Path(str(last.get('file', '-'))).name}"
                          f"[{last.get('frame', '-')}]"
                          + (f" {res:.2f} Å" if isinstance(res, float) else ""), highlight=False)

    console.print(f"watching {folder} as run {name!r} in {rs.url} (Ctrl-C stops; rerun to "
                  "resume)")
    try:
        s = watch_folder(folder, rs, name, models, poll_s=poll_s, settle_s=settle_s,
                         give_up_s=give_up_s, max_backlog=max_backlog,
                         exit_when_idle_s=exit_when_idle, on_update=update)
    except ValueError as e:
        fail(str(e))
    except KeyboardInterrupt:
        console.print("stopped; the answers so far are in the store")
        return
    console.print(f"idle for {exit_when_idle:g} s: {s.answered} frames answered this time")


@runs_app.command("list")
def runs_list(store: str | None = Store) -> None:
    """Every run in the store: source, frames, hits, unreadable, dropped, last update."""
    import datetime as dt

    t = Table(title=f"runs in {_store(store).url}")
    for c in ("run", "source", "frames", "hits", "unreadable", "dropped", "updated"):
        t.add_column(c)
    for r in _store(store).runs():
        t.add_row(r["name"], r["source"], str(r["frames"]), str(r["hits"]), str(r["errors"]),
                  str(r["dropped"]), dt.datetime.fromtimestamp(r["updated"]).isoformat(" ",
                                                                                    "seconds"))
    console.print(t)


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="The run's name."),
              store: str | None = Store,
              last: int = typer.Option(20, "--last", min=1, help="Frames to list.")) -> None:
    """A run's summary and its last frames."""
    import numpy as np

    rs = _store(store)
    try:
        r, answers = rs.run(run), rs.answers(run)
    except ValueError as e:
        fail(str(e))
    res = [a["resolution_A"] for a in answers if a.get("resolution_A") is not None]
    console.print(f"{run}: {r['source']}; {r['frames']} frames, {r['hits']} hits, "
                  f"{r['errors']} unreadable, {r['dropped']} dropped"
                  + (f"; resolution median {np.median(res):.2f} Å, best {min(res):.2f} Å"
                     if res else ""), highlight=False)
    t = Table()
    for c in ("file", "frame", "hit", "spots", "ice", "p_multi", "resolution (Å)",
              "d_min spots (Å)", "error"):
        t.add_column(c)

    def f(v, fmt: str = "{}") -> str:
        return "" if v is None else fmt.format(v)

    for a in answers[-last:]:
        t.add_row(Path(a["file"]).name, str(a["frame"]), f(a.get("hit")), f(a.get("n_spots")),
                  f(a.get("ice")), f(a.get("p_multi"), "{:.3f}"),
                  f(a.get("resolution_A"), "{:.2f}"), f(a.get("d_min_spots_A"), "{:.2f}"),
                  f(a.get("error")))
    console.print(t)


@runs_app.command("export")
def runs_export(run: str = typer.Argument(..., help="The run's name."),
                out: Path = typer.Option(..., "--out", help="A .csv, .tsv or .parquet "
                                         "table (the columns of `xrp predict`)."),
                store: str | None = Store) -> None:
    """Write a run's answers as the per-image table of `xrp predict`."""
    from xray_platform.orchestration.predict import _flat, write_table

    rs = _store(store)
    try:
        answers = rs.answers(run)
        write_table([_flat(a) for a in answers], out)
    except ValueError as e:
        fail(str(e))
    console.print(f"{len(answers)} frames of {run} -> {out}")
