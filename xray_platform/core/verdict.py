"""One lattice verdict per hit: a calibrated P(two or more lattices) from the hit's indexing
(core/indexing.py with a known cell, core/autoindex.py without) and the lattice CNN (numpy; no
Ray).

Indexing answers the geometric question directly when it can: two lattices each far above
chance are two crystals. It cannot decide when the spots are few (no lattice found), and a
second lattice with few spots can stay below its significance bar, leaving spots unexplained.
A logistic model weighs the evidence per regime (no lattice found / one / two or more: the
regime's own intercept and CNN weight), fitted on simulated validation shots
(jobs/fit_verdict.py); its coefficients ship as zoo/lattice_verdict.json, one set per case:
known cell or not, CNN or not. The fraction of spots a single lattice leaves unexplained is
not a feature: on simulated singles it is ~0, on real single crystals 0.2-0.5 (rotation
images, zingers, unmodelled geometry: DLS I03 0.22, I23 0.46, CSPAD thermolysin 0.34), so it
called every real crystal multi; nor is how far above chance the best further lattice turned
down lies (on real single crystals 7-13 sigma: their own leftovers).

Where no lattice is found, two numbers from the search itself weigh in (both fitted):
how many spots the hit has (log(n / MIN_SPOTS), capped at SPOTS_CAP x MIN_SPOTS: a single
crystal with that many spots is indexed, so many spots and no lattice point to several), and
the fraction of them the best lattice turned down explains (a lattice explaining nearly all
of too few spots is one crystal).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from xray_platform.core.autoindex import MIN_SPOTS
from xray_platform.core.calibration import logits

#: the features, in the order of a coefficient vector (no shared intercept: the regime
#: indicators none / one / multi are the intercepts)
FEATURES = ("none", "none_cnn", "none_spots", "none_rejected", "one", "one_cnn", "multi",
            "multi_cnn")
#: none_spots saturates at this many times MIN_SPOTS: its evidence stops growing there
SPOTS_CAP = 4.0
#: the cases a coefficient set is fitted for: "cell" | "no_cell", "+cnn" | ""
CASES = ("cell+cnn", "cell", "no_cell+cnn", "no_cell")
VERDICT_FILE = Path(__file__).resolve().parents[1] / "zoo" / "lattice_verdict.json"


def case(indexing: dict[str, Any], with_cnn: bool) -> str:
    """The coefficient set an answer uses."""
    return ("cell" if indexing.get("known_cell") else "no_cell") + ("+cnn" if with_cnn else "")


def features(indexing: dict[str, Any], p_cnn: float | None) -> np.ndarray:
    """The feature vector (FEATURES) of one hit; the CNN terms are 0 without a CNN."""
    n = int(indexing["n_lattices"])
    z = 0.0 if p_cnn is None else float(logits(np.array([p_cnn]))[0])
    none, one, multi = float(n == 0), float(n == 1), float(n >= 2)
    n_spots = max(int(indexing["n_spots"]), 1)
    spots = float(np.clip(math.log(n_spots / MIN_SPOTS), -1.0, math.log(SPOTS_CAP)))
    rejected = indexing.get("rejected")
    turned_down = rejected["spots"] / n_spots if rejected else 0.0
    return np.array([none, none * z, none * spots, none * turned_down, one, one * z, multi,
                     multi * z])


def fit(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method (IRLS) with a small ridge penalty: the
    coefficients maximising sum y log p + (1 - y) log(1 - p) - l2/2 |w|^2."""
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-X @ w))
        grad = X.T @ (p - y) + l2 * w
        hess = X.T @ (X * (p * (1 - p))[:, None]) + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass(frozen=True)
class Verdict:
    """Fitted coefficients per case (CASES), and where they came from."""

    coefficients: dict[str, np.ndarray]
    record: dict[str, Any]

    def p_multi(self, indexing: dict[str, Any], p_cnn: float | None) -> float:
        """The fused, calibrated P(two or more lattices) of a hit."""
        w = self.coefficients[case(indexing, p_cnn is not None)]
        return float(1.0 / (1.0 + math.exp(-float(features(indexing, p_cnn) @ w))))

    def save(self, path: Path) -> None:
        from xray_platform.io.atomic import atomic_open

        coefs = {k: [round(float(x), 6) for x in v] for k, v in self.coefficients.items()}
        with atomic_open(path) as f:
            f.write(json.dumps({**self.record, "features": list(FEATURES),
                                "coefficients": coefs}, indent=1) + "\n")


def load(path: Path = VERDICT_FILE) -> Verdict:
    """The coefficients in ``path`` (checked against FEATURES and CASES)."""
    d = json.loads(Path(path).read_text())
    if d.get("features") != list(FEATURES) or set(d.get("coefficients", {})) != set(CASES):
        raise ValueError(f"{path}: fitted for features {d.get('features')} and cases "
                         f"{sorted(d.get('coefficients', {}))}, this code uses {list(FEATURES)} "
                         f"and {list(CASES)}; refit it with jobs/fit_verdict.py")
    coefs = {k: np.asarray(v, float) for k, v in d.pop("coefficients").items()}
    return Verdict(coefs, d)


@lru_cache(maxsize=1)
def shipped() -> Verdict:
    """The zoo's verdict (zoo/lattice_verdict.json), read once."""
    return load(VERDICT_FILE)


def design(rows: list[dict[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and is_multi_visible labels of the hits in ``rows`` (core/verdict_data.py) for
    the coefficient set ``name`` (CASES)."""
    indexing = "cell" if name.startswith("cell") else "no_cell"
    with_cnn = name.endswith("+cnn")
    hits = [r for r in rows if r["hit"] and r[indexing] is not None]
    X = np.array([features(r[indexing], r["p_cnn"] if with_cnn else None) for r in hits])
    y = np.array([float(r["is_multi_visible"]) for r in hits])
    return X.reshape(len(hits), len(FEATURES)), y


def fit_rows(rows: list[dict[str, Any]], record: dict[str, Any]) -> Verdict:
    """Every case's coefficients fitted on ``rows``, with their validation ECE and accuracy
    in the record."""
    from xray_platform.core.calibration import reliability

    coefs, checks = {}, {}
    for name in CASES:
        X, y = design(rows, name)
        if len(np.unique(y)) < 2:
            raise ValueError(f"{name}: the validation hits need both single and multi-lattice "
                             f"shots (got {len(y)} hits)")
        coefs[name] = fit(X, y)
        p = 1.0 / (1.0 + np.exp(-X @ coefs[name]))
        checks[name] = {"hits": int(len(y)), "ece": round(reliability(p, y)["ece"], 4),
                        "accuracy": round(float(np.mean((p >= 0.5) == (y > 0.5))), 4)}
    return Verdict(coefs, {**record, "label": "is_multi_visible", "validation": checks})
