"""`xrp watch tcp://...` against a DECTRIS-protocol publisher on 127.0.0.1 (live/publisher.py,
the real stream v1 wire format, bslz4 frames): sustained frames/s and where the time goes,
latency from a frame's send to its point on the live page (an SSE client, p50/p99), queued and
dropped frames when the publisher sends 10x faster than xrp answers, and the watcher's memory
over the run (bounded: it stops by itself).

    python benchmarks/stream.py                          # test, PILATUS 6M, EIGER 16M frames
    python benchmarks/stream.py --detectors pilatus6m --seconds 600   # a 10-minute run
    python benchmarks/stream.py --server http://127.0.0.1:8000        # answers from xrp serve
    python benchmarks/stream.py --encodings --detectors test,pilatus6m  # per encoding

--encodings: frames/s per DECTRIS encoding (v1 raw / lz4 / bslz4, v2 none / bslz4 / lz4, and v2
with 2 thresholds): decode only (message parse + pixels + mask, one thread), and decode + answer
through a real ZeroMQ socket into `watch_stream` in this process (receiver and answerer threads,
classical answers only: hit finder, spots, indexing, d_min; no models), every frame answered.

Models: the watcher's defaults (registry champions, else the zoo).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from xray_platform.live.publisher import GridScan, Publisher, grid_scan_frames

DISTINCT = 4  # distinct simulated frames per detector, sent over and over (renumbered)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:  # the watcher has stopped
        pass
    return float("nan")


class PageClient(threading.Thread):
    """Reads the run's Server-Sent Events like the page does; records when each frame shows."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.seen, self.last = url, {}, {}

    def run(self) -> None:
        while True:
            try:
                with requests.get(self.url, stream=True, timeout=60) as r:
                    for line in r.iter_lines():
                        if line.startswith(b"data: "):
                            snap, now = json.loads(line[6:]), time.time()
                            for row in snap["rows"]:
                                self.seen.setdefault(row["frame"], now)
                            self.last = snap["counters"]
            except (requests.RequestException, ValueError):
                time.sleep(0.5)


def one(detector: str, seconds: float, server: str | None, tmp: Path) -> dict:
    frames, geometry = grid_scan_frames(GridScan(rows=1, cols=DISTINCT, crystal=(0, 1.5),
                                                 radius=2.0, detector=detector))
    port, ui = free_port(), free_port()
    pub = Publisher(f"tcp://127.0.0.1:{port}")
    cmd = [sys.executable, "-m", "xray_platform.cli", "watch", f"tcp://127.0.0.1:{port}",
           "--run", detector, "--store", f"sqlite:///{tmp}/{detector}.db", "--ui", str(ui),
           "--max-backlog", "64"] + (["--server", server] if server else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                requests.get(f"http://127.0.0.1:{ui}/ui", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.3)
        page = PageClient(f"http://127.0.0.1:{ui}/ui/api/runs/{detector}/events")
        page.start()
        memory: list[float] = []
        sent: dict[int, float] = {}

        def record(frame: int, t: float) -> None:
            sent[frame] = t

        def drained(n_sent: int, timeout: float = 600) -> float:
            """When the watcher has received the ``n_sent`` images just sent and answered or
            dropped them all (ZeroMQ sends are asynchronous: the send returns first)."""
            goal = before.get("received", 0) + n_sent
            t0 = time.time()
            while time.time() - t0 < timeout and (page.last.get("received", 0) < goal
                                                  or page.last.get("queued", 1)):
                time.sleep(0.1)
            return time.time()

        # 1) capacity: a burst the watcher cannot keep up with; answered / time to drain it
        before = dict(page.last)
        t_start = time.time()
        reps = max(1, 120 // DISTINCT)
        pub.series(1, frames, geometry, repeat=reps)
        t_end = drained(reps * DISTINCT)
        answered = page.last.get("frames", 0) - before.get("frames", 0)
        rate = answered / max(t_end - t_start, 1e-3)
        # 2) latency send -> page at half that rate, for `seconds`
        page.seen.clear()
        before = dict(page.last)
        n = max(DISTINCT, int(seconds * 0.5 * rate))
        sampler = threading.Thread(target=lambda: [
            (memory.append(rss_mb(proc.pid)), time.sleep(2)) for _ in range(int(seconds) // 2
                                                                            + 30)],
            daemon=True)
        sampler.start()
        pub.series(2, frames, geometry, repeat=max(1, n // DISTINCT), rate_hz=0.5 * rate,
                   on_sent=record)
        drained(max(1, n // DISTINCT) * DISTINCT)
        lat = sorted(1e3 * (page.seen[k] - sent[k]) for k in sent if k in page.seen)
        # 3) a burst 10x faster than xrp answers, queue of 64: queued and dropped
        before = dict(page.last)
        n_burst = int(max(100, 20 * rate))
        peak = [0]
        watch_peak = threading.Thread(target=lambda: [
            (peak.__setitem__(0, max(peak[0], page.last.get("queued", 0))), time.sleep(0.1))
            for _ in range(600)], daemon=True)
        watch_peak.start()
        pub.series(3, frames, geometry, repeat=max(1, n_burst // DISTINCT), rate_hz=10 * rate)
        drained((n_burst // DISTINCT) * DISTINCT)
        after = page.last
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        pub.close()
    memory = [m for m in memory if m == m]  # (NaN: sampled after the watcher stopped)
    timings = {}
    from xray_platform.live.store import RunStore

    answers = RunStore(f"sqlite:///{tmp}/{detector}.db").answers(detector)
    for a in answers[-50:]:
        for k, v in (a.get("timings_ms") or {}).items():
            timings.setdefault(k, []).append(v)
    return {"detector": detector, "shape": list(frames[0].shape), "frames_per_s": rate,
            "latency_p50_ms": statistics.median(lat) if lat else None,
            "latency_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            "latency_n": len(lat),
            "burst_sent": (n_burst // DISTINCT) * DISTINCT, "burst_rate_hz": 10 * rate,
            "burst_answered": after.get("frames", 0) - before.get("frames", 0),
            "burst_dropped": after.get("dropped", 0) - before.get("dropped", 0),
            "burst_peak_queued": peak[0],
            "rss_mb_start": memory[0] if memory else None,
            "rss_mb_end": memory[-1] if memory else None,
            "rss_mb_max": max(memory) if memory else None,
            "ms_per_step": {k: statistics.median(v) for k, v in timings.items()}}


ENCODINGS = [(1, "<", 1), (1, "lz4<", 1), (1, "bs32-lz4<", 1), (2, "none", 1), (2, "bslz4", 1),
             (2, "lz4", 1), (2, "bslz4", 2)]  # (stream version, encoding, thresholds)


def encodings(detector: str, n: int, tmp: Path) -> list[dict]:
    """Decode-only and decode + answer frames/s of each encoding for ``detector``."""
    from xray_platform.live import dectris
    from xray_platform.live.publisher import V2_ENCODINGS
    from xray_platform.live.store import RunStore
    from xray_platform.live.stream import watch_stream

    frames, geometry = grid_scan_frames(GridScan(rows=1, cols=DISTINCT, crystal=(0, 1.5),
                                                 radius=2.0, detector=detector))
    n_slow, n_fast = frames[0].shape
    config = dectris.config_of(geometry, n_fast, n_slow, n)
    from xray_platform.core.answer import predict_frames

    _, _, head = dectris.kind(dectris.header_v1(0, config))  # warm up: imports, caches
    predict_frames([dectris.decode(dectris.kind(dectris.image_v1(0, k, f, "<"))[2], head, "w")
                    for k, f in enumerate(frames)], {})
    out = []
    for version, enc, n_thr in ENCODINGS:
        sent = [[f] * n_thr if n_thr > 1 else f for f in frames]
        msgs = [dectris.image_v1(1, k, f, enc) if version == 1 else
                dectris.image_v2(1, k, f, V2_ENCODINGS[enc]) for k, f in enumerate(sent)]
        _, _, series = dectris.kind(dectris.header_v1(1, config) if version == 1 else
                                    dectris.start_v2(1, config))
        t0, k = time.perf_counter(), 0
        while k < n or time.perf_counter() - t0 < 1.0:  # decode only: >= n frames, >= 1 s
            _, _, image = dectris.kind(msgs[k % len(msgs)])
            dectris.decode(image, series, "bench")
            k += 1
        decode_fps = k / (time.perf_counter() - t0)
        port = free_port()
        pub = Publisher(f"tcp://127.0.0.1:{port}")
        store = RunStore(f"sqlite:///{tmp}/enc-{detector}-{version}-{enc[:4]}-{n_thr}.db")
        result: dict = {}

        def watch(url: str = f"tcp://127.0.0.1:{port}", store=store, result=result) -> None:
            result["s"] = watch_stream(url, store, "enc", {}, max_queue=n + 1,
                                       exit_after_series=1)

        t = threading.Thread(target=watch)
        t.start()
        t0 = time.perf_counter()
        pub.series(1, sent, geometry, version=version, encoding=enc,
                   repeat=max(1, n // DISTINCT))
        t.join()
        e2e = time.perf_counter() - t0
        pub.close()
        s = result["s"]
        mb = sum(len(b) for m in msgs for b in m) / len(msgs) / 2**20
        out.append({"detector": detector, "shape": [n_slow, n_fast], "version": version,
                    "encoding": enc, "thresholds": n_thr, "message_MB": round(mb, 2),
                    "decode_fps": round(decode_fps, 1), "answered": s.answered,
                    "dropped": s.dropped, "errors": s.errors,
                    "decode_answer_fps": round(s.answered / e2e, 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--detectors", default="test,pilatus6m,eiger16m")
    ap.add_argument("--seconds", type=float, default=30.0, help="sustained part per detector")
    ap.add_argument("--server", default=None, help="answer with a running xrp serve")
    ap.add_argument("--encodings", action="store_true", help="frames/s per DECTRIS encoding")
    ap.add_argument("--frames", type=int, default=40, help="--encodings: frames per encoding")
    args = ap.parse_args()
    if args.encodings:
        print("| detector | stream | encoding | thresholds | message MB | decode only "
              "frames/s | decode + answer frames/s |", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for det in args.detectors.split(","):
                for r in encodings(det, args.frames, Path(tmp)):
                    print(json.dumps(r), file=sys.stderr, flush=True)
                    print(f"| {det} {r['shape'][1]}x{r['shape'][0]} | v{r['version']} | "
                          f"{r['encoding']} | {r['thresholds']} | {r['message_MB']} | "
                          f"{r['decode_fps']} | {r['decode_answer_fps']} ({r['answered']} "
                          f"answered, {r['dropped']} dropped) |", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for det in args.detectors.split(","):
            r = one(det, args.seconds, args.server, Path(tmp))
            print(json.dumps(r), flush=True)
            s = r["ms_per_step"]
            print(f"| {det} {r['shape'][1]}x{r['shape'][0]} | {r['frames_per_s']:.2f} | "
                  f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} | "
                  f"{r['burst_sent']} at {r['burst_rate_hz']:.1f}/s: peak queue "
                  f"{r['burst_peak_queued']}, {r['burst_dropped']} dropped, "
                  f"{r['burst_answered']} answered | {r['rss_mb_start']:.0f} -> "
                  f"{r['rss_mb_end']:.0f} (max {r['rss_mb_max']:.0f}) | "
                  + ", ".join(f"{k} {v:.0f}" for k, v in s.items() if v >= 1), flush=True)


if __name__ == "__main__":
    main()
