"""Load test of `xrp serve` (loopback, bounded): sustained requests for a fixed time from N
clients, reporting throughput, latency percentiles, errors and the memory (RSS) of every Serve
replica at the start and the end: a leak shows as growth.

    python benchmarks/load.py                              # 60 s, 4 clients, small models
    python benchmarks/load.py --seconds 300 --clients 8 --frame thau_3_2_0002.cbf.bz2
    python benchmarks/load.py --url http://127.0.0.1:8000  # against a running `xrp serve`

Without --url it starts `xrp serve --config serve_configs/local.yaml` with random-weight
ResNet-18 models (64² inputs) and stops it at the end.
"""

from __future__ import annotations

import argparse
import io
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
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]


def replicas() -> dict[str, list[int]]:
    """Serve replica (deployment -> RSS in MB of each replica process), from ps."""
    out = subprocess.run(["ps", "-eo", "rss=,args="], capture_output=True, text=True).stdout
    found: dict[str, list[int]] = {}
    for line in out.splitlines():
        rss, args = line.strip().split(None, 1)
        m = re.search(r"ServeReplica:xrp:(\w+)", args)
        if m:
            found.setdefault(m.group(1), []).append(int(rss) // 1024)
    return found


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
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
    proc = subprocess.Popen([sys.executable, "-m", "xray_platform.cli", "serve", "--config",
                             str(ROOT / "serve_configs" / "local.yaml"), "--lattice-model",
                             str(tmp / "lattice.pt"), "--resolution-model",
                             str(tmp / "resolution.pt"), "--port", str(port)],
                            cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="a running xrp serve (default: start one)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--frame", type=Path, default=None,
                    help="detector file to post (default: a 256² .npy frame with geometry)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="xrp-load-"))
    proc = None
    url = a.url
    if url is None:
        proc, url = start_server(tmp)
    if a.frame:
        name, data, form = a.frame.name, a.frame.read_bytes(), {}
    else:
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(0).poisson(2.0, (256, 256)).astype(np.int32))
        name, data = "frame.npy", buf.getvalue()
        form = {"wavelength_A": "1.0", "distance_mm": "150", "pixel_size_mm": "0.172",
                "beam_center_x_px": "128", "beam_center_y_px": "128"}
    try:
        t0 = time.time()
        while True:  # up and answering
            try:
                if requests.post(f"{url}/v1/predict", files={"file": (name, data)}, data=form,
                                 timeout=60).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() - t0 > 300:
                sys.exit(f"{url} did not answer within 300 s")
            time.sleep(1)
        for _ in range(5):
            requests.post(f"{url}/v1/predict", files={"file": (name, data)}, data=form)
        mem0 = replicas()
        lat: list[float] = []
        codes: dict[int, int] = {}
        lock = threading.Lock()
        stop = time.perf_counter() + a.seconds

        def client() -> None:
            with requests.Session() as s:
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    try:
                        c = s.post(f"{url}/v1/predict", files={"file": (name, data)},
                                   data=form, timeout=120).status_code
                    except requests.RequestException:
                        c = -1
                    with lock:
                        codes[c] = codes.get(c, 0) + 1
                        if c == 200:
                            lat.append(1e3 * (time.perf_counter() - t))

        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        mem1 = replicas()
        n = sum(codes.values())
        lat.sort()

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q / 100 * (len(lat) - 1)))] if lat else float("nan")

        print(f"{url}: {a.clients} clients for {wall:.0f} s, frame {name} ({len(data)} bytes)")
        print(f"requests {n}, {n / wall:.1f} req/s; errors {n - codes.get(200, 0)} "
              f"({100 * (n - codes.get(200, 0)) / max(n, 1):.2f} %); codes {codes}")
        print(f"latency ms: p50 {pct(50):.0f}, p90 {pct(90):.0f}, p99 {pct(99):.0f}, "
              f"max {lat[-1] if lat else float('nan'):.0f}, mean "
              f"{statistics.fmean(lat) if lat else float('nan'):.0f}")
        for dep in sorted(set(mem0) | set(mem1)):
            print(f"replica RSS {dep}: {mem0.get(dep)} MB -> {mem1.get(dep)} MB")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
