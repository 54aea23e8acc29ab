"""How many lattices the real thaumatin frames and nanoBragg's shots hold, by known-cell indexing
(core/indexing.py): the evidence for the real hit's lattice label, which no file states.

Per frame: spots, the lattices found (spots each explains, what chance would explain, the
misorientation from the first), the refined distance, seconds. Then, for the
first frame's first lattice, the spots it alone explains as the Ewald-sphere tolerance eps
grows: if its mosaic spread (not further lattices) made the other spots, they would join it.

    python benchmarks/count_lattices.py                   # the thaumatin hit + miss, nanoBragg
    python benchmarks/count_lattices.py FRAME --cell 92.8,92.8,130.4,90,90,120
    python benchmarks/count_lattices.py --no-cell   # cells from the spots (core/autoindex.py)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xray_platform.core.indexing import (
    as_cell,
    chance,
    count_lattices,
    explains,
    misorientation_deg,
)
from xray_platform.io.formats import read_frame
from xray_platform.physics.crystal import CRYSTAL_FORMS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
THAUMATIN = CRYSTAL_FORMS["thaumatin"].cell
CSPAD_THERMOLYSIN = CRYSTAL_FORMS["thermolysin"].cell


def cases() -> list[tuple[Path, tuple[float, ...], str]]:
    """The frames with a known cell: (file, cell, what is known of its lattices)."""
    cell, therm = THAUMATIN.parameters, CSPAD_THERMOLYSIN.parameters
    out = [(SHARED / "real" / "thau_3_2_0002.cbf.bz2", cell, "real hit, unlabelled"),
           (SHARED / "real" / "thau_3_2_0017.cbf.bz2", cell, "real miss"),
           (SHARED / "real" / "cspad_thermolysin_0401.cbf", therm, "real CSPAD, 64 ASICs")]
    for js in sorted((SHARED / "nanobragg-ref").glob("ref_*.json")):
        ref = json.loads(js.read_text())
        out.append((js.with_suffix(".cbf"), tuple(ref.get("unit_cell") or cell),
                    f"nanoBragg {ref.get('crystal_form')}, {ref['n_lattices']} lattice(s)"))
    return out


def report(path: Path, cell: tuple[float, ...], known: str) -> None:
    t = time.perf_counter()
    r = count_lattices(read_frame(path), cell)
    s = time.perf_counter() - t
    print(f"\n{path.name} ({known}; cell {'/'.join(f'{x:g}' for x in cell)}): {r.n_spots} "
          f"spots, {r.n_lattices} lattice(s) explain {r.explained} "
          f"(distance {r.geom.distance_mm:.1f} mm refined; {s:.1f} s)")
    for k, lat in enumerate(r.lattices, start=1):
        mis = f", {misorientation_deg(r.lattices[0].A, lat.A):.2f}° from lattice 1" if k > 1 \
            else ""
        print(f"  lattice {k}: {lat.n_spots} spots (chance {lat.chance:.1f}){mis}")


def report_no_cell(path: Path, known: str) -> None:
    """The lattices found without a cell (core/autoindex.py), with the cells they have."""
    from xray_platform.core.autoindex import autoindex
    from xray_platform.core.spots import SpotFinder

    frame = read_frame(path)
    geom = frame.geometry()
    t = time.perf_counter()
    r = autoindex(SpotFinder().find(frame.image, geom), geom)
    s = time.perf_counter() - t
    cells = "; ".join(f"{lat.n_spots} spots (chance {lat.chance:.1f}), cell "
                      + "/".join(f"{x:.1f}" for x in lat.cell) for lat in r.lattices)
    print(f"{path.name} ({known}): {len(r.spots)} spots, {r.n_lattices} lattice(s) "
          f"({s:.2f} s){': ' + cells if cells else ''}")


def eps_scan(path: Path, cell: tuple[float, ...]) -> None:
    r = count_lattices(read_frame(path), cell, max_lattices=1)
    if not r.lattices:
        return
    A = r.lattices[0].U @ as_cell(cell).B()
    print(f"\n{path.name}, lattice 1 alone vs the Ewald tolerance eps (1/Å):")
    print("| eps | spots explained | chance | above chance |\n|---|---|---|---|")
    radius = 2.5 * r.geom.pixel_mm
    for eps in (0.002, 0.004, 0.008, 0.012, 0.016, 0.024):
        n = int(explains(A, r.spots, r.geom, r.d_min, eps, radius).sum())
        ch = chance(A, r.spots, r.geom, r.d_min, eps, radius)
        print(f"| {eps} | {n} of {r.n_spots} | {ch:.0f} | {n - ch:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("frames", type=Path, nargs="*")
    ap.add_argument("--cell", default="57.8,57.8,150.2",
                    help="a,b,c[,alpha,beta,gamma] (Å, deg) of the cell, for the FRAMES given")
    ap.add_argument("--no-cell", action="store_true",
                    help="find the cells from the spots instead (core/autoindex.py)")
    a = ap.parse_args()
    cell = tuple(float(x) for x in a.cell.split(","))
    todo = [(f, cell, "given") for f in a.frames] if a.frames else cases()
    if a.no_cell:
        for path, _, known in todo + [(SHARED / "real" / n, None, "real") for n in (
                "DLS_I03_smargon_0001.cbf.gz", "DLS_I23_P12M_thau_00001.cbf.gz",
                "dlsnxs2cbf_therm_0001.cbf.gz", "rayonix340_kapton_hit.cbf")
                if not a.frames]:
            report_no_cell(path, known)
        return
    for path, c, known in todo:
        report(path, c, known)
    eps_scan(todo[0][0], todo[0][1])


if __name__ == "__main__":
    main()
