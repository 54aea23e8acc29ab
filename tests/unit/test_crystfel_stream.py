"""Hits out as a CrystFEL stream (reports/crystfel_stream.py): nanoBragg's three insulin
lattices come back as three crystals whose reciprocal bases put each indexed spot at its own
d-spacing, with a peak list of every spot and a geometry section of the frame's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from helpers import NANOBRAGG, needs_nanobragg

from xray_platform.core.answer import predict_frames
from xray_platform.io.formats import read_frame
from xray_platform.reports.crystfel_stream import write_stream


def _crystals(chunk: str) -> list[tuple[np.ndarray, list[tuple[int, int, int, float, float]]]]:
    """(rows a*, b*, c* in 1/nm; [(h, k, l, fs, ss)]) per crystal of a chunk."""
    out = []
    for block in chunk.split("--- Begin crystal")[1:]:
        star = np.array([[float(x) for x in re.search(rf"{n} = (\S+) (\S+) (\S+) nm", block)
                          .groups()] for n in ("astar", "bstar", "cstar")])
        refl = block.split("Reflections measured after indexing")[1].split("End of refl")[0]
        rows = [ln.split() for ln in refl.strip().splitlines()[1:]]
        out.append((star, [(int(r[0]), int(r[1]), int(r[2]), float(r[7]), float(r[8]))
                           for r in rows]))
    return out


@needs_nanobragg
def test_three_lattices_come_out_as_three_crystals(tmp_path: Path) -> None:
    (a,) = predict_frames([read_frame(NANOBRAGG / "ref_006.cbf")], {}, with_spots=True)
    assert a["n_lattices_indexed"] == 3
    assert write_stream(tmp_path / "x.stream", [a]) == 1
    text = (tmp_path / "x.stream").read_text()
    assert "----- Begin geometry file -----" in text and "clen = " in text
    peaks = text.split("Peaks from peak search")[1].split("End of peak list")[0]
    by_pos = {(float(r[0]), float(r[1])): 10.0 / float(r[2])
              for r in (ln.split() for ln in peaks.strip().splitlines()[1:])}
    assert len(by_pos) == len(a["spots"]["d_A"]) == int(re.search(r"num_peaks = (\d+)",
                                                                  text).group(1))
    crystals = _crystals(text)
    assert [len(refl) for _, refl in crystals] == [lat["spots"] for lat in a["lattices"]]
    for star, refl in crystals:
        for h, k, l_, fs, ss in refl:
            d = 10.0 / np.linalg.norm(np.array([h, k, l_]) @ star)  # |h a* + k b* + l c*|
            spot_d = min(by_pos.items(), key=lambda kv: abs(kv[0][0] - fs) + abs(kv[0][1] - ss))
            assert abs(d / spot_d[1] - 1) < 0.02, (h, k, l_, d, spot_d)
