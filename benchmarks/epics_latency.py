"""EPICS update latency of `xrp watch --epics`: from a frame answered to its PV changed.

A DECTRIS-protocol publisher (live/publisher.py, stream v1 bslz4) sends a grid scan to a real
`xrp watch tcp://... --epics PREFIX` process (its default models); this script monitors
PREFIX:FRAMES with caproto's threading client, as a beamline client would, on loopback.

- answered: the frame's ``answered`` time in the run store (when the watcher wrote its batch
  of answers, live/store.py), the moment the answer exists for anyone;
- PV changed: when the client's monitor callback receives a FRAMES value counting that frame.

Frames are sent at ``--rate``; the watcher answers what has arrived in batches (up to 8), and a
batch's frames share its store time, so every frame's latency is counted from the write of its
batch (the SQLite commit included); p50/p99 are printed with the count. Channel access runs on
free loopback ports (EPICS_CA_SERVER_PORT etc. set for both sides).

    python benchmarks/epics_latency.py                    # 120 frames of the test detector
    python benchmarks/epics_latency.py --frames 300 --rate 5 --detector pilatus6m
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xray_platform.live.epics import free_ca_port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--rate", type=float, default=4.0, help="frames/s sent")
    ap.add_argument("--detector", default="test")
    ap.add_argument("--prefix", default="XRPBENCH:")
    args = ap.parse_args()
    os.environ.update(
        EPICS_CA_SERVER_PORT=str(free_ca_port()),
        EPICS_CA_REPEATER_PORT=str(free_ca_port()),
        EPICS_CA_ADDR_LIST="127.0.0.1",
        EPICS_CA_AUTO_ADDR_LIST="NO",
        EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1",
        EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
    )
    from caproto.threading.client import Context

    from xray_platform.live.publisher import GridScan, Publisher, grid_scan_frames
    from xray_platform.live.store import RunStore

    scan = GridScan(rows=2, cols=4, crystal=(0.5, 1.5), radius=1.2, detector=args.detector)
    frames, geometry = grid_scan_frames(scan)
    tmp = Path(tempfile.mkdtemp(prefix="xrp-epics-"))
    url = f"tcp://127.0.0.1:{free_ca_port()}"
    pub = Publisher(url)
    store_url = f"sqlite:///{tmp}/runs.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xray_platform.cli",
            "watch",
            url,
            "--run",
            "bench",
            "--store",
            store_url,
            "--epics",
            args.prefix,
            "--exit-after-series",
            "1",
            "--max-backlog",
            "10000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[tuple[float, int]] = []

    def on_frames(_sub, response) -> None:
        seen.append((time.time(), int(response.data[0])))

    ctx = Context()
    try:
        t0 = time.time()
        while True:  # the watcher loads its models, then serves the PVs
            try:
                (pv,) = ctx.get_pvs(args.prefix + "FRAMES", timeout=2)
                pv.wait_for_connection(timeout=2)
                break
            except TimeoutError:
                if proc.poll() is not None or time.time() - t0 > 300:
                    raise SystemExit(
                        f"xrp watch --epics did not start:\n{proc.stdout.read()}"
                    ) from None
        sub = pv.subscribe()
        sub.add_callback(on_frames)
        time.sleep(1.0)
        reps = max(1, args.frames // len(frames))
        pub.series(1, frames, geometry, repeat=reps, rate_hz=args.rate)
        out, _ = proc.communicate(timeout=600)
        time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
        ctx.disconnect()
        pub.close()
    answers = RunStore(store_url).engine
    import sqlalchemy as sa

    from xray_platform.live.store import ANSWERS

    with answers.connect() as c:
        stamps = [
            r.answered for r in c.execute(sa.select(ANSWERS.c.answered).order_by(ANSWERS.c.seq))
        ]
    lat = []
    for k, t_answered in enumerate(stamps, 1):  # the k-th answer: FRAMES reaching k
        t_pv = next((t for t, v in seen if v >= k), None)
        if t_pv is not None:
            lat.append(1e3 * (t_pv - t_answered))
    lat.sort()
    result = {
        "detector": args.detector,
        "frames_answered": len(stamps),
        "rate_hz": args.rate,
        "latency_n": len(lat),
        "latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
        "latency_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
        "latency_max_ms": round(lat[-1], 2) if lat else None,
        "monitor_updates": len(seen),
    }
    print(json.dumps(result))
    print(
        f"EPICS update latency (frame answered -> {args.prefix}FRAMES changed at a caproto "
        f"client), {result['latency_n']} frames: p50 {result['latency_p50_ms']} ms, p99 "
        f"{result['latency_p99_ms']} ms (max {result['latency_max_ms']} ms)"
    )


if __name__ == "__main__":
    main()
