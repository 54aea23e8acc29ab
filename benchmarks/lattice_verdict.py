r"""The lattice verdict on held-out simulated hits (issue 30 item 5): the CNN alone, indexing
alone and the two fused (core/verdict.py), with and without the known cell, on the zoo's
lattice test distributions (uniform misorientation, Gaussian 20, 5 and 1 deg; seed 2, the
zoo cards' test seed), by misorientation, reflections per lattice and detector.

    python benchmarks/lattice_verdict.py                 # 120 shots per set (~15 min, 2 cores)
    python benchmarks/lattice_verdict.py --shots 20 --sets uniform

Targets are judged on hits whose lattice label is visible (physics/labels.py: every lattice
counted by is_multi shows >= MIN_VISIBLE_REFLECTIONS detectable reflections, or two do);
"all hits" judges every hit the hit finder found against is_multi. Rows are cached in
data/verdict (JSON lines, shared with jobs/fit_verdict.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xray_platform.core.calibration import reliability  # noqa: E402
from xray_platform.core.verdict import load  # noqa: E402
from xray_platform.core.verdict_data import collect  # noqa: E402
from xray_platform.physics.labels import MIN_VISIBLE_REFLECTIONS  # noqa: E402

SETS = ("uniform", "g20", "g5", "g1")
RELEASE, SEED = "2026.12", 2


def methods(verdict) -> dict[str, Callable[[dict], float | None]]:
    """name -> P(multi) of a hit row (None: the method has no answer for it)."""
    def fused(indexing: str, cnn: bool):
        return lambda r: None if r[indexing] is None else \
            verdict.p_multi(r[indexing], r["p_cnn"] if cnn else None)

    def indexed(indexing: str):
        return lambda r: None if r[indexing] is None else \
            float(r[indexing]["n_lattices"] >= 2)

    return {"CNN alone": lambda r: r["p_cnn"],
            "indexing alone, no cell": indexed("no_cell"),
            "fused, no cell": fused("no_cell", True),
            "indexing alone, known cell": indexed("cell"),
            "fused, known cell": fused("cell", True)}


def score(rows: list[dict], method: Callable[[dict], float | None], label: str) -> dict:
    ps = [(method(r), r[label]) for r in rows]
    ps = [(p, y) for p, y in ps if p is not None]
    if not ps:
        return {"n": 0}
    p, y = np.array([a for a, _ in ps]), np.array([b for _, b in ps], float)
    multi, single = y > 0.5, y < 0.5
    return {"n": len(p), "accuracy": float(np.mean((p >= 0.5) == multi)),
            "multi_recall": float(np.mean(p[multi] >= 0.5)) if multi.any() else None,
            "single_recall": float(np.mean(p[single] < 0.5)) if single.any() else None,
            "ece": reliability(p, y)["ece"]}


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(title: str, groups: dict[str, list[dict]], ms: dict, label: str) -> None:
    print(f"\n{title}\n| set | hits | " + " | ".join(ms) + " |")
    print("|---|---|" + "---|" * len(ms))
    for name, rows in groups.items():
        cells = []
        for m in ms.values():
            s = score(rows, m, label)
            cells.append("-" if not s["n"] else
                         f"{fmt(s['accuracy'])} ({fmt(s['multi_recall'])}/"
                         f"{fmt(s['single_recall'])})")
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


def bins(rows: list[dict], key: Callable[[dict], float], edges: list[float], unit: str
         ) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        out[f"{lo:g}-{hi:g} {unit}"] = [r for r in rows if lo <= key(r) < hi]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=120, help="shots per set (default 120)")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "verdict")
    ap.add_argument("--verdict", type=Path, default=None,
                    help="a coefficients file (default: the zoo's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the scores here")
    a = ap.parse_args()
    verdict = load(a.verdict) if a.verdict else load()
    per_set = {}
    for s in a.sets:
        name = f"zoo-lattice-{s}@{RELEASE}"
        per_set[s] = collect(name, SEED, a.shots, a.cache / f"{name}-s{SEED}.jsonl",
                             progress=lambda r, s=s: print(f"\r{s}: {r['index'] + 1} shots",
                                                           end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    ms = methods(verdict)
    hits = {s: [r for r in rows if r["hit"]] for s, rows in per_set.items()}
    visible = {s: [r for r in rows if r["lattice_visible"]] for s, rows in hits.items()}
    print("Cells: accuracy (multi-lattice recall / single-lattice recall).")
    table(f"Hits with visible lattices (>= {MIN_VISIBLE_REFLECTIONS} detectable reflections "
          "each), label is_multi", visible, ms, "is_multi")
    table("All hits, label is_multi", hits, ms, "is_multi")
    pooled = [r for rows in visible.values() for r in rows]
    multi = [r for r in pooled if r["is_multi"]]
    table("Multi-lattice visible hits by largest misorientation (all sets)",
          bins(multi, lambda r: max(r["misorientation_deg"] or [0]),
               [0, 2, 5, 10, 20, 45, 90, 181], "deg"), ms, "is_multi")
    table("Visible hits by the weakest lattice's detectable reflections (all sets)",
          bins(pooled, lambda r: min(r["n_detectable_per_lattice"] or [0]),
               [10, 20, 40, 80, 160, 1e9], "refl."), ms, "is_multi")
    dets = sorted({r["detector"] for r in pooled})
    table("Visible hits by detector (all sets)",
          {d: [r for r in pooled if r["detector"] == d] for d in dets}, ms, "is_multi")
    print("\nCalibration (ECE, 10 bins) on visible hits:")
    print("| set | CNN alone | fused, no cell | fused, known cell |\n|---|---|---|---|")
    for s, rows in visible.items():
        print(f"| {s} | " + " | ".join(fmt(score(rows, ms[m], 'is_multi')["ece"]) for m in (
            "CNN alone", "fused, no cell", "fused, known cell")) + " |")
    print("\nms per hit (median / p90): spots, indexing without and with the cell")
    print("| detector | hits | spots | no cell | known cell |\n|---|---|---|---|---|")
    allhits = [r for rows in hits.values() for r in rows]
    for d in sorted({r["detector"] for r in allhits}):
        rs = [r for r in allhits if r["detector"] == d]

        def q(vals: list[float]) -> str:
            return f"{np.median(vals):.0f} / {np.percentile(vals, 90):.0f}" if vals else "-"

        print(f"| {d} | {len(rs)} | {q([r['no_cell']['spots_ms'] for r in rs])} | "
              f"{q([r['no_cell']['indexing_ms'] for r in rs])} | "
              f"{q([r['cell']['indexing_ms'] for r in rs if r['cell']])} |")
    if a.json:
        a.json.write_text(json.dumps({s: {m: score(visible[s], f, "is_multi")
                                          for m, f in ms.items()} for s in visible}, indent=1))


if __name__ == "__main__":
    main()
