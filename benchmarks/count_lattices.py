"""How many lattices the real thaumatin frames and nanoBragg's shots hold, by known-cell indexing
(core/indexing.py): the evidence for the real hit's lattice label, which no file states.

Per frame: spots, the lattices found (spots each explains, what chance would explain, the
misorientation from the first), the refined distance, seconds. Then, for the
first frame's first lattice, the spots it alone explains as the Ewald-sphere tolerance eps
grows: if its mosaic spread (not further lattices) made the other spots, they would join it.

    python benchmarks/count_lattices.py                   # the thaumatin hit + miss, nanoBragg
    python benchmarks/count_lattices.py FRAME --cell 57.8,57.8,150.2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xray_platform.core.indexing import (
    chance,
    count_lattices,
    misorientation_deg,
    near,
    predict_spots,
)
from xray_platform.io.formats import read_frame
from xray_platform.physics.crystal import CRYSTAL_FORMS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
THAUMATIN = CRYSTAL_FORMS["thaumatin"].cell.edges


def cases() -> list[tuple[Path, tuple[float, float, float], str]]:
    """The frames with a known orthogonal cell: (file, cell, what is known of its lattices)."""
    out = [(SHARED / "real" / "thau_3_2_0002.cbf.bz2", THAUMATIN, "real hit, unlabelled"),
           (SHARED / "real" / "thau_3_2_0017.cbf.bz2", THAUMATIN, "real miss")]
    for js in sorted((SHARED / "nanobragg-ref").glob("ref_*.json")):
        ref = json.loads(js.read_text())
        cell = ref.get("unit_cell") or [*THAUMATIN, 90, 90, 90]
        if all(abs(x - 90) < 1e-6 for x in cell[3:]):
            out.append((js.with_suffix(".cbf"), tuple(cell[:3]),
                        f"nanoBragg {ref.get('crystal_form')}, {ref['n_lattices']} lattice(s)"))
    return out


def report(path: Path, cell: tuple[float, float, float], known: str) -> None:
    t = time.perf_counter()
    r = count_lattices(read_frame(path), cell)
    s = time.perf_counter() - t
    print(f"\n{path.name} ({known}; cell {'/'.join(f'{x:g}' for x in cell)} Å): {r.n_spots} "
          f"spots, {r.n_lattices} lattice(s) explain {r.explained} "
          f"(distance {r.info.distance_mm:.1f} mm refined; {s:.1f} s)")
    for k, lat in enumerate(r.lattices, start=1):
        mis = f", {misorientation_deg(r.lattices[0].A, lat.A):.2f}° from lattice 1" if k > 1 \
            else ""
        print(f"  lattice {k}: {lat.n_spots} spots (chance {lat.chance:.1f}){mis}")


def eps_scan(path: Path, cell: tuple[float, float, float]) -> None:
    r = count_lattices(read_frame(path), cell, max_lattices=1)
    if not r.lattices:
        return
    A = r.lattices[0].A
    print(f"\n{path.name}, lattice 1 alone vs the Ewald tolerance eps (1/Å):")
    print("| eps | spots explained | chance | above chance |\n|---|---|---|---|")
    for eps in (0.002, 0.004, 0.008, 0.012, 0.016, 0.024):
        pred = predict_spots(A, r.info, r.d_min, eps)
        n = int(near(r.spots, pred, 2.5).sum())
        c = chance(pred, r.spots, r.n_spots, 2.5)
        print(f"| {eps} | {n} of {r.n_spots} | {c:.0f} | {n - c:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("frames", type=Path, nargs="*")
    ap.add_argument("--cell", default=",".join(map(str, THAUMATIN)),
                    help="a,b,c (Å) of an orthogonal cell, for the FRAMES given")
    a = ap.parse_args()
    cell = tuple(float(x) for x in a.cell.split(","))
    todo = [(f, cell, "given") for f in a.frames] if a.frames else cases()
    for path, c, known in todo:
        report(path, c, known)
    eps_scan(todo[0][0], todo[0][1])


if __name__ == "__main__":
    main()
