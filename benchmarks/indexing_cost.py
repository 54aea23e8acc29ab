r"""What indexing adds to a hit's answer, steady state, one thread (issue 30's budget: spots +
indexing <= 150 ms with a known cell, <= 300 ms without, on a PILATUS 6M hit): the spots
(core/spots.py, the pixel -> cell map already cached for the geometry, as on a run) and the
lattices without and with the cell, on the PILATUS 6M frames of ../shared/data (nanoBragg's
shots and the real thaumatin hit). Median of ``--repeat`` runs after one warm-up.

    python benchmarks/indexing_cost.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from xray_platform.core.autoindex import autoindex, index_with_cell
from xray_platform.core.hitfinder import HIT_GRID
from xray_platform.core.spots import SpotFinder
from xray_platform.io.formats import read_frame
from xray_platform.physics.qgrid import frame_to_grid

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def frames() -> list[tuple[str, Path, tuple[float, ...]]]:
    out = [("real thaumatin hit (4 lattices)", SHARED / "real" / "thau_3_2_0002.cbf.bz2",
            (57.8, 57.8, 150.2, 90, 90, 90))]
    for js in sorted((SHARED / "nanobragg-ref").glob("ref_*.json")):
        ref = json.loads(js.read_text())
        if ref.get("unit_cell"):
            out.append((f"nanoBragg {ref['crystal_form']} ({ref['n_lattices']})",
                        js.with_suffix(".cbf"), tuple(ref["unit_cell"])))
    return out


def timed(fn, *args, repeat: int) -> tuple[object, float]:
    fn(*args)  # warm-up: imports, caches of this geometry
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn(*args)
        times.append(1e3 * (time.perf_counter() - t))
    return result, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| frame | spots | spots ms | no cell: lattices, ms | known cell: lattices, ms |")
    print("|---|---|---|---|---|")
    rows = []
    for name, path, cell in frames():
        frame = read_frame(path)
        geom = frame.geometry()
        counts = frame_to_grid(torch.as_tensor(frame.image), geom, HIT_GRID).numpy()
        spots, t_spots = timed(SpotFinder().find, frame.image, geom, counts, repeat=a.repeat)
        free, t_free = timed(autoindex, spots, geom, repeat=a.repeat)
        known, t_known = timed(index_with_cell, spots, geom, cell, repeat=a.repeat)
        rows.append((t_spots, t_free, t_known))
        print(f"| {name} | {len(spots)} | {t_spots:.0f} | {free.n_lattices}, {t_free:.0f} | "
              f"{known.n_lattices}, {t_known:.0f} |", flush=True)
    for i, what in ((1, "no cell"), (2, "known cell")):
        total = sorted(r[0] + r[i] for r in rows)
        print(f"spots + indexing, {what}: median {statistics.median(total):.0f} ms, "
              f"max {total[-1]:.0f} ms")


if __name__ == "__main__":
    main()
