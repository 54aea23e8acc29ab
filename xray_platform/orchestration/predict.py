"""`xrp predict` on Ray Data: detector files (folders, globs, multi-frame HDF5) -> a per-image
table (file, frame, geometry, hit, p_multi, resolution, sigma, timings), like the per-image
reports crystallographers know from DIALS. The work per frame is xray_platform.core.answer (no Ray).

Callers run :func:`xray_platform.orchestration.env.prepare_ray_env` before importing this module."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray

from xray_platform.core.schema import ALWAYS_RESOLUTION

COLUMNS = ["file", "frame", "format", "detector", "wavelength_A", "distance_mm",
           "pixel_size_mm", "beam_center_x_px", "beam_center_y_px", "hit", "n_spots",
           "n_spots_no_ice", "ice", "ice_rings_A", "p_multi", "is_multi", "confidence",
           "p_multi_cnn", "resolution_A", "resolution_sigma_A", "d_min_spots_A",
           "d_min_spots_sigma_A", "resolution_disagrees", "n_lattices_indexed",
           "lattice_spots", "fraction_indexed", "indexed_with_cell", "decode_ms", "grid_ms",
           "hitfinder_ms", "ice_ms", "d_min_spots_ms", "spots_ms", "indexing_ms", "lattice_ms",
           "resolution_ms", "lattice_model", "resolution_model", "error"]

#: the extra row key holding a frame's whole answer (predict_files with_spots)
ANSWER_JSON = "answer_json"


def _flat(rec: dict[str, Any]) -> dict[str, Any]:
    row = {c: rec.get(c) for c in COLUMNS}
    if "beam_center_px" in rec or "beam_center_x_px" not in rec:  # an answer, not a row
        bc = rec.get("beam_center_px") or (None, None)
        row["beam_center_x_px"], row["beam_center_y_px"] = bc
    rings = rec.get("ice_rings")  # the table keeps the d-spacings (Å), strongest first
    if rings is not None or "ice_rings_A" not in rec:
        row["ice_rings_A"] = " ".join(f"{r['d_A']:.3f}" for r in rings) if rings else None
    lattices = rec.get("lattices")  # the table keeps the spots each lattice explains
    if lattices is not None or "lattice_spots" not in rec:
        row["lattice_spots"] = " ".join(str(x["spots"]) for x in lattices) if lattices \
            else None
    for k, v in (rec.get("timings_ms") or {}).items():
        if k in row:
            row[k] = v
    for t, m in (rec.get("models") or {}).items():
        row[f"{t}_model"] = f"{m['name']}/{m['version']}" if m.get("name") else m.get("source")
    return row


class PredictFrames:
    """Ray Data UDF (an actor holds the models): rows {path, frame} -> table rows."""

    def __init__(self, specs: dict[str, str], mlflow_uri: str | None, overrides: dict,
                 always_resolution: bool, cell: tuple[float, ...] | None = None,
                 with_spots: bool = False) -> None:
        import torch

        from xray_platform.tracking.resolve import load

        torch.set_num_threads(1)
        self.models = {t: load(t, s, mlflow_uri) for t, s in specs.items()}
        self.overrides, self.always, self.with_spots = overrides, always_resolution, with_spots
        self.cell = None
        if cell is not None:
            from xray_platform.core.indexing import as_cell

            self.cell = as_cell(cell)

    def _read(self, batch: dict[str, np.ndarray]):
        """Frames of the batch, each file opened once (rows come grouped by file), and the
        per-row errors of frames that cannot be read."""
        from xray_platform.io.formats import open_frames

        frames, errors, order, sources = [], {}, [], {}
        try:
            for i, (path, index) in enumerate(zip(batch["path"], batch["frame"], strict=True)):
                t0 = time.perf_counter()
                try:
                    if path not in sources:
                        sources[path] = open_frames(str(path), **self.overrides)
                    f = sources[path].frame(int(index))
                    f.geometry()  # geometry problems are this frame's error, not the batch's
                except (ValueError, OSError) as e:  # FormatError, GeometryMissing, ...
                    errors[i] = {"file": str(path), "frame": int(index), "error": str(e)}
                    continue
                frames.append(f)
                order.append((i, 1e3 * (time.perf_counter() - t0)))
        finally:
            for src in sources.values():
                src.close()
        return frames, errors, order

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from xray_platform.core.answer import predict_frames

        frames, errors, order = self._read(batch)
        recs: list[dict[str, Any]] = [{} for _ in batch["path"]]
        try:
            done = predict_frames(frames, self.models, self.always, self.cell,
                                  with_spots=self.with_spots)
        except (ValueError, RuntimeError) as e:  # e.g. a frame the models cannot take
            done = [{"file": f.path, "frame": f.index, "error": str(e)} for f in frames]
        for (i, decode_ms), rec in zip(order, done, strict=True):
            rec.setdefault("timings_ms", {})["decode_ms"] = decode_ms
            recs[i] = rec
        for i, rec in errors.items():
            recs[i] = rec
        rows = [_flat(r) for r in recs]
        out = {c: [r[c] for r in rows] for c in COLUMNS}
        if self.with_spots:  # whole answers with spots, for reports/crystfel_stream
            out[ANSWER_JSON] = [json.dumps(r) for r in recs]
        return out


def predict_files(items: list[tuple[Path, int]], specs: dict[str, str],
                  mlflow_uri: str | None = None, *, overrides: dict | None = None,
                  always_resolution: bool = ALWAYS_RESOLUTION, batch_size: int = 4,
                  concurrency: int = 1, address: str | None = None,
                  cell: tuple[float, ...] | None = None, with_spots: bool = False,
                  on_progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """The table rows, in input order (``cell``: a,b,c,alpha,beta,gamma to index every hit;
    ``with_spots``: each row also holds its whole answer, spots included, as JSON under
    ANSWER_JSON)."""
    from xray_platform.orchestration.env import init_ray

    init_ray(address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"i": i, "path": str(p), "frame": int(f)}
                              for i, (p, f) in enumerate(items)],
                             override_num_blocks=max(1, min(len(items) // batch_size, 200)))
    ds = ds.map_batches(PredictFrames, batch_size=batch_size, concurrency=concurrency,
                        num_cpus=1, fn_constructor_kwargs={
                            "specs": specs, "mlflow_uri": mlflow_uri,
                            "overrides": overrides or {},
                            "always_resolution": always_resolution, "cell": cell,
                            "with_spots": with_spots})
    rows: list[dict[str, Any]] = []
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        n = len(batch["file"])
        keys = COLUMNS + ([ANSWER_JSON] if with_spots else [])
        rows.extend({c: _scalar(batch[c][k]) for c in keys} for k in range(n))
        if on_progress:
            on_progress(len(rows), len(items))
    index = {(r["file"], r["frame"]): r for r in rows}
    return [index.get((str(p), int(f)), {"file": str(p), "frame": int(f),
                                         "error": "no result"}) for p, f in items]


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def confident_rows(rows: list[dict[str, Any]], min_confidence: float) -> list[dict[str, Any]]:
    """The rows whose lattice verdict has at least ``min_confidence`` (unreadable frames stay:
    their error says why they have no answer; misses stay: they have no lattice verdict)."""
    return [r for r in rows if r.get("error") or r.get("hit") is False
            or (r.get("confidence") or 0.0) >= min_confidence]


def write_table(rows: list[dict[str, Any]], out: Path) -> Path:
    """CSV or Parquet by suffix, written atomically."""
    import pandas as pd

    from xray_platform.io.atomic import atomic_open

    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("frame", "n_spots", "n_spots_no_ice", "n_lattices_indexed"):  # ints beside nulls
        df[c] = df[c].astype("Int64")
    for c in ("hit", "is_multi", "ice", "resolution_disagrees", "indexed_with_cell"):
        df[c] = df[c].astype("boolean")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        with atomic_open(out, "wb") as fh:
            df.to_parquet(fh, index=False)
    elif out.suffix in (".csv", ".tsv"):
        with atomic_open(out, "w") as fh:
            df.to_csv(fh, index=False, sep="\t" if out.suffix == ".tsv" else ",")
    else:
        raise ValueError(f"--out {out}: use a .csv, .tsv or .parquet file")
    return out
