"""`xrp predict`: every frame of files and folders through the frame -> answer path (Ray Data),
into a per-image table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from xray_platform.cli.common import console, csv, err, fail, progress, summary
from xray_platform.cli.options import (
    Address,
    CellOption,
    GeometryFile,
    LatticeModel,
    MlflowUri,
    ResolutionModel,
    cell_option,
    geometry_file,
    model_specs,
)
from xray_platform.core.schema import ALWAYS_RESOLUTION


def _overrides(wavelength_a, distance_mm, pixel_size_mm, beam_center) -> dict:
    from xray_platform.io.formats import geometry_overrides

    bc = None
    if beam_center:
        bc = csv(beam_center, float, "--beam-center")
        if len(bc) != 2:
            fail(f"--beam-center takes X,Y, got {beam_center!r}")
    try:
        return geometry_overrides(wavelength_a, distance_mm, pixel_size_mm, bc)
    except ValueError as e:
        fail(f"geometry override: {e}")


def _pinned(specs: dict[str, str], mlflow_uri: str | None) -> dict[str, str]:
    """Resolve every model once (registry aliases pinned to versions for every actor) and say
    which answers; reads metadata only, the actors load the weights. A task asked for by the
    default ('champion') with neither a champion nor a zoo model is left out (its columns stay
    empty), as `xrp serve` does; one named explicitly must resolve."""
    from xray_platform.core.models import model_metadata, model_preprocessing
    from xray_platform.tracking.resolve import resolve

    pinned = {}
    for t, spec in specs.items():
        try:
            r = resolve(t, spec, mlflow_uri)
            meta = model_metadata(r.path)
        except ValueError as e:
            if spec == "champion":
                err.print(f"[yellow]no {t} model answers[/]: {e}", soft_wrap=True)
                continue
            fail(f"{t} model {spec!r}: {e}")
        if meta["task"] != t:
            fail(f"{t} model {spec!r} is a {meta['task']} model")
        pinned[t] = r.pinned
        console.print(f"{t}: {r.source} (ResNet-{meta['depth']}, "
                      f"{model_preprocessing(meta).grid_size}² input)")
    return pinned


#: Failed frames listed one by one on stderr (the table holds all of them).
_SHOW_ERRORS = 20


def _summary(rows: list[dict], wall: float, out: Path) -> None:
    import numpy as np

    ok = [r for r in rows if not r.get("error")]
    hits = [r for r in ok if r.get("hit")]
    multi = [r for r in hits if r.get("is_multi")]
    res = [r["resolution_A"] for r in hits if r.get("resolution_A") is not None]
    lines = [("frames", f"{len(rows)} ({len(rows) - len(ok)} unreadable)"),
             ("hits", f"{len(hits)} ({len(multi)} multi-lattice)")]
    if res:
        lines.append(("resolution", f"median {np.median(res):.2f} Å, best {min(res):.2f} Å"))
    indexed = [r["n_lattices_indexed"] for r in hits if r.get("n_lattices_indexed") is not None]
    if indexed:
        lines.append(("indexed", f"{sum(n >= 1 for n in indexed)} of {len(hits)} hits "
                      f"({sum(n >= 2 for n in indexed)} with several lattices)"))
    lines += [("throughput", f"{len(rows) / wall:.2f} frames/s ({wall:.1f} s incl. start-up)"),
              ("table", str(out))]
    summary("xrp predict: summary", lines)
    failed = [r for r in rows if r.get("error")]
    for r in failed[:_SHOW_ERRORS]:
        err.print(f"[yellow]{escape(str(r['file']))}\\[{r['frame']}][/]: {escape(r['error'])}",
                  soft_wrap=True)
    if len(failed) > _SHOW_ERRORS:
        err.print(f"... and {len(failed) - _SHOW_ERRORS} more (the error column of {out})",
                  soft_wrap=True, markup=False)


def _outcome(rows: list[dict], out: Path) -> None:
    """Exit 1 when no frame was answered; say how many failed when some did."""
    failed = sum(1 for r in rows if r.get("error"))
    if rows and failed == len(rows):
        fail(f"no frame answered: all {failed} failed (the error column of {out} says why)",
             code=1)
    if failed:
        err.print(f"[yellow]{failed} of {len(rows)} frames failed[/] (the error column of "
                  f"{escape(str(out))} says why); {len(rows) - failed} answered",
                  soft_wrap=True)


def _open_run(store: str | None, run: str, paths: list[str]) -> tuple:
    """(run store, run id) for --run, opened before the work so a bad URL fails at once."""
    from xray_platform.live.store import RunStore

    try:
        rs = RunStore(store)
        return rs, rs.open_run(run, "predict:" + " ".join(paths))
    except ValueError as e:
        fail(str(e))


def _write_stream(path: Path, rows: list[dict]) -> None:
    """The hits of ``rows`` (each holding its answer as JSON, taken out here) as a stream."""
    import json

    from xray_platform.core.schema import ANSWER_JSON
    from xray_platform.reports.crystfel_stream import write_stream

    answers = [json.loads(r.pop(ANSWER_JSON)) for r in rows if r.get(ANSWER_JSON)]
    for r in rows:
        r.pop(ANSWER_JSON, None)
    n = write_stream(path, answers)
    console.print(f"stream: {n} hits in {escape(str(path))}", soft_wrap=True)


def _print_columns(value: bool) -> None:
    if value:
        from xray_platform.core.schema import TABLE

        for name, doc in TABLE.items():
            console.print(f"[bold]{name}[/]: {doc}", soft_wrap=True)
        raise typer.Exit()


def predict(
    paths: list[str] = typer.Argument(..., help="Detector files, folders (searched "
                                      "recursively) or glob patterns; multi-frame HDF5 files "
                                      "give a row per frame."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="The per-image table: "
                             ".csv, .tsv or .parquet."),
    lattice_model: LatticeModel = "champion",
    resolution_model: ResolutionModel = "champion",
    mlflow_uri: MlflowUri = None,
    always_resolution: bool = typer.Option(
        ALWAYS_RESOLUTION, "--always-resolution/--single-lattice-only",
        help="Regress the resolution of every hit (d_vis pools all lattices, design.md), or "
             "only of hits the lattice verdict (indexing and the CNN) calls single-lattice."),
    wavelength_a: float | None = typer.Option(None, "--wavelength", help="Override: "
                                              "wavelength (Å) for files with wrong or missing "
                                              "headers (and .npy)."),
    distance_mm: float | None = typer.Option(None, "--distance", help="Override: detector "
                                             "distance (mm)."),
    pixel_size_mm: float | None = typer.Option(None, "--pixel-size", help="Override: pixel "
                                               "size (mm)."),
    beam_center: str | None = typer.Option(None, "--beam-center", help="Override: beam centre "
                                           "X,Y in pixels (fast, slow)."),
    geometry: GeometryFile = None,
    cell: CellOption = None,
    min_confidence: float | None = typer.Option(None, "--min-confidence", min=0.5, max=1.0,
                                                help="Write only frames whose lattice verdict "
                                                "is at least this likely right, max(p_multi, "
                                                "1 - p_multi) (needs a lattice model; "
                                                "unreadable frames and misses stay in the "
                                                "table)."),
    stream: Path | None = typer.Option(None, "--stream", help="Also write the hits as a "
                                       "CrystFEL stream (format 2.3, a .stream file): each "
                                       "hit's spots and the lattices indexing found, with "
                                       "their cells, reciprocal bases and indexed spots, for "
                                       "indexamajig-style processing."),
    run: str | None = typer.Option(None, "--run", help="Also append the answers to this run "
                                   "of the run store (`xrp runs show RUN`)."),
    store: str | None = typer.Option(None, "--store", help="The run store for --run (a "
                                     "SQLAlchemy URL; default sqlite:///xrp-runs.db)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Frames per model batch."),
    columns: bool = typer.Option(False, "--columns", is_eager=True, callback=_print_columns,
                                 help="Print what every column of the table means, and exit."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel predictor actors (1 "
                                "CPU each)."),
    address: Address = None,
) -> None:
    """Predict every frame of files/folders with Ray Data and write a per-image table (file,
    frame, geometry, hit, p_multi, resolution_A, sigma, timings, the models that answered).

    Exit status: 0 when at least one frame was answered (frames that failed keep their row,
    with the error, and are counted), 1 when none was, 2 for bad arguments or inputs."""
    import time

    from xray_platform.io.formats import FormatError, expand_inputs
    from xray_platform.orchestration.env import prepare_ray_env

    prepare_ray_env(address)
    if out.suffix not in (".csv", ".tsv", ".parquet"):
        fail(f"--out {out}: use a .csv, .tsv or .parquet file")
    if stream is not None and stream.suffix != ".stream":
        fail(f"--stream {stream}: use a .stream file")
    geom = geometry_file(geometry)
    unit_cell = cell_option(cell)
    try:
        items = expand_inputs(paths, geom)
    except FormatError as e:
        fail(str(e))
    if not items:
        fail("no detector frames found in " + ", ".join(paths))
    overrides = _overrides(wavelength_a, distance_mm, pixel_size_mm, beam_center)
    if geom:
        overrides["geometry"] = geom
    specs = model_specs(lattice_model, resolution_model)
    if not specs:
        fail("both models are 'none': nothing to predict")
    pinned = _pinned(specs, mlflow_uri)
    if not pinned:
        fail("no model answers: train one (`xrp tune resolution`) or pass --resolution-model")
    if min_confidence is not None and "lattice" not in pinned:
        fail("--min-confidence needs a lattice model (its p_multi is the confidence)")
    target = _open_run(store, run, paths) if run is not None else None
    if target is not None and unit_cell is not None:  # the cell is kept with the run
        target[0].set_info(target[1], cell=list(unit_cell))
    from xray_platform.orchestration.predict import predict_files
    from xray_platform.reports.table import confident_rows, write_table

    t0 = time.perf_counter()
    with progress("predicting frames", len(items)) as update:
        rows = predict_files(items, pinned, mlflow_uri, overrides=overrides,
                             always_resolution=always_resolution, batch_size=batch_size,
                             concurrency=workers, address=address, on_progress=update,
                             cell=unit_cell, with_spots=stream is not None)
    wall = time.perf_counter() - t0
    if stream is not None:
        _write_stream(stream, rows)
    all_rows, n_all = rows, len(rows)
    if min_confidence is not None:
        rows = confident_rows(rows, min_confidence)
        console.print(f"--min-confidence {min_confidence}: {n_all - len(rows)} of {n_all} "
                      "frames below it, not written")
    write_table(rows, out)
    if target is not None:
        from xray_platform.live.store import shown_url

        rs, run_id = target
        added = rs.add(run_id, rows)
        console.print(f"run {run!r} in {shown_url(rs.url)}: {added} new frames (of "
                      f"{len(rows)})", soft_wrap=True)
    _summary(rows, wall, out)
    _outcome(all_rows, out)
