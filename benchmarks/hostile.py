"""Hostile uploads against `xrp serve` (loopback): per case the status, the time to answer, the
peak memory (RSS) of the Preprocessor and Ingress replicas above their level before the case,
the start of the error message, and whether a good frame is answered 200 right after.

    python benchmarks/hostile.py            # starts xrp serve (local.yaml, zoo resolution model)
    python benchmarks/hostile.py --url http://127.0.0.1:8000

The good frame is the real PILATUS 6M thaumatin hit in ../shared/data/real; the bombs wrap its
decompressed CBF. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
sys.path.insert(0, str(ROOT / "benchmarks"))
from load import replicas, start_server, stop_server, wait_until_answering  # noqa: E402

GEO = {"wavelength_A": "1.0", "distance_mm": "150", "pixel_size_mm": "0.172",
       "beam_center_x_px": "128", "beam_center_y_px": "128"}


def _npy(a: np.ndarray, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return gzip.compress(buf.getvalue(), 1) if gz else buf.getvalue()


def gzip_bomb(cbf: bytes, gib: int) -> bytes:
    """The frame followed by ``gib`` GiB of zeros, gzipped (concatenated gzip members)."""
    zeros = gzip.compress(b"\0" * (256 << 20), compresslevel=9)
    return gzip.compress(cbf, 1) + zeros * (4 * gib)


def bzip2_bomb(cbf: bytes, gib: int) -> bytes:
    """The same with bzip2 (concatenated bzip2 streams)."""
    zeros = bz2.compress(b"\0" * (256 << 20), 9)
    return bz2.compress(cbf, 1) + zeros * (4 * gib)


def cases(cbf: bytes, good: bytes) -> list[tuple[str, str, bytes | None, dict]]:
    """(label, upload name, bytes or None for 'no file field', form fields)."""
    header_end = cbf.index(b"\x0c\x1a\x04\xd5")
    head, body = cbf[:header_end], cbf[header_end:]
    double = head.replace(b"X-Binary-Size-Fastest-Dimension: 2463",
                          b"X-Binary-Size-Fastest-Dimension: 4926") + body
    giant = head.replace(b"X-Binary-Size-Fastest-Dimension: 2463",
                         b"X-Binary-Size-Fastest-Dimension: 100000").replace(
        b"X-Binary-Size-Second-Dimension: 2527", b"X-Binary-Size-Second-Dimension: 100000") + body
    return [
        ("gzip bomb (frame + 3 GiB zeros)", "bomb.cbf.gz", gzip_bomb(cbf, 3), {}),
        ("bzip2 bomb (frame + 1 GiB zeros)", "bomb.cbf.bz2", bzip2_bomb(cbf, 1), {}),
        ("12,000² frame of zeros (.npy.gz)", "huge.npy.gz",
         _npy(np.zeros((12_000, 12_000), np.uint8), gz=True), GEO),
        ("upload over max_upload_mb (80 MiB)", "big.cbf", b"\0" * (80 << 20), {}),
        ("distance_mm 1e308", "thau.cbf.bz2", good, {"distance_mm": "1e308"}),
        ("wavelength_A 1e-300", "thau.cbf.bz2", good, {"wavelength_A": "1e-300"}),
        ("pixel_size_mm 1e9", "thau.cbf.bz2", good, {"pixel_size_mm": "1e9"}),
        ("beam centre (1e12, -1e12)", "thau.cbf.bz2", good,
         {"beam_center_x_px": "1e12", "beam_center_y_px": "-1e12"}),
        ("2 x 2 .npy", "tiny.npy", _npy(np.zeros((2, 2), np.int32)), GEO),
        ("(3, 4, 5) .npy", "stack.npy", _npy(np.zeros((3, 4, 5), np.int32)), GEO),
        ("truncated .cbf.bz2", "cut.cbf.bz2", good[: len(good) // 2], {}),
        ("CBF header 4926 wide over 2463 of data", "double.cbf", double, {}),
        ("CBF header 100000 x 100000", "giant.cbf", giant, {}),
        (".npy without geometry", "frame.npy", _npy(np.zeros((256, 256), np.int32)), {}),
        ("EIGER master without its data file", "dectris_eiger_master.h5",
         (REAL / "dectris_eiger_master.h5").read_bytes(), {}),
        ("no file field", "", None, {"distance_mm": "100"}),
        ("non-numeric form field", "thau.cbf.bz2", good, {"distance_mm": "far"}),
    ]


def peak_during(fn) -> tuple[object, dict[str, int]]:
    """fn()'s result and the peak RSS (MB, summed over replicas) per deployment meanwhile."""
    peak: dict[str, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for d, rss in replicas().items():
                peak[d] = max(peak.get(d, 0), sum(rss))
            time.sleep(0.05)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        return fn(), peak
    finally:
        done.set()
        t.join()


def post(url: str, name: str, data: bytes | None, form: dict) -> requests.Response:
    files = {"file": (name, data)} if data is not None else None
    return requests.post(f"{url}/v1/predict", files=files, data=form, timeout=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="a running xrp serve (default: start one)")
    a = ap.parse_args()
    good = (REAL / "thau_3_2_0002.cbf.bz2").read_bytes()
    cbf = bz2.decompress(good)
    proc, url = (None, a.url) if a.url else start_server(Path(tempfile.mkdtemp()), zoo=True)
    try:
        wait_until_answering(url, "thau.cbf.bz2", good, {})
        print(f"{url}: good frame thau_3_2_0002.cbf.bz2; RSS: peak during the case minus before")
        print("| case | upload | status | ms | Preprocessor +MB | Ingress +MB | message | "
              "good frame after |")
        print("|---|---|---|---|---|---|---|---|")
        for label, name, data, form in cases(cbf, good):
            before = {d: sum(r) for d, r in replicas().items()}
            t = time.perf_counter()
            r, peak = peak_during(lambda: post(url, name, data, form))  # noqa: B023
            ms = 1e3 * (time.perf_counter() - t)
            try:
                msg = r.json().get("error", "")
            except ValueError:
                msg = r.text
            after = post(url, "thau.cbf.bz2", good, {}).status_code
            grow = {d: peak.get(d, 0) - before.get(d, 0) for d in ("Preprocessor", "Ingress")}
            size = f"{len(data) / 2**20:.1f} MiB" if data is not None else "-"
            print(f"| {label} | {size} | {r.status_code} | {ms:.0f} | {grow['Preprocessor']} | "
                  f"{grow['Ingress']} | {msg[:70]} | {after} |", flush=True)
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
