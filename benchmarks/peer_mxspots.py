r"""A peer side by side (issue 30 item 6): mxspots (PyPI, michel4j/mxspots) reports
``num_lattices`` per frame; here it is scored on the held-out shots of
benchmarks/lattice_verdict.py (the zoo's lattice test distributions uniform, Gaussian 20, 5 and
1 deg; seed 2; shots 0..N-1) in one table with xrp's figures on exactly the same hits.

    python benchmarks/peer_mxspots.py        # 120 shots per set (~20 min first, then ~4 s)
    python benchmarks/peer_mxspots.py --shots 5 --sets uniform
    python benchmarks/peer_mxspots.py --env /work/mxspots-env --threads 1

mxspots needs Python >= 3.12, so it lives in a side environment that this script drives
through a subprocess (it never imports mxspots itself):

    /root/.pyenv/versions/3.12.1/bin/python -m venv /work/mxspots-env
    /work/mxspots-env/bin/pip install mxspots

Each shot is simulated as lattice_verdict.py simulates it (a full frame, gaps negative) and
handed to mxspots's documented in-memory API, ``mxspots.score_data(data, SpotParams(...))``,
as a float32 .npy in a temporary folder, with the shot's geometry (wavelength Å, distance mm,
pixel size mm, beam centre (fast, slow) px); mxspots takes negative pixels as masked (its ADR
0018), so the gaps need no separate mask. Everything else is mxspots's default (SNR 6,
d_max 20 Å, ice rings detected and masked). mxspots calls a frame multi-lattice when
``num_lattices >= 2`` (its CLI's "Multi-lattice / split crystal detected"). ``--threads``
sets OMP_NUM_THREADS for mxspots (default 1: xrp's per-hit times in data/verdict were taken on
one thread per process).

xrp's rows are read, never made, from data/verdict/<preset>-s2.jsonl (``--xrp-cache``), the
rows benchmarks/lattice_verdict.py writes: run it first for as many shots (~15 min); their
methods and scores are lattice_verdict.py's own (imported), so xrp's columns are that
benchmark's numbers on the same rows.
mxspots runs only on the shots xrp's hit finder calls hits; its answers are cached in
data/peer-mxspots/<preset>-s2.jsonl (a run stopped half-way goes on; rows of another mxspots
version are redone). A frame mxspots fails on (an exception, a crash of its process, no
answer within ``--timeout`` s) is cached as failed and counted in the tables, not dropped.

Prints, in markdown: accuracy (multi-lattice recall / single-lattice recall) per set for xrp's
five methods and mxspots, on hits with visible lattice labels (label is_multi_visible, which
equals is_multi there) and on all hits (label is_multi), with mxspots's failures; mxspots's
num_lattices on single- and multi-lattice visible hits; and ms per hit by detector (mxspots's
score_data against xrp's spots + indexing without a cell)."""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lattice_verdict import RELEASE, SEED, SETS, fmt, methods, score  # noqa: E402

from xray_platform.io.json_lines import read_json_lines  # noqa: E402

DEFAULT_ENV = Path("/work/mxspots-env")
PYTHON_312 = Path("/root/.pyenv/versions/3.12.1/bin/python")
MX = "mxspots"  # the column's name and the key of mxspots's answer in a joined row

# The side environment's half: one long-lived process, one JSON request a line on stdin (a
# .npy path and the geometry), one JSON answer a line on stdout; the first line names the
# installed mxspots version. Only mxspots's public API (score_data, SpotParams).
WORKER = r"""
import json, sys, time
from importlib.metadata import version
import numpy as np
from mxspots import SpotParams, score_data
print(json.dumps({"version": version("mxspots")}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        data = np.ascontiguousarray(np.load(req["npy"]), dtype=np.float32)
        params = SpotParams(beam_x=req["beam_x"], beam_y=req["beam_y"],
                            pixel_size_x=req["pixel_mm"], pixel_size_y=req["pixel_mm"],
                            distance=req["distance_mm"], wavelength=req["wavelength_A"])
        t0 = time.perf_counter()
        res = score_data(data, params=params)
        ms = 1e3 * (time.perf_counter() - t0)
        out = {"num_lattices": res.num_lattices, "spot_count": res.spot_count,
               "bragg_spots": res.bragg_spots, "score": res.score, "d_min": res.d_min,
               "num_ice_rings": res.num_ice_rings, "ms": ms, "error": None}
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
"""


class EnvMissing(RuntimeError):
    """The mxspots side environment is absent or cannot import mxspots."""


class XrpMissing(RuntimeError):
    """xrp's rows (lattice_verdict.py's cache) are not there for every shot asked for."""


def make_env_hint(env: Path) -> str:
    py = PYTHON_312 if PYTHON_312.exists() else Path("python3.12")
    return (f"make it with:\n  {py} -m venv {env} && {env}/bin/pip install mxspots\n"
            "(mxspots needs Python >= 3.12; or pass --env DIR)")


def env_python(env: Path) -> Path:
    """The side environment's interpreter; :class:`EnvMissing` (with the commands that make
    it) when there is none."""
    py = env / "bin" / "python"
    if not py.exists():
        raise EnvMissing(f"no mxspots environment at {env} ({py} is missing); "
                         + make_env_hint(env))
    return py


class Peer:
    """The mxspots worker process in the side environment (restarted after a crash)."""

    def __init__(self, env: Path, threads: int, timeout_s: float) -> None:
        self.python, self.env, self.timeout_s = env_python(env), env, timeout_s
        self.environ = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc: subprocess.Popen | None = None
        self.stderr: Any = None  # the worker's stderr, a temporary file (never a full pipe)
        self.version = ""
        self._start()

    def _start(self) -> None:
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([str(self.python), "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=self.environ)
        line = self._readline(120.0)
        try:
            self.version = json.loads(line)["version"]
        except (json.JSONDecodeError, KeyError, TypeError):
            err = self._stop()
            raise EnvMissing(f"{self.python} could not run mxspots:\n{err[-2000:]}\n"
                             + make_env_hint(self.env)) from None

    def _readline(self, timeout_s: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        return self.proc.stdout.readline() if ready else None

    def _stop(self) -> str:
        """End the worker; its stderr."""
        if self.proc is None:
            return ""
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f is not None and not f.closed:
                f.close()
        self.stderr.seek(0)
        err = self.stderr.read()
        self.stderr.close()
        return err

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """mxspots's answer for one frame; ``{"error": ...}`` when it failed."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self._readline(self.timeout_s)
        except (BrokenPipeError, OSError):
            line = ""
        if line:
            return json.loads(line)
        why = f"no answer in {self.timeout_s:.0f} s" if line is None else "its process died"
        err = self._stop().strip().splitlines()
        self._start()
        return {"error": why + (f" ({err[-1]})" if err else "")}

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()  # the worker's loop ends
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                pass
        self._stop()


def frame_request(preset_name: str, seed: int, index: int, folder: Path
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Shot ``index`` simulated as core/verdict_data.shot_row simulates it, written to
    ``folder`` as a float32 .npy (gaps negative); the worker's request and the shot's labels
    (to check the join)."""
    from xray_platform.core.verdict_data import simulated_frame
    from xray_platform.physics.presets import preset
    from xray_platform.physics.simulate import simulate

    p = preset(preset_name).params(seed, index)
    shot = simulate(p, full_frame=True)
    frame = simulated_frame(p, shot.frame)
    path = folder / "frame.npy"
    np.save(path, frame.image)
    info = frame.info
    request = {"npy": str(path), "wavelength_A": float(info.wavelength_A),
               "distance_mm": float(info.distance_mm), "pixel_mm": float(info.pixel_size_mm),
               "beam_x": float(info.beam_center_px[0]), "beam_y": float(info.beam_center_px[1])}
    return request, {"is_multi": bool(shot.record["is_multi"]),
                     "n_lattices": int(shot.record["n_lattices"])}


def read_cache(path: Path, version: str | None = None) -> dict[int, dict[str, Any]]:
    """index -> mxspots row of ``path`` (JSON lines; a cut line and, with ``version``, rows of
    another mxspots version are left out)."""
    return {row["index"]: row for row in read_json_lines(path)
            if version is None or row.get("version") == version}


def run_peer(peer: Peer, preset_name: str, seed: int, indices: Iterable[int], cache: Path,
             progress: Callable[[dict], None] | None = None) -> dict[int, dict[str, Any]]:
    """mxspots's rows for shots ``indices``, from ``cache`` where there, else computed and
    appended to it."""
    done = read_cache(cache, peer.version)
    todo = [i for i in indices if i not in done]
    if not todo:
        return done
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peer-mxspots-") as tmp, cache.open("a") as out:
        for i in todo:
            request, labels = frame_request(preset_name, seed, i, Path(tmp))
            row = {"preset": preset_name, "seed": seed, "index": i, "version": peer.version,
                   "omp_threads": peer.environ["OMP_NUM_THREADS"],
                   "load1": round(os.getloadavg()[0], 2), **labels,
                   **peer.answer(request)}
            out.write(json.dumps(row) + "\n")
            out.flush()
            done[i] = row
            if progress:
                progress(row)
    return done


def read_xrp(path: Path, n: int) -> list[dict[str, Any]]:
    """xrp's rows of shots 0..n-1 from lattice_verdict.py's cache ``path``; :class:`XrpMissing`
    naming the command that makes them when any is missing."""
    rows = read_cache(path)
    missing = [i for i in range(n) if i not in rows]
    if missing:
        s = path.name.removeprefix("zoo-lattice-").split("@")[0]
        raise XrpMissing(f"{path}: xrp's rows of {len(missing)} of shots 0..{n - 1} are "
                         f"missing; make them with\n  python benchmarks/lattice_verdict.py "
                         f"--shots {n} --sets {s}\n(or point --xrp-cache at a folder of them)")
    return [rows[i] for i in range(n)]


def join(xrp_rows: list[dict[str, Any]], mx_rows: dict[int, dict[str, Any]]
         ) -> list[dict[str, Any]]:
    """xrp's rows with mxspots's answer of the same shot under ``row["mxspots"]`` (None where
    mxspots has none); a shot whose labels differ between the two is an error (not the same
    shot)."""
    out = []
    for r in xrp_rows:
        m = mx_rows.get(r["index"])
        if m is not None and (m["is_multi"] != r["is_multi"]
                              or m["n_lattices"] != r["n_lattices"]):
            raise ValueError(f"{r['preset']} shot {r['index']}: xrp's row and mxspots's are "
                             "not the same shot (labels differ); remove the stale cache")
        out.append({**r, MX: m})
    return out


def failed(row: dict[str, Any]) -> bool:
    """Whether mxspots failed on this row's frame (or never saw it)."""
    return row.get(MX) is None or row[MX].get("error") is not None


def mx_multi(row: dict[str, Any]) -> float | None:
    """mxspots's verdict as a P(multi): num_lattices >= 2; None where it failed."""
    return None if failed(row) else float(row[MX]["num_lattices"] >= 2)


def cell(s: dict[str, Any]) -> str:
    return "-" if not s["n"] else (f"{fmt(s['accuracy'])} ({fmt(s['multi_recall'])}/"
                                   f"{fmt(s['single_recall'])})")


def table(title: str, groups: dict[str, list[dict]], ms: dict[str, Callable], label: str
          ) -> None:
    """Per group: hits, each method's accuracy (multi / single recall), mxspots's failures."""
    print(f"\n{title}\n| set | hits | " + " | ".join(ms) + " | mxspots failed |")
    print("|---|---|" + "---|" * (len(ms) + 1))
    for name, rows in groups.items():
        print(f"| {name} | {len(rows)} | "
              + " | ".join(cell(score(rows, m, label)) for m in ms.values())
              + f" | {sum(failed(r) for r in rows)} |")


def q(vals: list[float]) -> str:
    """median / p90, ms."""
    return f"{np.median(vals):.0f} / {np.percentile(vals, 90):.0f}" if vals else "-"


def lattices_table(groups: dict[str, list[dict]]) -> None:
    print("\nmxspots's num_lattices on visible hits (shots: 0 / 1 / 2 / 3+ lattices)")
    print("| set | single-lattice hits | multi-lattice hits |\n|---|---|---|")
    for name, rows in groups.items():
        def hist(rs: list[dict]) -> str:
            n = [r[MX]["num_lattices"] for r in rs if not failed(r)]
            return " / ".join(str(c) for c in (n.count(0), n.count(1), n.count(2),
                                               sum(k >= 3 for k in n)))
        print(f"| {name} | {hist([r for r in rows if not r['is_multi_visible']])} | "
              f"{hist([r for r in rows if r['is_multi_visible']])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=120, help="shots per set (default 120)")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--env", type=Path, default=DEFAULT_ENV,
                    help=f"the mxspots side environment (default {DEFAULT_ENV})")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS for mxspots (default 1, as xrp's timings)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds mxspots may take on one frame (default 300)")
    ap.add_argument("--xrp-cache", type=Path, default=ROOT / "data" / "verdict",
                    help="xrp's rows, lattice_verdict.py's cache (default data/verdict)")
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "peer-mxspots",
                    help="mxspots's answers (default data/peer-mxspots)")
    ap.add_argument("--json", type=Path, default=None, help="also write the scores here")
    a = ap.parse_args()
    names = {s: f"zoo-lattice-{s}@{RELEASE}" for s in a.sets}
    try:
        xrp = {s: read_xrp(a.xrp_cache / f"{n}-s{SEED}.jsonl", a.shots) for s, n in names.items()}
        peer = Peer(a.env, a.threads, a.timeout)
    except (EnvMissing, XrpMissing) as e:
        sys.exit(f"error: {e}")

    from xray_platform.core.verdict import load

    per_set: dict[str, list[dict]] = {}
    try:
        for s, name in names.items():
            xrp_rows = xrp[s]
            hits = [r["index"] for r in xrp_rows if r["hit"]]
            mx = run_peer(peer, name, SEED, hits, a.cache / f"{name}-s{SEED}.jsonl",
                          progress=lambda r, s=s: print(
                              f"\r{s}: mxspots shot {r['index']}", end="", file=sys.stderr,
                              flush=True))
            per_set[s] = [r for r in join(xrp_rows, mx) if r["hit"]]
    finally:
        peer.close()
    print(file=sys.stderr)

    ms = {**methods(load()), MX: mx_multi}
    visible = {s: [r for r in rows if r["lattice_visible"]] for s, rows in per_set.items()}
    pooled = {"all sets": [r for rows in visible.values() for r in rows]}
    all_hits = {"all sets": [r for rows in per_set.values() for r in rows]}
    print(f"mxspots {peer.version} (score_data, defaults, OMP_NUM_THREADS={a.threads}): "
          "multi-lattice = num_lattices >= 2. Seed 2, shots 0.."
          f"{a.shots - 1}. Cells: accuracy (multi-lattice recall / single-lattice recall).")
    table("Hits with visible lattices, label is_multi_visible",
          {**visible, **pooled}, ms, "is_multi_visible")
    table("All hits, label is_multi", {**per_set, **all_hits}, ms, "is_multi")
    lattices_table({**visible, **pooled})
    errors = [(r["preset"], r["index"], r[MX]["error"] if r[MX] else "no answer")
              for r in all_hits["all sets"] if failed(r)]
    for preset_name, i, err in errors:
        print(f"mxspots failed: {preset_name} shot {i}: {err}")

    print("\nms per hit (median / p90): mxspots's score_data (spots, ice, lattices) and xrp's "
          "spots + indexing without a cell")
    print("| detector | hits | mxspots | xrp spots | xrp spots + indexing |\n|---|---|---|---|---|")
    rows = all_hits["all sets"]
    for d in sorted({r["detector"] for r in rows}) + ["all"]:
        rs = [r for r in rows if d in ("all", r["detector"])]
        print(f"| {d} | {len(rs)} | {q([r[MX]['ms'] for r in rs if not failed(r)])} | "
              f"{q([r['no_cell']['spots_ms'] for r in rs])} | "
              f"{q([r['no_cell']['spots_ms'] + r['no_cell']['indexing_ms'] for r in rs])} |")
    if a.json:
        a.json.write_text(json.dumps(
            {"mxspots_version": peer.version,
             "visible": {s: {m: score(rs, f, "is_multi_visible") for m, f in ms.items()}
                         for s, rs in {**visible, **pooled}.items()},
             "failed": {s: sum(failed(r) for r in rs) for s, rs in per_set.items()}},
            indent=1))


if __name__ == "__main__":
    main()
