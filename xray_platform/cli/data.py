"""`xrp presets`, `xrp simulate`, `xrp show`: data set presets, simulated data sets, a look at
a shot or a detector frame."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from xray_platform.cli.common import console, fail, positive, progress, summary
from xray_platform.cli.options import Address


def presets() -> None:
    """List the data set presets (name, shots, task, model-input grid)."""
    from xray_platform.physics.presets import PRESETS

    t = Table("preset", "shots", "task", "grid", "description")
    for p in PRESETS.values():
        t.add_row(p.name, f"{p.n_shots:,}", p.task, f"{p.grid.size}² to {p.grid.d_min_A} Å",
                  p.description)
    console.print(t)


def _preset(name: str, n: int | None, detector: str | None):
    from xray_platform.physics.presets import preset as get_preset

    try:
        p = get_preset(name)
        if n is not None:
            if n < 1:
                fail(f"-n must be a positive number of shots, got {n}")
            p = p.with_n(n)
        return p.with_detector(detector) if detector is not None else p
    except ValueError as e:
        fail(str(e))


def simulate(
    preset: str = typer.Argument(..., help="Data set preset (see `xrp presets`), e.g. "
                                 "quick-resolution, resmos2, master-baxter, user-sets."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory of the data set "
                             "(created; rerunning the same command resumes it)."),
    n: int | None = typer.Option(None, "-n", "--n-shots", help="Number of shots (default: the "
                                 "preset's; for user-set presets: shots per set)."),
    seed: int = typer.Option(0, "--seed", help="Data set seed: with the preset it fully "
                             "determines every shot."),
    address: Address = None,
    full_frames: bool = typer.Option(False, "--full-frames", help="Also store full detector "
                                     "frames (int32, big: ~25 MB raw per PILATUS 6M frame)."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Shots per shard file "
                                          "(one Ray task each)."),
    num_cpus: int | None = typer.Option(None, "--num-cpus", min=1, help="CPUs for a local Ray "
                                        "(default: all)."),
    detector: str | None = typer.Option(None, "--detector", help="Use only this detector "
                                        "preset (pilatus6m, eiger16m, test); needed with "
                                        "--full-frames for presets that mix detectors."),
) -> None:
    """Simulate a labelled data set of still shots into sharded HDF5 files, in parallel on Ray."""
    p = _preset(preset, n, detector)
    if shard_size is not None and shard_size < 1:
        fail(f"--shard-size must be >= 1, got {shard_size}")
    if seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory")

    from xray_platform.orchestration.env import prepare_ray_env

    prepare_ray_env(address)  # before Ray is imported
    from xray_platform.orchestration.simulate import simulate_dataset

    console.print(f"simulating [bold]{p.name}[/]: {p.n_shots:,} shots, seed {seed}, "
                  f"grid {p.grid.size}² to {p.grid.d_min_A} Å -> {out}")
    with progress("simulating", p.n_shots, "shots") as update:
        try:
            s = simulate_dataset(p, out, seed, full_frames=full_frames, shard_size=shard_size,
                                 address=address, num_cpus=num_cpus, on_progress=update)
        except ValueError as e:
            fail(str(e))
        except Exception as e:  # a task failed on the cluster: say what, keep finished shards
            if type(e).__module__.startswith("ray"):
                fail(f"simulation failed: {getattr(e, 'cause', None) or e}\n"
                     "finished shards are kept; rerun the same command to resume")
            raise
    size_mb = sum(f.stat().st_size for f in out.glob("*.h5")) / 1e6
    rows = [("data set", str(out)),
            ("shots", f"{s['n_shots']:,} ({s['new_shots']:,} new, {s['resumed_shards']} "
                      "shard(s) already complete)")]
    if s["new_shots"]:
        rows += [("hits (new shots)", f"{s['hits']:,} ({100 * s['hits'] / s['new_shots']:.0f} %)"),
                 ("multi-lattice (new)",
                  f"{s['multi']:,} ({100 * s['multi'] / s['new_shots']:.0f} %)"),
                 ("Ray nodes", f"{len(s['nodes'])} node(s) wrote shards"),
                 ("wall time", f"{s['wall_s']:.1f} s ({s['shots_per_s']:.1f} shots/s, "
                               f"{1000 * s['cpu_s_per_shot']:.0f} ms CPU per shot)")]
    rows += [("on disk", f"{size_mb:.1f} MB"), ("look at a shot", f"xrp show {out} --index 0")]
    summary("xrp simulate: summary", rows)


def _show_detector_file(path: Path, index: int, png: Path, size: int, d_min: float) -> None:
    from xray_platform.io.formats import FormatError, read_frame
    from xray_platform.physics.qgrid import QGrid, frame_to_grid
    from xray_platform.reports.shot import show_shot

    try:
        frame = read_frame(path, index)
        geom = frame.geometry()
    except (FormatError, ValueError, OSError) as e:
        fail(str(e))
    import torch

    try:
        grid = QGrid(size, d_min)
    except ValueError as e:
        fail(f"--size/--d-min: {e}")
    inputs = frame_to_grid(torch.as_tensor(frame.image), geom, grid).numpy()
    record = {"detector": frame.info.detector or frame.info.format,
              "distance_mm": geom.distance_mm, "wavelength_A": geom.wavelength_A,
              "energy_keV": geom.energy_keV}
    flat = frame.image.ndim == 2  # a multi-panel frame is shown on the grid only
    if not flat:
        record["panels"] = frame.image.shape[0]
    show_shot(png, inputs, grid, frame.image if flat else None, geom if flat else None, record,
              title=f"{path.name} [{index}]")
    console.print(f"wrote {png}")


def _show_dataset(path: Path, index: int, png: Path) -> None:
    from xray_platform.io.shots import ShotDataset
    from xray_platform.physics.geometry import Geometry, detector
    from xray_platform.reports.shot import show_shot

    try:
        ds = ShotDataset(path)
    except (ValueError, OSError) as e:
        fail(str(e))
    if not -len(ds) <= index < len(ds):
        fail(f"--index {index} out of range: the data set has {len(ds)} shots")
    shot = ds[index]
    rec = shot.record
    geom = Geometry(detector(rec["detector"]), rec["distance_mm"], rec["wavelength_A"],
                    (rec["beam_f0_px"], rec["beam_s0_px"]))
    show_shot(png, shot.inputs, ds.grid, shot.full_frame, geom, rec,
              title=f"{path.name} shot {index} (seed {rec.get('seed')})")
    console.print(f"wrote {png}")
    console.print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                              for k, v in rec.items()}, indent=None)[:2000])


def _is_dataset(path: Path) -> bool:
    """A data set folder or shard; anything a detector reader understands is not."""
    from xray_platform.io.formats import FormatError, reader_for

    if path.is_dir():
        return True
    try:
        reader_for(path)
    except FormatError:
        return path.suffix == ".h5"  # an xrp shard (its reader explains what is wrong)
    return False


def show(
    path: Path = typer.Argument(..., help="A data set directory, a shard .h5, or any detector "
                                "file xrp reads (CBF, EIGER/NeXus HDF5, SMV, compressed)."),
    index: int = typer.Option(0, "--index", "-i", help="Shot index in the data set, or frame "
                              "index in a multi-frame detector file."),
    out: Path | None = typer.Option(None, "--out", "-o", help="PNG to write (default: "
                                    "<name>_<index>.png in the current folder)."),
    d_min: float = typer.Option(1.2, "--d-min", help="For detector files: grid edge (Å)."),
    size: int = typer.Option(512, "--size", min=8, help="For detector files: grid size "
                             "(cells)."),
) -> None:
    """Write a PNG of a shot: model input and detector frame with resolution rings, and labels."""
    if not path.exists():
        fail(f"{path} does not exist")
    positive(d_min, "--d-min")
    name = path.name.split(".")[0] if path.is_file() else path.name
    png = out or Path(f"{name}_{index}.png")
    if _is_dataset(path):
        _show_dataset(path, index, png)
    else:
        _show_detector_file(path, index, png, size, d_min)
