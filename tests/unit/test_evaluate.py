"""Tests for xray_platform.core.evaluate: metrics on hand-made data, plots, and reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from xray_platform.core import metrics as m_
from xray_platform.reports import figures, report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return len(data) > 1000 and data[:8] == PNG_SIGNATURE


def _brute_auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y], p[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


# ----------------------------------------------------------------------------- lattice


def test_lattice_hand_example():
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.7, 0.4])
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    m = m_.lattice_metrics(p, y)
    # predicted multi: 0.9, 0.8, 0.6, 0.7 -> tp=2, fp=2; fn=1 (0.3); tn=3
    assert m["confusion"] == [[3, 2], [1, 2]]
    assert all(isinstance(v, int) for row in m["confusion"] for v in row)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["baseline_accuracy"] == pytest.approx(5 / 8)
    assert m["threshold"] == 0.5
    # positives {0.9, 0.8, 0.3} vs negatives {0.6, 0.1, 0.2, 0.7, 0.4}: 5 + 5 + 2 wins of 15
    assert m["roc_auc"] == pytest.approx(12 / 15)


def test_lattice_threshold_is_inclusive_and_moves_counts():
    p = np.array([0.5, 0.5, 0.2])
    y = np.array([True, False, False])
    assert m_.lattice_metrics(p, y)["confusion"] == [[1, 1], [0, 1]]
    assert m_.lattice_metrics(p, y, threshold=0.6)["confusion"] == [[2, 0], [1, 0]]


def test_roc_auc_perfect_constant_and_bruteforce():
    y = np.array([0, 0, 0, 1, 1], dtype=bool)
    assert m_.lattice_metrics(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), y)["roc_auc"] == 1.0
    assert m_.lattice_metrics(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), y)["roc_auc"] == 0.0
    assert m_.lattice_metrics(np.full(5, 0.4), y)["roc_auc"] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        yy = rng.random(300) < 0.3
        pp = np.round(np.clip(rng.normal(0.4 + 0.2 * yy, 0.2), 0, 1), 2)  # rounding -> ties
        auc = m_.lattice_metrics(pp, yy)["roc_auc"]
        assert auc == pytest.approx(_brute_auc(pp, yy))
        fpr, tpr = m_.roc_curve(pp, yy)  # the plotted curve encloses the same area
        assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(auc)


def test_roc_auc_nan_for_one_class_and_baseline():
    m = m_.lattice_metrics(np.array([0.2, 0.7, 0.9]), np.array([1, 1, 1]))
    assert math.isnan(m["roc_auc"])
    assert m["baseline_accuracy"] == 1.0
    m = m_.lattice_metrics(np.full(10, 0.1), np.r_[np.ones(3), np.zeros(7)])
    assert m["baseline_accuracy"] == pytest.approx(0.7)
    assert m["accuracy"] == pytest.approx(0.7)
    assert math.isnan(m["precision"])  # nothing called multi
    assert m["recall"] == 0.0


@pytest.mark.parametrize(
    "p, y",
    [
        ([0.1, 0.2], [0, 1, 1]),
        ([0.1, 1.2], [0, 1]),
        ([-0.1, 0.2], [0, 1]),
        ([np.nan, 0.2], [0, 1]),
        ([0.1, 0.2], [0, 2]),
    ],
)
def test_lattice_validation(p, y):
    with pytest.raises(ValueError):
        m_.lattice_metrics(np.array(p), np.array(y))


# ----------------------------------------------------------------------------- resolution


def test_resolution_perfect_and_offset():
    true = np.linspace(1.2, 5.0, 50)
    m = m_.resolution_metrics(true.copy(), None, true)
    assert m["n"] == 50 and m["n_excluded"] == 0
    assert m["pearson_r"] == pytest.approx(1.0)
    assert m["pearson_r_inv_d"] == pytest.approx(1.0)
    assert m["spearman_r"] == pytest.approx(1.0)
    assert m["mae_A"] == 0.0 and m["rmse_A"] == 0.0 and m["bias_A"] == 0.0
    assert "frac_within_1sigma" not in m
    m = m_.resolution_metrics(true + 0.3, None, true)
    assert m["bias_A"] == pytest.approx(0.3)
    assert m["mae_A"] == pytest.approx(0.3)
    assert m["median_abs_err_A"] == pytest.approx(0.3)
    assert m["rmse_A"] == pytest.approx(0.3)
    assert m["pearson_r"] == pytest.approx(1.0)
    assert m["baseline_mae_A"] == pytest.approx(np.mean(np.abs(true - true.mean())))


def test_resolution_excludes_nan_true_and_rejects_nonfinite_predictions():
    true = np.array([2.0, np.nan, 3.0, np.nan, 4.0])
    pred = np.array([2.5, 9.0, 3.5, np.nan, 4.5])  # NaN prediction on a blank row is ignored
    m = m_.resolution_metrics(pred, None, true)
    assert m["n"] == 3 and m["n_excluded"] == 2
    assert m["bias_A"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 non-finite"):
        m_.resolution_metrics(np.array([np.nan, np.inf, 3.0]), None, np.array([2.0, 3.0, 4.0]))
    with pytest.raises(ValueError):
        m_.resolution_metrics(np.ones(3), None, np.ones(4))


def test_resolution_sigma_coverage_gaussian():
    rng = np.random.default_rng(1)
    true = rng.uniform(1.0, 6.0, 20000)
    sigma = rng.uniform(0.05, 0.5, true.size)
    pred = true + rng.normal(0.0, sigma)
    m = m_.resolution_metrics(pred, sigma, true)
    assert m["frac_within_1sigma"] == pytest.approx(0.6827, abs=0.015)
    assert m["frac_within_2sigma"] == pytest.approx(0.9545, abs=0.01)
    assert m["mean_sigma_A"] == pytest.approx(sigma.mean())
    # overconfident sigma -> coverage well below expectation
    m = m_.resolution_metrics(pred, sigma / 3, true)
    assert m["frac_within_1sigma"] < 0.35


def test_resolution_shells_add_up():
    rng = np.random.default_rng(2)
    true = rng.uniform(1.0, 10.0, 500)
    pred = true + rng.normal(0, 0.2, true.size)
    m = m_.resolution_metrics(pred, None, true)
    assert sum(s["n"] for s in m["shells"]) == m["n"] == 500
    for s in m["shells"]:
        inside = (true >= s["lo"]) & (true < s["hi"])
        assert s["n"] == inside.sum()
        assert s["mae_A"] == pytest.approx(np.mean(np.abs(pred - true)[inside]))
    # empty shells are skipped
    m = m_.resolution_metrics(np.array([1.1, 1.2]), None, np.array([1.1, 1.2]))
    assert [(s["lo"], s["hi"], s["n"]) for s in m["shells"]] == [(1.0, 1.5, 2)]


# ----------------------------------------------------------------------------- user sets


def _user_data():
    """Four sets; A, B, D pass (|mean - target| <= 2 sd), C fails."""
    pred, ids, tgt = [], [], []

    def add(name, target, values):
        pred.extend(values)
        ids.extend([name] * len(values))
        tgt.extend([target] * len(values))

    add("A", 2.0, [1.9, 2.0, 2.1])  # mean 2.0, sd 0.1 -> z 0
    add("B", 3.0, [3.1, 3.3, 3.5])  # mean 3.3, sd 0.2 -> z 1.5
    add("C", 1.5, [2.0, 2.1, 2.2])  # mean 2.1, sd 0.1 -> z 6
    add("D", 4.0, [3.6, 4.0, 4.4, 3.2, 4.8])  # mean 4.0
    return np.array(pred), np.array(ids), np.array(tgt)


def test_user_sets_three_of_four_pass():
    u = m_.user_set_metrics(*_user_data())
    assert u["n_sets"] == 4 and u["n_within_2sd"] == 3
    assert u["fraction_within_2sd"] == pytest.approx(0.75)
    by = {s["set_id"]: s for s in u["sets"]}
    assert [s["set_id"] for s in u["sets"]] == ["A", "B", "C", "D"]
    assert not by["C"]["within_2sd"] and by["A"]["within_2sd"]
    assert by["B"]["z"] == pytest.approx(1.5)
    assert by["C"]["z"] == pytest.approx(6.0)
    assert by["B"]["std_A"] == pytest.approx(0.2)
    assert by["D"]["max_A"] == 4.8 and by["D"]["min_A"] == 3.2 and by["D"]["n"] == 5
    assert isinstance(by["A"]["set_id"], str)


def test_user_sets_singleton_and_inconsistent_targets():
    u = m_.user_set_metrics(np.array([2.0, 2.1, 2.3]), np.array([1, 2, 2]), np.full(3, 2.0))
    one = u["sets"][0]
    assert one["set_id"] == 1 and one["n"] == 1 and not one["within_2sd"]
    assert math.isnan(one["std_A"])
    with pytest.raises(ValueError, match="inconsistent"):
        m_.user_set_metrics(np.ones(4), np.array([0, 0, 1, 1]), np.array([2.0, 2.5, 3.0, 3.0]))


# ----------------------------------------------------------------------------- plots & report


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(3)
    true = rng.uniform(1.0, 6.0, 300)
    sigma = np.full(true.size, 0.2)
    pred = true + rng.normal(0, 0.2, true.size)
    p = np.clip(rng.random(300), 0, 1)
    y = rng.random(300) < 0.5
    lat = m_.lattice_metrics(p, y)
    paths = [
        figures.plot_pred_vs_true(pred, true, tmp_path / "a" / "fig6.png", title="test"),
        figures.plot_pred_vs_true(pred, true, tmp_path / "fig6_sig.png", sigma_d=sigma),
        figures.plot_user_sets(m_.user_set_metrics(*_user_data()), tmp_path / "b" / "fig7.png"),
        figures.plot_confusion(lat, tmp_path / "confusion.png"),
        figures.plot_roc(p, y, tmp_path / "roc.png"),
        figures.plot_calibration(pred, sigma, true, tmp_path / "calib.png"),
    ]
    big_true = rng.uniform(1.0, 6.0, 2500)
    paths.append(figures.plot_pred_vs_true(big_true + 0.1, big_true, tmp_path / "hex.png"))
    for path in paths:
        assert path.exists() and _is_png(path), path


def test_write_report_json_and_markdown(tmp_path):
    rng = np.random.default_rng(4)
    true = np.r_[rng.uniform(1.0, 8.0, 100), np.nan]
    pred = np.nan_to_num(true, nan=3.0) + 0.25
    lat = m_.lattice_metrics(np.array([0.2, 0.9, 0.8, 0.1]), np.array([0, 1, 1, 1]))
    lat_one = m_.lattice_metrics(np.array([0.2, 0.9]), np.array([1, 1]))  # roc_auc NaN
    res = m_.resolution_metrics(pred, np.full(pred.size, 0.3), true)
    user = m_.user_set_metrics(*_user_data())
    metrics = {"lattice": lat, "lattice_one_class": lat_one, "resolution": res,
               "user_sets": user, "np_value": np.float32(1.5), "arr": np.arange(3)}
    plot = figures.plot_roc(np.array([0.2, 0.9, 0.8, 0.1]), np.array([0, 1, 1, 1]),
                       tmp_path / "plots" / "roc.png")
    jpath, mpath = report.write_report(tmp_path / "rep", metrics, {"roc": plot}, "Test report")
    assert jpath.name == "report.json" and mpath.name == "report.md"
    text = jpath.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["lattice_one_class"]["roc_auc"] is None
    assert data["np_value"] == 1.5 and data["arr"] == [0, 1, 2]
    assert data["lattice"]["confusion"] == lat["confusion"]
    assert data["resolution"]["shells"][-1]["hi"] is None  # inf -> null
    assert data["user_sets"]["n_within_2sd"] == 3
    md = mpath.read_text()
    assert md.startswith("# Test report")
    assert f"{lat['accuracy']:.3f}" in md
    assert f"{res['pearson_r']:.3f}" in md and f"{res['mae_A']:.3f}" in md
    assert "3/4" in md and "0.750" in md
    assert "0.96" in md  # poster comparison column
    assert "![roc](../plots/roc.png)" in md
    assert "| A |" in md and "shell" in md
    assert not list((tmp_path / "rep").glob("*.tmp"))


def test_write_report_flat_lattice_only(tmp_path):
    lat = m_.lattice_metrics(np.array([0.2, 0.9, 0.8, 0.1]), np.array([0, 1, 1, 1]))
    _, mpath = report.write_report(tmp_path, lat, {}, "lattice only")
    md = mpath.read_text()
    assert "lattice accuracy" in md and "Pearson" not in md and "User datasets" not in md


# --- where models fail: breakdown tables --------------------------------------------------------
def _table(n: int = 400, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n_lat = rng.integers(0, 4, n)
    per = [json.dumps([int(v) for v in rng.integers(0, 60, k)]) for k in n_lat]
    return {"is_multi": n_lat >= 2, "n_lattices": n_lat, "hit": n_lat > 0,
            "n_detectable_per_lattice": np.array(per), "spot_scale": 10 ** rng.uniform(0, 5, n),
            "detector": np.where(rng.random(n) < 0.5, "pilatus6m", "eiger16m"),
            "ice": np.where(rng.random(n) < 0.2, 1.0, 0.0),
            "max_misorientation_deg": np.where(n_lat >= 2, rng.uniform(0, 180, n), 0.0)}


def test_lattice_breakdown_counts_and_accuracies() -> None:
    t = _table()
    p = np.where(t["is_multi"], 0.9, 0.1)
    p[t["spot_scale"] < 30] = 1 - p[t["spot_scale"] < 30]  # wrong on the weakest shots
    b = m_.lattice_breakdown(p, t)
    assert b["subsets"]["all shots"]["n"] == 400
    assert b["subsets"]["hits"]["n"] == int(t["hit"].sum())
    shows = b["subsets"]["hits whose lattices all show"]["n"]
    assert 0 < shows < b["subsets"]["hits"]["n"]
    rows = {r["group"]: r for r in b["groups"]["spot strength"]}
    assert rows["0-30 photons"]["accuracy"] == 0.0 and rows["30000-inf photons"]["accuracy"] == 1
    assert sum(r["n"] for r in b["groups"]["detector"]) == b["subsets"]["hits"]["n"]
    mis = b["groups"]["misorientation (multi-lattice hits)"]
    assert sum(r["n"] for r in mis) == int((t["hit"] & t["is_multi"]).sum())  # 180 included
    assert all(r["frac_multi"] == 1.0 for r in mis)


def test_resolution_breakdown_and_the_hits_only_lattice_label() -> None:
    from xray_platform.core.targets import training_target

    t = _table(seed=1)
    true = np.where(t["hit"], 2.0 + t["n_lattices"], np.nan)
    b = m_.resolution_breakdown(true + 0.1, true, t)
    assert {r["group"] for r in b["lattices"]} == {"1", "2", "3"}  # blanks have no true d
    assert all(r["mae_A"] == pytest.approx(0.1) for r in b["detector"])
    _, keep_all = training_target(t, "lattice", "is_multi")
    _, keep_hits = training_target(t, "lattice", "is_multi_hits")
    assert keep_all.all() and np.array_equal(keep_hits, t["hit"])


def test_user_set_targets_compare_like_with_like():
    """A d_vis model is judged against each set's d_vis labels, a d_B model against d_B."""
    from xray_platform.reports.evaluation import set_targets

    ids = np.array([0, 0, 0, 1, 1])
    true_d = np.array([2.0, 2.4, np.nan, 3.0, 3.2])
    table = {"target_resolution_A": np.array([2.9, 2.9, 2.9, 4.5, 4.5])}
    t, kind = set_targets("d_vis", ids, true_d, table)
    np.testing.assert_allclose(t, [2.2, 2.2, 2.2, 3.1, 3.1])
    assert "d_vis" in kind
    t, kind = set_targets("d_B", ids, true_d, table)
    np.testing.assert_allclose(t, table["target_resolution_A"])
    assert "d_B" in kind
