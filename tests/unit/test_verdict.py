"""The lattice verdict (core/verdict.py): the logistic fit recovers known coefficients, the
features follow the indexing's regimes, the shipped coefficients load and call two lattices
far above chance multi, and answers give misses no lattice verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xray_platform.core import answer as core_answer
from xray_platform.core.verdict import CASES, FEATURES, Verdict, features, fit, load, shipped
from xray_platform.physics.labels import MIN_VISIBLE_REFLECTIONS, visibility_labels


def _indexing(n: int, fraction: float = 0.9, known_cell: bool = False) -> dict:
    return {"n_lattices": n, "fraction": fraction, "known_cell": known_cell, "lattices": []}


def test_the_fit_recovers_the_coefficients_it_was_simulated_with() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(20000), rng.normal(size=20000), rng.uniform(size=20000)])
    w = np.array([-0.5, 2.0, 1.5])
    y = (rng.uniform(size=20000) < 1 / (1 + np.exp(-X @ w))).astype(float)
    np.testing.assert_allclose(fit(X, y, l2=0.0), w, atol=0.1)


def test_features_follow_the_regime() -> None:
    f = dict(zip(FEATURES, features(_indexing(1, 0.75), 0.5), strict=True))
    assert f["one"] == 1 and f["none"] == f["multi"] == 0 and f["one_cnn"] == pytest.approx(0)
    f = dict(zip(FEATURES, features(_indexing(3), None), strict=True))
    assert f["multi"] == 1 and f["multi_cnn"] == 0
    assert features(_indexing(0), 0.9)[FEATURES.index("none_cnn")] > 2  # logit(0.9) = 2.2


def test_the_shipped_verdict_trusts_clear_indexing() -> None:
    """Two lattices each far above chance are two crystals, whatever the CNN says; one
    lattice explaining all the spots is one, unless the CNN is sure otherwise."""
    v = shipped()
    assert set(v.coefficients) == set(CASES) and v.record["label"] == "is_multi_visible"
    for known in (False, True):
        assert v.p_multi(_indexing(2, 0.95, known), 0.1) > 0.5
        assert v.p_multi(_indexing(1, 1.0, known), 0.3) < 0.5
        assert v.p_multi(_indexing(2, 0.95, known), None) > 0.5
    # where indexing found nothing the CNN decides, and more P from it means more P(multi)
    assert v.p_multi(_indexing(0, 0.0), 0.95) > v.p_multi(_indexing(0, 0.0), 0.05)


def test_a_file_for_other_features_is_refused(tmp_path: Path) -> None:
    v = Verdict({c: np.zeros(len(FEATURES)) for c in CASES}, {"label": "x"})
    v.save(tmp_path / "v.json")
    assert load(tmp_path / "v.json").coefficients["cell"].shape == (len(FEATURES),)
    d = json.loads((tmp_path / "v.json").read_text())
    d["features"] = d["features"][:-1]
    (tmp_path / "v.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="refit it with jobs/fit_verdict.py"):
        load(tmp_path / "v.json")


def test_a_miss_gets_no_lattice_verdict_and_a_hit_gets_the_fused_one() -> None:
    miss = core_answer.Prepared({}, False, 3, {})
    a = core_answer.answer(miss, 0.7, None, None, {}, {})
    assert a["p_multi"] is a["is_multi"] is a["confidence"] is a["p_multi_cnn"] is None
    hit = core_answer.Prepared({}, True, 300, {}, indexing=_indexing(2, 0.9))
    a = core_answer.answer(hit, 0.2, None, None, {}, {})
    assert a["p_multi_cnn"] == 0.2 and a["is_multi"] is True
    assert a["p_multi"] == pytest.approx(shipped().p_multi(hit.indexing, 0.2), abs=1e-5)
    assert a["n_lattices_indexed"] == 2 and a["indexed_with_cell"] is False
    # routing follows the fused verdict, not the CNN's number
    assert not core_answer.wants_resolution(hit, 0.2, always_resolution=False)


def test_visibility_labels() -> None:
    k = MIN_VISIBLE_REFLECTIONS
    assert visibility_labels([k + 50, k - 1]) == {
        "n_lattices_visible": 1, "is_multi_visible": False, "lattice_visible": False}
    assert visibility_labels([k, k, 3])["lattice_visible"]  # two visible: multi either way
    assert visibility_labels([200])["lattice_visible"]
    assert visibility_labels([])["n_lattices_visible"] == 0
