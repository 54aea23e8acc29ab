"""The one answer schema: every field of a frame's answer (HTTP JSON, the `xrp predict` table),
with its type and meaning; units are in the names (_A: Å, _mm, _ms). The Serve app builds its
OpenAPI model from ANSWER, `xrp predict --columns` prints TABLE, COLUMNS orders the table's
columns (reports/table.py writes it), tests check all three against what core/answer.py and
reports/table.py produce. Null (None, an empty cell) always means
"not computed" (a miss has no resolution and no lattice verdict)."""

from __future__ import annotations

from typing import Any

#: The routing default: every hit gets a resolution (d_vis pools all lattices, design.md);
#: False routes multi-lattice hits past the regressor, resonet's way (xrp predict
#: --single-lattice-only, the service's always_resolution=false).
ALWAYS_RESOLUTION = True

# name -> (JSON type, description)
ANSWER: dict[str, tuple[Any, str]] = {
    "file": (str, "The detector file (HTTP: the upload's name)."),
    "frame": (int, "Frame index within the file (0 for single-frame files)."),
    "format": (str, "The reader that decoded it (cbf, eiger-hdf5, smv, npy)."),
    "detector": (str, "The detector the header names, if any."),
    "wavelength_A": (float, "Wavelength (Å), from the header or an override."),
    "distance_mm": (float, "Sample-detector distance (mm); for a multi-panel detector the "
                           "distance to the nearest panel plane."),
    "pixel_size_mm": (float, "Pixel size (mm)."),
    "beam_center_px": (list, "Beam centre [fast, slow] in pixels (first pixel's centre = 0); "
                             "for a multi-panel detector in the pixels of the panel the beam "
                             "meets first (often in a gap)."),
    "shape": (list, "Frame shape [slow, fast] in pixels, or [panels, slow, fast]."),
    "hit": (bool, "At least 15 Bragg spots (the label definition of a hit)."),
    "n_spots": (int, "Spots the hit finder counts on the reciprocal-space grid."),
    "n_spots_no_ice": (int, "Spots off the ice rings' d-spacings (as DIALS counts them)."),
    "ice": (bool, "Hexagonal/cubic ice powder rings present (core/ice.py)."),
    "ice_rings": (list, "The ice rings seen: [{d_A, strength, z}], strongest first; strength "
                        "is the excess over the background in units of it."),
    "p_multi": (float, "P(two or more lattices) of a hit: the lattices indexing found and "
                       "the lattice model's p_multi_cnn, fused and calibrated on simulated "
                       "validation shots (core/verdict.py); null for misses."),
    "is_multi": (bool, "The lattice verdict: p_multi >= 0.5; null for misses."),
    "confidence": (float, "max(p_multi, 1 - p_multi): how likely the lattice verdict is right."),
    "p_multi_cnn": (float, "The lattice model's own P(two or more lattices) (calibrated if its "
                           "file says so); null for misses and without a lattice model."),
    "resolution_A": (float, "Visible resolution d_vis of a hit (Å, all lattices pooled) from "
                            "the resolution model; null for misses, and for multi-lattice hits "
                            "when only single-lattice hits were asked for."),
    "resolution_sigma_A": (float, "The model's 1-sigma uncertainty of resolution_A (Å)."),
    "d_min_spots_A": (float, "Classical d_min from the spots off the ice rings (Å, "
                             "core/dmin.py); null for misses."),
    "d_min_spots_sigma_A": (float, "Its uncertainty (Å)."),
    "resolution_disagrees": (bool, "resolution_A and d_min_spots_A differ by more than 2 "
                                   "combined sigma; null when one is missing."),
    "n_lattices_indexed": (int, "Lattices that explain the hit's spots, each far above "
                                "chance: of the given cell (--cell, core/indexing.py), else "
                                "found from the spots alone (core/autoindex.py); null for "
                                "misses."),
    "lattices": (list, "Per lattice found by indexing, first found first: [{spots (it "
                       "explains), chance (what the same cell in random orientations would), "
                       "cell [a, b, c (Å), alpha, beta, gamma (deg)] (the reduced primitive "
                       "cell without --cell), basis_A (rows a, b, c in Å, lab frame, +z "
                       "along the beam), misorientation_deg (from the first; null when the "
                       "cells differ)}]."),
    "fraction_indexed": (float, "Fraction of the hit's spots (full resolution, d <= 30 Å) the "
                                "lattices explain."),
    "indexed_with_cell": (bool, "Whether the hit was indexed with a given cell (--cell) or "
                                "without one; null for misses."),
    "spots": (dict, "Only when asked for (form field spots=true; `xrp predict --stream`): a "
                    "hit's spots at full resolution (d <= 30 Å, brightest first) as columns: "
                    "panel, fast_px, slow_px (pixel centres at integer indices), intensity "
                    "and sigma (background-subtracted counts), d_A, ice (on an ice ring), "
                    "lattice (the one that explains it, or -1), h, k, l (its indices in that "
                    "lattice; 0 0 0 when unexplained); null for misses."),
    "models": (dict, "task -> {name, version, source} of the models that answered."),
    "timings_ms": (dict, "Milliseconds per step (decode, grid, hit finder, ice, d_min, models, "
                         "total)."),
}

#: Columns of the `xrp predict` table beyond the answer's flat fields.
_TABLE_ONLY = {
    "beam_center_x_px": "Beam centre, fast axis (pixels).",
    "beam_center_y_px": "Beam centre, slow axis (pixels).",
    "ice_rings_A": "The ice rings' d-spacings (Å), space-separated, strongest first.",
    "decode_ms": "Reading and decoding the frame (ms).",
    "grid_ms": "Mapping it onto the reciprocal-space grids (ms).",
    "hitfinder_ms": "Hit finder (ms).",
    "ice_ms": "Ice-ring test (ms).",
    "d_min_spots_ms": "Classical d_min (ms).",
    "spots_ms": "Spots at full resolution, for indexing (ms).",
    "indexing_ms": "Indexing, with or without a cell (ms).",
    "lattice_spots": "Spots each indexed lattice explains, space-separated, first found first.",
    "lattice_ms": "Lattice model, per frame of its batch (ms).",
    "resolution_ms": "Resolution model, per frame of its batch (ms).",
    "lattice_model": "The lattice model that answered (NAME/VERSION or its file).",
    "resolution_model": "The resolution model that answered.",
    "error": "Why the frame has no answer (unreadable file, geometry out of range); else empty.",
}
_NOT_IN_TABLE = {"beam_center_px", "shape", "ice_rings", "lattices", "models", "timings_ms",
                 "spots"}

TABLE: dict[str, str] = {**{k: d for k, (_, d) in ANSWER.items() if k not in _NOT_IN_TABLE},
                         **_TABLE_ONLY}

#: The columns of the per-image table (`xrp predict`, `xrp runs export`), in their order.
COLUMNS: list[str] = [
    "file", "frame", "format", "detector", "wavelength_A", "distance_mm",
    "pixel_size_mm", "beam_center_x_px", "beam_center_y_px", "hit", "n_spots",
    "n_spots_no_ice", "ice", "ice_rings_A", "p_multi", "is_multi", "confidence",
    "p_multi_cnn", "resolution_A", "resolution_sigma_A", "d_min_spots_A",
    "d_min_spots_sigma_A", "resolution_disagrees", "n_lattices_indexed",
    "lattice_spots", "fraction_indexed", "indexed_with_cell", "decode_ms", "grid_ms",
    "hitfinder_ms", "ice_ms", "d_min_spots_ms", "spots_ms", "indexing_ms", "lattice_ms",
    "resolution_ms", "lattice_model", "resolution_model", "error"]

#: The extra row key holding a frame's whole answer as JSON (`xrp predict --stream`), beside
#: the table's columns; never written to the table.
ANSWER_JSON = "answer_json"
