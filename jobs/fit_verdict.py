r"""Fit the lattice verdict (core/verdict.py) on simulated validation hits and write its
coefficients (the zoo ships them as xray_platform/zoo/lattice_verdict.json).

    python jobs/fit_verdict.py                      # 600 shots of zoo-lattice@2026.12, seed 1
    python jobs/fit_verdict.py --shots 40 --out /tmp/verdict.json --cache /tmp/verdict

The validation shots (seed 1: the lattice model's own validation seed, never a training or
test shot) are simulated as full frames and answered as `xrp predict` answers a frame: spots,
indexing with and without the known cell, the zoo lattice CNN. Rows are cached (JSON lines)
in --cache, so a second run fits at once. Labels: is_multi_visible (physics/labels.py: a
lattice with fewer than MIN_VISIBLE_REFLECTIONS detectable reflections does not count)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xray_platform.core.verdict import VERDICT_FILE, fit_rows  # noqa: E402
from xray_platform.core.verdict_data import collect  # noqa: E402
from xray_platform.io.provenance import code_version  # noqa: E402

PRESET, SEED = "zoo-lattice@2026.12", 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=600, help="validation shots (default 600)")
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "verdict",
                    help="folder of the cached rows (default data/verdict)")
    ap.add_argument("--out", type=Path, default=VERDICT_FILE, help="the coefficients file")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    a = ap.parse_args()
    if a.shots < 10:
        ap.error("--shots must be at least 10")
    t0 = time.perf_counter()
    rows = collect(PRESET, SEED, a.shots, a.cache / f"{PRESET}-s{SEED}.jsonl",
                   workers=a.workers, progress=lambda r: print(
                       f"\r{r['index'] + 1} shots simulated and answered", end="", flush=True))
    print(f"\n{len(rows)} shots in {time.perf_counter() - t0:.0f} s")
    verdict = fit_rows(rows, {"fitted_on": {"preset": PRESET, "seed": SEED,
                                            "shots": a.shots},
                              "command": "python jobs/fit_verdict.py " + " ".join(sys.argv[1:]),
                              "code": code_version()})
    verdict.save(a.out)
    for name, fitted in verdict.record["validation"].items():
        print(f"{name}: {fitted['hits']} hits, ECE {fitted['ece']:.3f}, accuracy "
              f"{fitted['accuracy']:.3f}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
