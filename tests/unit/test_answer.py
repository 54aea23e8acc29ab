"""Frame -> answer in one process (the core that `xrp predict` and the Serve graph share)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REAL, needs_real

from xray_platform.core import answer as core_answer
from xray_platform.core.answer import (
    load_file,
    map_grids,
    predict_frames,
    prepare_frame,
    wants_resolution,
)
from xray_platform.core.hitfinder import HIT_GRID
from xray_platform.core.models import build_model, save_model
from xray_platform.core.preprocess import Preprocessing
from xray_platform.io.formats import read_frame
from xray_platform.physics.qgrid import QGrid

HIT, MISS = REAL / "thau_3_2_0002.cbf.bz2", REAL / "thau_3_2_0017.cbf.bz2"


def _model(tmp: Path, task: str, size: int, d_min: float = 1.2,
           background: str = "none", d_max: float | None = None) -> Path:
    torch.manual_seed(0)
    label = "is_multi" if task == "lattice" else "d_vis"
    prep = Preprocessing(size, d_min, background=background, d_max_A=d_max)
    return save_model(tmp / f"{task}.pt", build_model(task, 18),
                      {"preprocessing": prep.to_dict(), "label": label})


@pytest.fixture(scope="module")
def frames() -> dict:
    if not REAL.is_dir():
        pytest.skip("real detector data not available")
    return {"hit": read_frame(HIT), "miss": read_frame(MISS)}


@needs_real
def test_the_real_hit_and_miss_are_told_apart(frames) -> None:
    preps = [Preprocessing(128, 1.2), Preprocessing(128, 2.4)]
    hit = prepare_frame(frames["hit"], preps)
    miss = prepare_frame(frames["miss"], preps)
    assert hit.hit and hit.n_spots > 100
    assert not miss.hit and miss.n_spots < 15
    for p in preps:
        x = hit.inputs[core_answer.key(p)]
        assert x.shape == (128, 128) and np.isfinite(x).all() and 0 <= x.min() <= x.max() < 1.5
    assert hit.info["wavelength_A"] == pytest.approx(0.96859, abs=1e-4)
    assert hit.timings_ms["grid_ms"] > 0


@needs_real
def test_a_frame_is_mapped_once_when_the_other_grids_derive(frames, monkeypatch) -> None:
    calls = []
    real = core_answer.frame_to_grid
    monkeypatch.setattr(core_answer, "frame_to_grid",
                        lambda f, g, grid: calls.append(grid) or real(f, g, grid))
    img, geom = frames["hit"].image, frames["hit"].geometry()
    out = map_grids(img, geom, [QGrid(128, 1.2), QGrid(64, 2.4), HIT_GRID])
    assert calls == [HIT_GRID] and set(out) == {QGrid(128, 1.2), QGrid(64, 2.4), HIT_GRID}
    calls.clear()
    map_grids(img, geom, [QGrid(512, 1.2), HIT_GRID])  # the model's 512 grid pools to 256
    assert calls == [QGrid(512, 1.2)]
    calls.clear()
    map_grids(img, geom, [QGrid(100, 1.2), HIT_GRID])  # not derivable: both mapped
    assert sorted(g.size for g in calls) == [100, 256]


def test_routing_rule() -> None:
    hit = core_answer.Prepared({}, True, 40, {})
    miss = core_answer.Prepared({}, False, 3, {})
    assert not wants_resolution(miss, None, True)
    assert wants_resolution(hit, None, False)  # no lattice model: every hit
    assert wants_resolution(hit, 0.2, False) and not wants_resolution(hit, 0.8, False)
    assert wants_resolution(hit, 0.8, True)


@needs_real
def test_predict_frames_answers_and_names_its_models(frames, tmp_path: Path) -> None:
    models = {"lattice": load_file("lattice", _model(tmp_path, "lattice", 64)),
              "resolution": load_file("resolution", _model(tmp_path, "resolution", 128),
                                      source="zoo:xrp-zoo-resolution/1", name="xrp-zoo",
                                      version="1")}
    rows = predict_frames([frames["hit"], frames["miss"]], models, always_resolution=False)
    hit, miss = rows
    assert hit["hit"] and not miss["hit"]
    assert 0 <= hit["p_multi"] <= 1 and miss["resolution_A"] is None
    assert hit["models"]["resolution"] == {"name": "xrp-zoo", "version": "1",
                                           "source": "zoo:xrp-zoo-resolution/1"}
    assert hit["models"]["lattice"]["source"].endswith("lattice.pt")
    if hit["p_multi"] < 0.5:  # routed to the regressor
        assert 0.8 < hit["resolution_A"] < 12 and hit["resolution_sigma_A"] > 0
    else:  # routed past it: only single-lattice hits were asked for
        assert hit["resolution_A"] is None
    hit, _ = predict_frames([frames["hit"], frames["miss"]], models)  # by default: every hit
    assert 0.8 < hit["resolution_A"] < 12 and hit["resolution_sigma_A"] > 0
    with pytest.raises(ValueError, match="is a lattice model"):
        load_file("resolution", tmp_path / "lattice.pt")


@needs_real
@pytest.mark.parametrize("options", [{"background": "radial-median"}, {"d_max": 10.0}])
def test_models_on_one_grid_get_their_own_background_subtraction(frames, tmp_path: Path,
                                                                 options: dict) -> None:
    """A lattice model reading background-subtracted (or low-resolution masked) inputs next to
    a resolution model reading raw ones on the same grid: each is fed the input it was trained
    on."""
    from xray_platform.core.preprocess import normalise

    models = {"lattice": load_file("lattice", _model(tmp_path, "lattice", 64, **options)),
              "resolution": load_file("resolution", _model(tmp_path, "resolution", 64))}
    preps = [m.prep for m in models.values()]
    prepared = prepare_frame(frames["hit"], preps)
    counts = map_grids(frames["hit"].image, frames["hit"].geometry(), [preps[0].grid, HIT_GRID])
    for task, m in models.items():
        x = prepared.inputs[core_answer.input_key(m.describe())]
        assert np.allclose(x, normalise(counts[m.prep.grid], m.prep)[0, 0].numpy()), task
    lat, res = (prepared.inputs[core_answer.key(p)] for p in preps)
    assert lat.sum() < res.sum()  # the background (or the low-resolution cells) came off
