"""`xrp watch FOLDER` (follow a run as it is written) and `xrp runs list | show | export` (the
run store)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from xray_platform.cli.common import console, err, fail
from xray_platform.cli.options import (
    CellOption,
    GeometryFile,
    LatticeModel,
    MlflowUri,
    ResolutionModel,
    cell_option,
    geometry_file,
    model_specs,
)
from xray_platform.cli.serve import ApiKey, Insecure, checked_key

Store = typer.Option(None, "--store", help="The run store: a SQLAlchemy URL (default "
                     "sqlite:///xrp-runs.db in the working directory).")
runs_app = typer.Typer(help="The run store: every answer of every `xrp watch` run.",
                       no_args_is_help=True)


def _store(url: str | None, create: bool = True):
    """The run store at ``url``; read-only commands (``create=False``) fail when it is not
    there instead of creating it."""
    from xray_platform.live.store import RunStore

    try:
        return RunStore(url, create=create)
    except ValueError as e:
        fail(str(e))


def watch(
    source: str = typer.Argument(..., help="The folder the detector writes to (searched "
                                 "recursively: CBF, SMV, EIGER/NeXus HDF5, .gz/.bz2), or a "
                                 "DECTRIS detector's ZeroMQ stream, tcp://HOST:9999 (stream "
                                 "v1 JSON or v2 CBOR)."),
    run: str | None = typer.Option(None, "--run", help="Run name (default: the folder's "
                                   "name, or stream-HOST-PORT); an existing run of the same "
                                   "source is resumed."),
    store: str | None = Store,
    lattice_model: LatticeModel = "champion",
    resolution_model: ResolutionModel = "champion",
    mlflow_uri: MlflowUri = None,
    poll_s: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between folder "
                                 "scans."),
    settle_s: float = typer.Option(1.0, "--settle", min=0.0, help="A file is read once its "
                                   "size and time stamp have not changed for this long (s)."),
    give_up_s: float = typer.Option(60.0, "--give-up", min=0.0, help="A frame that keeps "
                                    "failing to read (half-written, data file not there "
                                    "yet) is stored with its error after this long (s)."),
    max_backlog: int = typer.Option(1000, "--max-backlog", min=1, help="Frames waiting "
                                    "beyond this are dropped (oldest first) and counted "
                                    "(stream: the queue of received images)."),
    exit_when_idle: float | None = typer.Option(None, "--exit-when-idle", min=0.0,
                                                help="Stop after this many seconds without a "
                                                "new frame (default: run until Ctrl-C)."),
    exit_after_series: int | None = typer.Option(None, "--exit-after-series", min=1,
                                                 help="Stream: stop once this many series "
                                                 "have ended and every image is answered."),
    grid: str | None = typer.Option(None, "--grid", help="The run is a grid scan of ROWSxCOLS "
                                    "frames (e.g. 10x12): the live page draws its heat map."),
    snake: bool = typer.Option(False, "--snake", help="Grid scan in snake order (odd rows "
                               "run backwards)."),
    step_um: str | None = typer.Option(None, "--step-um", help="With --grid: the grid's step "
                                       "X,Y in µm (X along a row, Y between rows), kept with "
                                       "the run: `xrp runs centre` then gives positions in "
                                       "µm as well as cells."),
    positions: Path | None = typer.Option(None, "--positions", help="A positions file: each "
                                          "frame's motor position, a header line "
                                          "'frame,x_um,y_um' (or file instead of or beside "
                                          "frame; x_mm,y_mm for mm) and one row per frame "
                                          "(docs/beamline.md). Kept with the run: it is "
                                          "centred from positions, in µm."),
    save_hits: Path | None = typer.Option(None, "--save-hits", help="Write each hit's frame "
                                          "into this folder as a CBF with its geometry "
                                          "(miniCBF header), for indexamajig or "
                                          "dials.stills_process; a stream run keeps no "
                                          "frames otherwise. A failed write (disk full) is "
                                          "counted, shown by `xrp runs show`, and the run "
                                          "goes on."),
    ui: int | None = typer.Option(None, "--ui", min=1, max=65535, help="Also serve the live "
                                  "page on this port (http://127.0.0.1:PORT/ui/runs/RUN)."),
    ui_host: str = typer.Option("127.0.0.1", "--ui-host", help="Address the live page "
                                "listens on (0.0.0.0: the beamline network; needs --api-key "
                                "or --insecure)."),
    api_key: ApiKey = None,
    insecure: Insecure = False,
    geometry: GeometryFile = None,
    cell: CellOption = None,
    allow_links_outside: bool = typer.Option(
        False, "--allow-links-outside", help="Follow symbolic links and HDF5 links (external "
        "links, virtual data sets) that lead out of the watched folder (default: such a file "
        "gets an error answer)."),
    server: str | None = typer.Option(None, "--server", help="Answer with a running `xrp "
                                      "serve` at this URL (e.g. http://gpu-node:8000) instead "
                                      "of models in this process."),
    epics: str | None = typer.Option(None, "--epics", help="Serve the run's results as EPICS "
                                     "channel-access PVs PREFIX:FRAMES, :HITS, :HIT_RATE, "
                                     ":LAST_RES, :LAST_NLAT, :BEST_ROW/COL, :CENTRE_ROW/COL "
                                     "... (docs/beamline.md); loopback unless "
                                     "EPICS_CAS_INTF_ADDR_LIST names interfaces."),
    threshold: int = typer.Option(1, "--threshold", min=1, help="Stream v2 with several "
                                  "thresholds: answer threshold N (1 = the first; kept with "
                                  "each answer)."),
) -> None:
    """Follow a run as the detector writes it (a folder) or sends it (the DECTRIS stream):
    answer every new frame (hit, lattices, resolution, ice, classical d_min) in this process
    and append it to the run store; --ui serves the live page."""
    from xray_platform.live.store import shown_url
    from xray_platform.live.watch import watch_folder

    page_key = checked_key(ui_host, api_key, insecure, "--ui-host") if ui is not None else None
    unit_cell = cell_option(cell)
    is_stream = "://" in source
    folder = None if is_stream else Path(source)
    if folder is not None and not folder.is_dir():  # before any model or store is opened
        fail(f"{source}: no such folder" if not folder.exists() else f"{source}: not a folder")
    if is_stream and geometry is not None:
        fail("--geometry is for folders of HDF5 files; the DECTRIS stream's header gives "
             "its geometry")
    if threshold != 1 and not is_stream:
        fail("--threshold picks a threshold of a DECTRIS stream v2 (tcp://...); a folder's "
             "files hold one image per frame")
    geom = geometry_file(geometry)
    raster = _raster(grid, snake)
    step = _step(step_um, raster)
    table = _positions(positions)
    if server:
        from xray_platform.live.remote import ServerAnswers

        try:
            models = ServerAnswers(server, api_key=api_key, cell=unit_cell)
        except ValueError as e:
            fail(str(e))
        console.print(f"answers from {server} (models: {', '.join(models.models) or 'none'})")
    else:
        models = _models(lattice_model, resolution_model, mlflow_uri)
        if unit_cell is not None:  # every hit indexed with the cell (core/answer.py)
            from functools import partial

            from xray_platform.core.answer import predict_frames
            from xray_platform.core.indexing import as_cell

            models = partial(predict_frames, models=models, cell=as_cell(unit_cell))
    rs = _store(store)
    name = run or (_stream_name(source) if is_stream else folder.resolve().name)
    info = {"cell": list(unit_cell)} if unit_cell is not None else {}  # kept with the run
    if step is not None:
        info["step_um"] = list(step)
    saver = _saver(models, save_hits, rs, name) if save_hits is not None else None
    if saver is not None:
        models = saver
    update = _printer(name)
    results = None
    if epics is not None:  # results on EPICS (live/epics.py): a server thread of this process
        from xray_platform.live.epics import chained, serve_run

        try:
            results = serve_run(epics, rs, name, raster, step, table)
        except ValueError as e:
            fail(str(e))
        update = chained(update, results.stats)
        console.print(f"EPICS PVs {results.prefix}* on channel-access port {results.port}",
                      highlight=False, markup=False)
    if ui is not None:
        _serve_page(rs.url, ui_host, ui, name, page_key)
    console.print(f"watching {source} as run {name!r} in {shown_url(rs.url)} (Ctrl-C stops; "
                  "rerun to resume)", soft_wrap=True)
    try:
        if is_stream:
            from xray_platform.live.stream import watch_stream

            s = watch_stream(source, rs, name, models, max_queue=max_backlog,
                             exit_after_series=exit_after_series,
                             exit_when_idle_s=exit_when_idle, raster=raster, on_update=update,
                             info=info, threshold=threshold, positions=table,
                             on_answers=results.answers if results else None)
        else:
            s = watch_folder(folder, rs, name, models, poll_s=poll_s, settle_s=settle_s,
                             overrides={"geometry": geom} if geom else None,
                             give_up_s=give_up_s, max_backlog=max_backlog,
                             exit_when_idle_s=exit_when_idle, raster=raster, on_update=update,
                             allow_links_outside=allow_links_outside, info=info,
                             positions=table,
                             on_answers=results.answers if results else None)
    except ValueError as e:
        fail(str(e))
    except KeyboardInterrupt:
        console.print("stopped; the answers so far are in the store")
        return
    console.print(f"done: {s.answered} frames answered this time ({s.hits} hits, "
                  f"{s.dropped} dropped)")
    if saver is not None:
        c = saver.counts()
        console.print(f"hits saved: {c['written']} in {c['dir']}"
                      + (f"; {c['failed']} failed to write ({c['last_error']})"
                         if c["failed"] else ""), soft_wrap=True, markup=False)


def _step(text: str | None, raster: dict | None) -> tuple[float, float] | None:
    from xray_platform.live.centre import parse_step

    if text is not None and raster is None:
        fail("--step-um is the step of a grid scan: give --grid ROWSxCOLS too")
    try:
        return parse_step(text)
    except ValueError as e:
        fail(str(e))


def _positions(path: Path | None):
    """The positions file at ``path`` (live/positions.py), read now: a bad row stops the
    command before anything is opened."""
    from xray_platform.live.positions import read_positions

    if path is None:
        return None
    try:
        return read_positions(path)
    except ValueError as e:
        fail(str(e))


def _saver(models, folder: Path, rs, name: str):
    """The answerer that also writes every hit into ``folder`` (live/hits.py), its counts
    kept with the run (run_info ``save_hits``; a resumed run counts on)."""
    from xray_platform.live.hits import SaveHits
    from xray_platform.live.watch import answerer

    if folder.exists() and not folder.is_dir():
        fail(f"--save-hits {folder}: not a folder")
    old = {}
    if rs.runs(name):
        old = rs.info(rs.run(name)["id"]).get("save_hits") or {}
        if old.get("dir") != str(folder.resolve()):
            old = {}

    def keep(counts: dict) -> None:
        rs.set_info(rs.run(name)["id"], save_hits=counts)

    return SaveHits(answerer(models), folder, on_counts=keep, counts=old)


def _raster(grid: str | None, snake: bool) -> dict | None:
    if grid is None:
        return None
    try:
        rows, cols = (int(v) for v in grid.lower().split("x"))
        assert rows > 0 and cols > 0
    except (ValueError, AssertionError):
        fail(f"--grid {grid!r}: give ROWSxCOLS, e.g. 10x12")
    return {"rows": rows, "cols": cols, "snake": snake}


def _stream_name(url: str) -> str:
    return "stream-" + url.split("://", 1)[1].replace(":", "-").replace("/", "-")


def _models(lattice_model: str, resolution_model: str, mlflow_uri: str | None) -> dict:
    from xray_platform.tracking.resolve import load

    models = {}
    for task, spec in model_specs(lattice_model, resolution_model).items():
        try:
            models[task] = load(task, spec, mlflow_uri)
        except ValueError as e:
            if spec != "champion":
                fail(f"{task} model {spec!r}: {e}")
            err.print(f"[yellow]no {task} model answers[/]: {e}", soft_wrap=True)
    for task, m in models.items():
        console.print(f"{task}: {m.source}")
    return models


def _printer(name: str):
    shown = [(-1, -1)]

    def update(s) -> None:
        if (s.answered, s.dropped) == shown[0]:
            return
        shown[0] = (s.answered, s.dropped)
        last = s.last or {}
        res = last.get("resolution_A")
        console.print(f"[xrp watch] {name}: {s.answered} answered ({s.hits} hits, "
                      f"{s.errors} unreadable), {s.dropped} dropped, {s.backlog} waiting; "
                      f"last {str(last.get('file', '-')).rsplit('/', 1)[-1]}"
                      f"[{last.get('frame', '-')}]"
                      + (f" {res:.2f} Å" if isinstance(res, float) else ""), highlight=False,
                      markup=False, soft_wrap=True)

    return update


def _serve_page(url: str, host: str, port: int, name: str, api_key: str | None) -> None:
    """The live page in a background thread of this process (uvicorn); with ``api_key``,
    every route needs it."""
    import threading

    import uvicorn

    from xray_platform.live.page import app

    server = uvicorn.Server(uvicorn.Config(app(url, api_key), host=host, port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, name="xrp-live-page", daemon=True).start()
    console.print(f"live page: http://{host}:{port}/ui/runs/{name}"
                  + ("  (API key required: open it once with ?key=KEY)" if api_key else ""),
                  soft_wrap=True)


@runs_app.command("list")
def runs_list(store: str | None = Store) -> None:
    """Every run in the store: source, frames, hits, unreadable, dropped, last update."""
    import datetime as dt

    from xray_platform.live.store import NoStore, RunStore, shown_url

    try:
        rs = RunStore(store, create=False)
    except NoStore as e:  # nothing watched here yet: no runs, and no store made for that
        console.print(f"no runs: {e}", soft_wrap=True)
        return
    except ValueError as e:
        fail(str(e))
    runs = rs.runs()
    if not runs:
        console.print(f"no runs in {shown_url(rs.url)}", soft_wrap=True)
        return
    t = Table(title=f"runs in {shown_url(rs.url)}")
    for c in ("run", "source", "frames", "hits", "unreadable", "dropped", "updated"):
        t.add_column(c)
    for r in runs:
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

    rs = _store(store, create=False)
    try:
        r, answers = rs.run(run), rs.answers(run)
    except ValueError as e:
        fail(str(e))
    res = [a["resolution_A"] for a in answers if a.get("resolution_A") is not None]
    cell = rs.info(r["id"]).get("cell")
    console.print(f"{run}: {r['source']}; {r['frames']} frames, {r['hits']} hits, "
                  f"{r['errors']} unreadable, {r['dropped']} dropped"
                  + (f"; resolution median {np.median(res):.2f} Å, best {min(res):.2f} Å"
                     if res else "")
                  + (f"; cell {'/'.join(f'{x:g}' for x in cell)} (Å, deg)" if cell else ""),
                  highlight=False)
    saved = rs.info(r["id"]).get("save_hits")
    if saved:  # `xrp watch --save-hits`: what was written, and what the disk refused
        console.print(f"hits saved: {saved['written']} in {saved['dir']}, {saved['failed']} "
                      "failed to write" + (f" (last: {saved['last_error']})"
                                           if saved.get("last_error") else ""),
                      highlight=False, markup=False, soft_wrap=True)
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
                out: Path | None = typer.Option(None, "--out", help="A .csv, .tsv or "
                                                ".parquet table (the columns of `xrp "
                                                "predict`)."),
                hits: Path | None = typer.Option(None, "--hits", help="A hit list for "
                                                 "processing: CrystFEL's (indexamajig -i; "
                                                 "'file' or 'file //N' for frame N of a "
                                                 "multi-frame file) or, for a .txt file or "
                                                 "--format dials, one image file per line."),
                list_format: str | None = typer.Option(None, "--format", help="The hit list's "
                                                       "format: crystfel or dials (default: "
                                                       "dials for .txt, else crystfel)."),
                store: str | None = Store) -> None:
    """Write a run's answers as the per-image table of `xrp predict` (--out) and/or its hits
    as a list for CrystFEL or DIALS (--hits). Hits saved by `xrp watch --save-hits` are listed
    by their saved CBF; a streamed hit that was not saved has no file and is left out."""
    from xray_platform.live.hits import list_format as format_of
    from xray_platform.live.hits import write_hit_list

    if out is None and hits is None:
        fail("give --out TABLE and/or --hits LIST")
    if out is not None and out.suffix not in (".csv", ".tsv", ".parquet"):
        fail(f"--out {out}: use a .csv, .tsv or .parquet file")
    if hits is not None:
        try:
            fmt = format_of(hits, list_format)
        except ValueError as e:
            fail(str(e))
    rs = _store(store, create=False)
    try:
        answers = rs.answers(run)
    except ValueError as e:
        fail(str(e))
    if out is not None:
        from xray_platform.reports.table import table_row, write_table

        write_table([table_row(a) for a in answers], out)
        console.print(f"{len(answers)} frames of {run} -> {out}")
    if hits is not None:
        try:
            done = write_hit_list(hits, answers, fmt)
        except OSError as e:
            fail(f"--hits {hits}: cannot write it ({e.strerror or e})")
        console.print(f"{done['hits']} hits of {run} -> {hits} ({done['format']} list, "
                      f"{done['lines']} lines)", soft_wrap=True, markup=False)
        if done["missing"]:
            err.print(f"[yellow]{done['missing']} hits have no file on disk[/] (streamed "
                      "frames: `xrp watch --save-hits DIR` keeps them); not listed",
                      soft_wrap=True)


@runs_app.command("centre")
def runs_centre(run: str = typer.Argument(..., help="The run's name."),
                store: str | None = Store,
                grid: str | None = typer.Option(None, "--grid", help="ROWSxCOLS, for a run "
                                                "watched without --grid (default: the run's "
                                                "own)."),
                snake: bool = typer.Option(False, "--snake", help="With --grid: snake order "
                                           "(odd rows run backwards)."),
                step_um: str | None = typer.Option(None, "--step-um", help="The grid step "
                                                   "X,Y in µm (default: the run's "
                                                   "--step-um)."),
                positions: Path | None = typer.Option(None, "--positions", help="Centre from "
                                                      "this positions file (frame,x_um,y_um; "
                                                      "docs/beamline.md) instead of the "
                                                      "positions the run keeps."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Where the crystal is in a grid-scan run: the best cell (most spots) and, for each
    connected region of hit cells (cells touching at sides or corners, 8-connectivity; one
    region per crystal, strongest first), its centre weighted by spot count and its extent.
    Cells are (row, col) from 0, frame 0 at row 0, col 0; µm (with a step) are x = col *
    step_x, y = row * step_y from the centre of that first cell. A run with motor positions
    (--positions, or the stream's image user_data) is centred from them, in absolute µm,
    unless --grid is given."""
    import json

    from xray_platform.live.centre import parse_step, run_centre

    if positions is not None and grid is not None:
        fail("give --grid (centre on the grid) or --positions (centre from motor positions), "
             "not both")
    raster = _raster(grid, snake)
    table = _positions(positions)
    try:
        step = parse_step(step_um)
    except ValueError as e:
        fail(str(e))
    rs = _store(store, create=False)
    try:
        c = run_centre(rs, run, raster, step, table)
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(c, indent=1))
        return
    (print_positions if c.get("mode") == "positions" else print_centre)(c)


def print_centre(c: dict) -> None:
    """The centring as a human reads it: a line, then a table of the regions."""
    step = c["step_um"]

    def um(p: dict | None) -> str:
        return "" if p is None else f"{p['x']:.1f}, {p['y']:.1f}"

    b = c["best_cell"]
    console.print(f"{c['run']}: {c['rows']}x{c['cols']} grid{' (snake)' if c['snake'] else ''}"
                  + (f", step {step[0]:g} x {step[1]:g} µm" if step else "")
                  + f"; {c['answered']} cells answered, {c['hits']} hits, "
                  f"{len(c['regions'])} crystal(s)", highlight=False, markup=False,
                  soft_wrap=True)
    if b is None:
        console.print("no hit: no crystal found", highlight=False)
        return
    console.print(f"best cell: row {b['row']}, col {b['col']} (frame {b['frame']}, "
                  f"{b['n_spots']} spots" + (f", {b['resolution_A']:.2f} Å"
                                             if b.get("resolution_A") else "") + ")"
                  + (f" at x, y = {um(b['um'])} µm" if b["um"] else ""), highlight=False,
                  markup=False, soft_wrap=True)
    t = Table(title="crystals (centre weighted by spot count; cells touching at sides or "
              "corners are one crystal)")
    cols = ["crystal", "cells", "spots", "centre row, col", "extent rows x cols"]
    if step:
        cols += ["centre x, y (µm)", "extent x x y (µm)"]
    for name in cols + ["best cell"]:
        t.add_column(name)
    for g in c["regions"]:
        e, bc = g["extent"], g["best_cell"]
        row = [str(g["crystal"]), str(g["n_cells"]), str(g["spots"]),
               f"{g['centre']['row']:.2f}, {g['centre']['col']:.2f}",
               f"{e['rows']} x {e['cols']}"]
        if step:
            row += [um(g["centre_um"]), f"{g['extent_um']['x']:g} x {g['extent_um']['y']:g}"]
        t.add_row(*row, f"{bc['row']}, {bc['col']} ({bc['n_spots']} spots)")
    console.print(t)


def print_positions(c: dict) -> None:
    """A centring from motor positions as a human reads it: a line, then the regions."""
    def um(p: dict | None) -> str:
        return "" if p is None else f"{p['x']:.1f}, {p['y']:.1f}"

    step, layout = c["step_um"], c["layout"]
    shape = (f"a {c['raster']['rows']}x{c['raster']['cols']} raster" if layout == "raster"
             else f"scattered (linked within {c['link_um']:g} µm)" if layout else "no position")
    console.print(f"{c['run']}: positions from {', '.join(c['positions_from']) or '-'}; "
                  f"{shape}" + (f", step {step[0]:g} x {step[1]:g} µm" if step else "")
                  + f"; {c['placed']} frames placed ({c['without_position']} without a "
                  f"position), {c['hits']} hits, {len(c['regions'])} crystal(s)",
                  highlight=False, markup=False, soft_wrap=True)
    b = c["best_cell"]
    if b is None:
        console.print("no hit: no crystal found", highlight=False)
        return
    console.print(f"best frame: {b['frame']} ({b['n_spots']} spots"
                  + (f", {b['resolution_A']:.2f} Å" if b.get("resolution_A") else "")
                  + f") at x, y = {um(b['um'])} µm", highlight=False, markup=False,
                  soft_wrap=True)
    t = Table(title="crystals (centre weighted by spot count; absolute motor µm)")
    for name in ("crystal", "frames", "spots", "centre x, y (µm)", "extent x x y (µm)",
                 "x range (µm)", "y range (µm)", "best frame"):
        t.add_column(name)
    for g in c["regions"]:
        e, r, bc = g["extent_um"], g["bounds_um"], g["best_cell"]
        t.add_row(str(g["crystal"]), str(g["n_cells"]), str(g["spots"]), um(g["centre_um"]),
                  f"{e['x']:g} x {e['y']:g}", f"{r['x_min']:g} .. {r['x_max']:g}",
                  f"{r['y_min']:g} .. {r['y_max']:g}",
                  f"{bc['frame']} ({bc['n_spots']} spots) at {um(bc['um'])}")
    console.print(t)
