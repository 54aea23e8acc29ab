"""Load test of `xrp serve` (loopback, bounded): sustained requests for a fixed time from N
clients, reporting throughput, latency percentiles, errors and the memory (RSS) of every Serve
replica at the start and the end: a leak shows as growth.

    python benchmarks/load.py                        # 1, 4, 16 clients x 60 s, small models
    python benchmarks/load.py --zoo --frame ../shared/data/real/thau_3_2_0002.cbf.bz2
    python benchmarks/load.py --seconds 600 --clients 4    # 10-minute bounded load
    python benchmarks/load.py --url http://127.0.0.1:8000  # against a running `xrp serve`

Without --url it starts `xrp serve --config serve_configs/local.yaml` with random-weight
ResNet-18 models (64² inputs) and stops it at the end.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]


def replicas() -> dict[str, list[int]]:
    """Serve replica (deployment -> RSS in MB of each replica process), from ps."""
    out = subprocess.run(["ps", "-ww", "-eo", "rss=,args="], capture_output=True, text=True).stdout
    found: dict[str, list[int]] = {}
    for line in out.splitlines():
        rss, args = line.strip().split(None, 1)
        m = re.search(r"ServeReplica:xrp:(\w+)", args)
        if m:
            found.setdefault(m.group(1), []).append(int(rss) // 1024)
    return found


def start_server(tmp: Path, zoo: bool = False) -> tuple[subprocess.Popen, str]:
    import torch

    from xray_platform.core.models import build_model, save_model
    from xray_platform.core.preprocess import Preprocessing

    torch.manual_seed(0)
    meta = {"depth": 18, "init": "scratch", "preprocessing": Preprocessing(64).to_dict()}
    for task, label in (("lattice", "is_multi"), ("resolution", "d_vis")):
        save_model(tmp / f"{task}.pt", build_model(task, 18),
                   {**meta, "task": task, "label": label})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    models = (["--lattice-model", "none", "--resolution-model", "zoo"] if zoo else
              ["--lattice-model", str(tmp / "lattice.pt"), "--resolution-model",
               str(tmp / "resolution.pt")])
    proc = subprocess.Popen([sys.executable, "-m", "xray_platform.cli", "serve", "--config",
                             str(ROOT / "serve_configs" / "local.yaml"), *models,
                             "--port", str(port)],
                            cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def wait_until_answering(url: str, name: str, data: bytes, form: dict,
                         limit_s: float = 300.0) -> None:
    """Post the frame until the service answers 200 (it is up), or exit after ``limit_s``."""
    t0 = time.time()
    while True:
        try:
            if requests.post(f"{url}/v1/predict", files={"file": (name, data)}, data=form,
                             timeout=60).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.time() - t0 > limit_s:
            sys.exit(f"{url} did not answer within {limit_s:.0f} s")
        time.sleep(1)


def stop_server(proc: subprocess.Popen | None) -> None:
    """Stop a server start_server started (SIGINT, then kill after 60 s)."""
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def load(url: str, name: str, data: bytes, form: dict, clients: int, seconds: float) -> dict:
    """``clients`` threads posting the frame back to back for ``seconds``."""
    mem0 = replicas()
    lat: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        with requests.Session() as s:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    c = s.post(f"{url}/v1/predict", files={"file": (name, data)}, data=form,
                               timeout=120).status_code
                except requests.RequestException:
                    c = -1
                with lock:
                    codes[c] = codes.get(c, 0) + 1
                    if c == 200:
                        lat.append(1e3 * (time.perf_counter() - t))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - start
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q / 100 * (len(lat) - 1)))] if lat else float("nan")

    n = sum(codes.values())
    return {"n": n, "wall": wall, "errors": n - codes.get(200, 0), "codes": codes,
            "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": lat[-1] if lat else math.nan,
            "mean": statistics.fmean(lat) if lat else math.nan, "mem0": mem0,
            "mem1": replicas()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="a running xrp serve (default: start one)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", default="1,4,16",
                    help="client counts, one table row each (comma-separated)")
    ap.add_argument("--zoo", action="store_true",
                    help="serve the shipped zoo models instead of random-weight ones")
    ap.add_argument("--frame", type=Path, default=None,
                    help="detector file to post (default: a 256² .npy frame with geometry)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="xrp-load-"))
    proc = None
    url = a.url
    if url is None:
        proc, url = start_server(tmp, a.zoo)
    if a.frame:
        name, data, form = a.frame.name, a.frame.read_bytes(), {}
    else:
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(0).poisson(2.0, (256, 256)).astype(np.int32))
        name, data = "frame.npy", buf.getvalue()
        form = {"wavelength_A": "1.0", "distance_mm": "150", "pixel_size_mm": "0.172",
                "beam_center_x_px": "128", "beam_center_y_px": "128"}
    try:
        wait_until_answering(url, name, data, form)
        for _ in range(5):
            requests.post(f"{url}/v1/predict", files={"file": (name, data)}, data=form)
        print(f"{url}: frame {name} ({len(data)} bytes), {a.seconds:.0f} s per row")
        print("| clients | requests | req/s | errors | p50 ms | p90 ms | p99 ms | max ms |"
              " replica RSS MB (start -> end) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n_clients in [int(c) for c in a.clients.split(",")]:
            r = load(url, name, data, form, n_clients, a.seconds)
            rss = "; ".join(f"{d} {r['mem0'].get(d)} -> {r['mem1'].get(d)}"
                            for d in sorted(set(r["mem0"]) | set(r["mem1"])))
            print(f"| {n_clients} | {r['n']} | {r['n'] / r['wall']:.2f} | {r['errors']} "
                  f"{r['codes']} | {r['p50']:.0f} | {r['p90']:.0f} | {r['p99']:.0f} | "
                  f"{r['max']:.0f} | {rss} |", flush=True)
    finally:
        stop_server(proc)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
