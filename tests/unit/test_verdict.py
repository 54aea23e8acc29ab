"""The lattice verdict (core/verdict.py): the logistic fit recovers known coefficients, the
features follow the indexing's regimes, the shipped coefficients load and call two lattices
far above chance multi, and answers give misses no lattice verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xray_platform.core import answer as core_answer
from xray_platform.core.verdict import (
    CASES,
    FEATURES,
    SPOTS_CAP,
    Verdict,
    features,
    fit,
    load,
    shipped,
)
from xray_platform.physics.labels import MIN_VISIBLE_REFLECTIONS, visibility_labels


def _indexing(n: int, fraction: float = 0.9, known_cell: bool = False, n_spots: int = 200,
              rejected: dict | None = None) -> dict:
    return {"n_lattices": n, "n_spots": n_spots, "fraction": fraction,
            "known_cell": known_cell, "lattices": [], "rejected": rejected}


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
    # where no lattice was found: the spots (log n / MIN_SPOTS, capped) and the fraction of
    # them the lattice turned down explains; neither counts once a lattice is found
    few = features(_indexing(0, 0.0, n_spots=20, rejected={"spots": 18, "chance": 0.4}), 0.5)
    many = features(_indexing(0, 0.0, n_spots=5000), 0.5)
    assert few[FEATURES.index("none_spots")] < 0 < many[FEATURES.index("none_spots")]
    assert many[FEATURES.index("none_spots")] == pytest.approx(np.log(SPOTS_CAP))
    assert few[FEATURES.index("none_rejected")] == pytest.approx(0.9)
    assert many[FEATURES.index("none_rejected")] == 0
    one = features(_indexing(1, n_spots=5000, rejected={"spots": 90, "chance": 2}), 0.5)
    assert one[FEATURES.index("none_spots")] == one[FEATURES.index("none_rejected")] == 0


def test_the_shipped_verdict_trusts_clear_indexing() -> None:
    """Two lattices each far above chance are two crystals, whatever the CNN says; one
    lattice explaining all the spots is one, unless the CNN is sure otherwise."""
    v = shipped()
    assert set(v.coefficients) == set(CASES) and v.record["label"] == "is_multi_visible"
    for known in (False, True):
        assert v.p_multi(_indexing(2, 0.95, known), 0.1) > 0.5
        assert v.p_multi(_indexing(1, 1.0, known), 0.3) < 0.5
        assert v.p_multi(_indexing(2, 0.95, known), None) > 0.5
    # where indexing found nothing the CNN weighs in, and more P from it means more P(multi);
    # a lattice explaining nearly all of too few spots is one crystal, and many spots that
    # no lattice explains are several
    assert v.p_multi(_indexing(0, 0.0), 0.95) > v.p_multi(_indexing(0, 0.0), 0.05)
    nearly = _indexing(0, 0.0, n_spots=22, rejected={"spots": 20, "chance": 0.5})
    assert v.p_multi(nearly, 0.5) < 0.5 < v.p_multi(_indexing(0, 0.0, n_spots=150), 0.5)


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


def test_cached_rows_are_read_back_and_a_cut_line_left_out(tmp_path: Path) -> None:
    """The verdict's rows (core/verdict_data.collect) are cached a line at a time: a second
    run takes them without simulating again, and a line cut by an interrupted run is left
    out (io/json_lines)."""
    from xray_platform.core.verdict_data import collect
    from xray_platform.io.json_lines import read_json_lines

    cache = tmp_path / "rows.jsonl"
    rows = [{"index": i, "hit": False, "cell": None, "n_spots": 3} for i in range(2)]
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"index": 2, "hi')
    assert read_json_lines(cache) == rows
    assert read_json_lines(tmp_path / "none.jsonl") == []
    assert collect("zoo-lattice@2026.12", 1, 2, cache, known_cell=False) == rows
