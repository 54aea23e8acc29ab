"""Serving figures: frames/s and p50/p99 latency through the Ray Serve graph with N concurrent
clients (loopback only, bounded in count and time), the same work in one process at the same
batch size and their ratio, and the per-frame cost of `xrp predict` for one frame on one core
(decode + grid mapping + hit finding + models).

    python benchmarks/serve.py                           # real PILATUS 6M CBF, small models
    python benchmarks/serve.py --clients 1,4 --requests 60 --frame my.cbf
    python benchmarks/serve.py --lattice-model champion --resolution-model champion
    python benchmarks/serve.py --device cuda --grid 512  # on a GPU machine

Models: by default random-weight ResNet-18s on 64² inputs (speed does not depend on the
weights); --grid 512 for the full-size input, or real model files / registry references.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import os
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_FRAME = ROOT.parent / "shared" / "data" / "real" / "thau_3_2_0002.cbf.bz2"


def _plain(path: Path, tmp: Path) -> Path:
    """The frame without .bz2/.gz (beamlines write plain CBF; the repository's copies are
    compressed)."""
    raw = path.read_bytes()
    if raw[:3] == b"BZh":
        raw = bz2.decompress(raw)
    elif raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    else:
        return path
    out = tmp / path.name.removesuffix(".bz2").removesuffix(".gz")
    out.write_bytes(raw)
    return out


def _models(tmp: Path, grid: int) -> dict[str, str]:
    import torch

    from xray_platform.core.models import build_model, save_model
    from xray_platform.core.preprocess import Preprocessing

    torch.manual_seed(0)
    out = {}
    for task, label in (("lattice", "is_multi"), ("resolution", "d_vis")):
        path = tmp / f"{task}.pt"
        save_model(path, build_model(task, 18), {"task": task, "depth": 18, "init": "scratch",
                                                 "label": label,
                                                 "preprocessing": Preprocessing(grid).to_dict()})
        out[task] = str(path)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def in_process(frame_path: Path, specs: dict[str, str], n: int, batch: int, device: str,
               mlflow_uri: str | None) -> dict[str, float]:
    """The whole graph in one process (xrp predict's path): per-frame ms by step."""
    import torch

    from xray_platform.core.answer import predict_frames
    from xray_platform.io.formats import read_frame
    from xray_platform.tracking.resolve import load

    torch.set_num_threads(1)
    models = {t: load(t, s, mlflow_uri).to(device) for t, s in specs.items()}
    read_frame(frame_path)  # warm caches (the pixel -> grid map of this geometry)
    predict_frames([read_frame(frame_path)], models)
    steps: dict[str, list[float]] = {"decode": [], "total": []}
    for _ in range(max(1, n // batch)):
        t0 = time.perf_counter()
        frames = [read_frame(frame_path) for _ in range(batch)]
        t1 = time.perf_counter()
        recs = predict_frames(frames, models, always_resolution=True)
        t2 = time.perf_counter()
        steps["decode"].append(1e3 * (t1 - t0) / batch)
        steps["total"].append(1e3 * (t2 - t0) / batch)
        for k in ("grid_ms", "hitfinder_ms", "lattice_ms", "resolution_ms"):
            steps.setdefault(k.removesuffix("_ms"), []).extend(
                r["timings_ms"][k] for r in recs)
    return {k: statistics.median(v) for k, v in steps.items()}


def _load(url: str, name: str, data: bytes, clients: int, n: int, max_s: float
          ) -> tuple[list[float], float]:
    """``clients`` threads posting the frame until ``n`` requests or ``max_s`` seconds."""
    import requests

    lat: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + max_s
    todo = [n]

    def client() -> None:
        with requests.Session() as sess:
            while time.perf_counter() < deadline:
                with lock:
                    if todo[0] <= 0:
                        return
                    todo[0] -= 1
                t0 = time.perf_counter()
                r = sess.post(url, files={"file": (name, data)},
                              data={"always_resolution": "true"}, timeout=120)
                r.raise_for_status()
                with lock:
                    lat.append(1e3 * (time.perf_counter() - t0))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


def through_serve(frame_path: Path, specs: dict[str, str], clients: list[int], n: int,
                  max_s: float, batch: int, mlflow_uri: str | None) -> list[dict]:
    import requests
    from ray import serve

    from xray_platform.orchestration.env import prepare_ray_env

    prepare_ray_env(None)
    from xray_platform.orchestration.env import init_ray
    from xray_platform.serve.app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_ray(None)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"lattice_model": specs["lattice"],
                         "resolution_model": specs["resolution"], "mlflow_uri": mlflow_uri,
                         "max_batch_size": batch, "max_upload_mb": 256}), name="xrp")
    url = f"http://127.0.0.1:{port}/v1/predict"
    data = frame_path.read_bytes()
    for _ in range(3):  # warm-up
        requests.post(url, files={"file": (frame_path.name, data)},
                      data={"always_resolution": "true"}, timeout=120).raise_for_status()
    out = []
    for c in clients:
        lat, wall = _load(url, frame_path.name, data, c, n, max_s)
        out.append({"clients": c, "frames": len(lat), "frames_per_s": len(lat) / wall,
                    "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99)})
    serve.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frame", type=Path, default=DEFAULT_FRAME)
    ap.add_argument("--clients", default="1,4", help="concurrent clients, comma-separated")
    ap.add_argument("--requests", type=int, default=40, help="requests per client setting")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="per client setting")
    ap.add_argument("--batch", type=int, default=4, help="model batch size (both paths)")
    ap.add_argument("--grid", type=int, default=64, help="input grid of the default models")
    ap.add_argument("--lattice-model", default=None)
    ap.add_argument("--resolution-model", default=None)
    ap.add_argument("--mlflow-uri", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-serve", action="store_true")
    a = ap.parse_args()
    if not a.frame.is_file():
        sys.exit(f"frame {a.frame} not found (give --frame)")
    tmp = Path(tempfile.mkdtemp(prefix="xrp-bench-"))
    specs = _models(tmp, a.grid)
    if a.lattice_model:
        specs["lattice"] = a.lattice_model
    if a.resolution_model:
        specs["resolution"] = a.resolution_model
    plain = _plain(a.frame, tmp)
    print(f"frame {a.frame.name}; models {specs}; {os.cpu_count()} CPU(s); device {a.device}")
    for label, path in (("plain CBF", plain), ("as stored", a.frame)):
        r = in_process(path, specs, 8, 1, a.device, a.mlflow_uri)
        print(f"xrp predict, one frame, one core ({label}): {r['total']:.0f} ms/frame "
              f"(decode {r['decode']:.0f}, grids {r['grid']:.0f}, hit finder "
              f"{r['hitfinder']:.1f}, lattice {r['lattice']:.1f}, resolution "
              f"{r['resolution']:.1f} ms)")
    one = in_process(plain, specs, 8, 1, a.device, a.mlflow_uri)["total"]
    ref = in_process(plain, specs, 4 * a.batch, a.batch, a.device, a.mlflow_uri)
    print(f"in-process graph, batch {a.batch}: {ref['total']:.0f} ms/frame = "
          f"{1e3 / ref['total']:.1f} frames/s on one core")
    if not a.skip_serve:
        clients = [int(c) for c in a.clients.split(",")]
        for r in through_serve(plain, specs, clients, a.requests, a.max_seconds, a.batch,
                               a.mlflow_uri):
            # one client: its latency vs one frame in process; several: throughput vs the
            # in-process batch throughput on one core
            ratio = (r["p50_ms"] / one if r["clients"] == 1 else
                     (1e3 / ref["total"]) / r["frames_per_s"])
            what = "p50 / in-process frame" if r["clients"] == 1 else \
                "in-process frames/s / graph frames/s"
            print(f"Serve graph, {r['clients']} client(s): {r['frames_per_s']:.2f} frames/s, "
                  f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms ({r['frames']} frames);"
                  f" {what} = {ratio:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
