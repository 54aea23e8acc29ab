"""The one preprocessing: frame + geometry -> grid counts -> network input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xray_platform.core.preprocess import Preprocessing, frame_to_counts, model_input, normalise
from xray_platform.physics.geometry import Geometry, detector

PIL = detector("pilatus6m")
GEOM = Geometry(PIL, 250.0, 1.0, (1231.0, 1263.0))
PREP = Preprocessing(128, 1.2)


def _frame(value: float = 2.0) -> np.ndarray:
    frame = np.full(PIL.shape, value, dtype=np.int32)
    frame[PIL.gap_mask()] = -1
    return frame


def test_a_single_bright_pixel_survives_downsampling() -> None:
    frame = _frame()
    s, f = 700, 1600  # a pixel on a module, away from the gaps
    frame[s, f] = 5000
    counts = frame_to_counts(frame, GEOM, PREP)
    assert counts.shape == (128, 128)
    gx, gy = PREP.grid.g_of_pixels(GEOM, torch.tensor([float(f)]), torch.tensor([float(s)]))
    row, col = PREP.grid.cell_index(gx, gy)
    assert float(counts[row, col]) == 5000.0  # max pooling keeps the spot's peak
    assert float(counts.max()) == 5000.0
    # elsewhere the flat background stays the background
    valid = counts >= 0
    assert float(torch.median(counts[valid])) == 2.0


def test_gaps_are_masked_and_normalised_to_zero() -> None:
    counts = frame_to_counts(_frame(), GEOM, PREP)
    assert (counts == -1).any() and (counts == 2).any()
    x = normalise(counts, PREP)
    assert x.shape == (1, 1, 128, 128) and x.dtype == torch.float32
    assert float(x[0, 0][counts == -1].abs().max()) == 0.0
    assert float(x.max()) == pytest.approx(np.log1p(2.0) / PREP.scale)


def test_model_input_and_bad_frames() -> None:
    assert model_input(_frame(), GEOM, PREP).shape == (1, 1, 128, 128)
    bad = _frame().astype(np.float32)
    bad[10, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frame_to_counts(bad, GEOM, PREP)
    with pytest.raises(ValueError, match="does not match the geometry"):
        frame_to_counts(np.zeros((100, 100)), GEOM, PREP)
    with pytest.raises(ValueError, match="does not match the model"):
        normalise(np.zeros((64, 64)), PREP)
    with pytest.raises(ValueError, match="unknown input transform"):
        Preprocessing(128, 1.2, transform="sqrt")
    assert Preprocessing.from_dict(PREP.to_dict()) == PREP
