"""Hits as a CrystFEL stream (format 2.3), so they can go on to processing: per hit its spots
("Peaks from peak search") and every lattice indexing found ("--- Begin crystal": cell,
reciprocal basis, the spots it explains with their indices). No Ray.

Frame: xrp's lab frame (design.md): +z along the beam, x along a flat detector's fast axis and
y along its slow axis (x, y, z right-handed), the geometry section written in the same frame;
vectors in nm^-1 as CrystFEL writes them. Intensities are the spot finder's background-
subtracted sums (core/spots.py), not integrated reflections: merge them with care.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from xray_platform import __version__
from xray_platform.physics.geometry import energy_keV


def geometry_section(answer: dict[str, Any]) -> str:
    """A CrystFEL geometry file for a flat detector (one panel p0) from an answer's header
    fields; for a multi-panel frame the beam and distance only (its panels are in its own
    geometry)."""
    px = answer["pixel_size_mm"]
    f0, s0 = answer["beam_center_px"]
    n_slow, n_fast = answer["shape"][-2:]
    lines = [f"; written by xrp {__version__} from {answer['file']}",
             f"photon_energy = {1e3 * energy_keV(answer['wavelength_A']):.2f}",
             f"clen = {answer['distance_mm'] / 1e3:.6f}", f"res = {1e3 / px:.4f}",
             "adu_per_photon = 1"]
    if len(answer["shape"]) == 3:  # the panels are the frame's (its CBF or .geom file)
        return "\n".join(lines + ["; a multi-panel detector: the peaks' fs/ss are within "
                                  "their panel pN, as the frame's own geometry numbers them"])
    lines += ["p0/min_fs = 0", f"p0/max_fs = {n_fast - 1}", "p0/min_ss = 0",
              f"p0/max_ss = {n_slow - 1}", f"p0/corner_x = {-f0:.3f}",
              f"p0/corner_y = {-s0:.3f}", "p0/fs = +1.0x", "p0/ss = +1.0y"]
    return "\n".join(lines)


def _star(T: np.ndarray) -> np.ndarray:
    """Reciprocal basis vectors (rows a*, b*, c*) in nm^-1 of the real basis T (rows, Å)."""
    return np.linalg.inv(np.asarray(T, float)).T * 10.0


def chunk(answer: dict[str, Any], serial: int) -> str:
    """One frame's chunk: header lines, its peaks and its crystals (a hit answered with
    ``with_spots``; a miss gets an empty peak list)."""
    spots = answer.get("spots") or {}
    lattices = answer.get("lattices") or []
    wl = answer["wavelength_A"]
    out = ["----- Begin chunk -----", f"Image filename: {answer['file']}",
           f"Event: //{answer['frame']}", f"Image serial number: {serial}",
           f"hit = {int(bool(answer['hit']))}",
           f"indexed_by = {'xrp' if lattices else 'none'}",
           f"n_indexing_tries = {1 if answer['hit'] else 0}",
           f"photon_energy_eV = {1e3 * energy_keV(wl):.6f}",
           f"average_camera_length = {answer['distance_mm'] / 1e3:.6f} m",
           f"num_peaks = {len(spots.get('d_A', []))}", "num_saturated_peaks = 0",
           "Peaks from peak search", "  fs/px   ss/px (1/d)/nm^-1   Intensity  Panel"]
    for f, s, d, i, p in zip(spots.get("fast_px", []), spots.get("slow_px", []),
                             spots.get("d_A", []), spots.get("intensity", []),
                             spots.get("panel", []), strict=True):
        out.append(f"{f:7.2f} {s:7.2f} {10.0 / d:10.2f} {i:11.2f}   p{p}")
    out.append("End of peak list")
    for n, lat in enumerate(lattices):
        out += _crystal(lat, n, spots, answer.get("d_min_spots_A"))
    out.append("----- End chunk -----")
    return "\n".join(out) + "\n"


def _crystal(lat: dict[str, Any], n: int, spots: dict[str, list], d_min: float | None
             ) -> list[str]:
    a, b, c, al, be, ga = lat["cell"]
    star = _star(lat["basis_A"])
    mine = [k for k, x in enumerate(spots.get("lattice", [])) if x == n]
    out = ["--- Begin crystal",
           f"Cell parameters {a / 10:.5f} {b / 10:.5f} {c / 10:.5f} nm, "
           f"{al:.5f} {be:.5f} {ga:.5f} deg"]
    out += [f"{name} = {v[0]:+.7f} {v[1]:+.7f} {v[2]:+.7f} nm^-1"
            for name, v in zip(("astar", "bstar", "cstar"), star, strict=True)]
    out += ["lattice_type = triclinic", "centering = P", "unique_axis = *",
            f"diffraction_resolution_limit = {10.0 / d_min:.2f} nm^-1 or {d_min:.2f} A"
            if d_min else "diffraction_resolution_limit = 0.00 nm^-1 or 0.00 A",
            f"num_reflections = {len(mine)}", "num_saturated_reflections = 0",
            "num_implausible_reflections = 0", "Reflections measured after indexing",
            "   h    k    l          I   sigma(I)       peak background  fs/px  ss/px panel"]
    for k in mine:
        out.append(f"{spots['h'][k]:4d} {spots['k'][k]:4d} {spots['l'][k]:4d} "
                   f"{spots['intensity'][k]:10.2f} {spots['sigma'][k]:10.2f} "
                   f"{0.0:10.2f} {0.0:10.2f} {spots['fast_px'][k]:6.1f} "
                   f"{spots['slow_px'][k]:6.1f} p{spots['panel'][k]}")
    out += ["End of reflections", "--- End crystal"]
    return out


def write_stream(path: Path, answers: Iterable[dict[str, Any]], hits_only: bool = True
                 ) -> int:
    """Write the answers (each with ``spots``) as a stream, atomically; the geometry section
    from the first. Returns the chunks written (hits only unless ``hits_only`` is False)."""
    from xray_platform.io.atomic import atomic_open

    todo = [a for a in answers if not a.get("error") and (a.get("hit") or not hits_only)]
    with atomic_open(path) as fh:
        fh.write(f"CrystFEL stream format 2.3\nGenerated by xrp {__version__}\n")
        if todo:
            fh.write("----- Begin geometry file -----\n" + geometry_section(todo[0]) +
                     "\n----- End geometry file -----\n")
        for serial, a in enumerate(todo, start=1):
            fh.write(chunk(a, serial))
    return len(todo)
