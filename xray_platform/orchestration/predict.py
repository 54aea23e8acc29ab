"""`xrp predict` on Ray Data: detector files (folders, globs, multi-frame HDF5) -> a per-image
table (file, frame, geometry, hit, p_multi, resolution, sigma, timings), like the per-image
reports crystallographers know from DIALS. The work per frame is xray_platform.core.answer, the
table's columns core/schema.py, writing it reports/table.py (none of them imports Ray).

Callers run :func:`xray_platform.orchestration.env.prepare_ray_env` before importing this module."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray

from xray_platform.core.schema import ALWAYS_RESOLUTION, ANSWER_JSON, COLUMNS
from xray_platform.reports.table import table_row


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
        rows = [table_row(r) for r in recs]
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
