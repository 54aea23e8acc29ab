"""Answers from a running `xrp serve` (`xrp watch ... --server URL`): each frame is sent to its
``POST /v1/predict`` as a CBF (byte-offset compressed, geometry in its header: an EIGER 16M
frame is ~18 MB instead of 73 MB of raw pixels), and the answer is the service's, keyed by the
watcher's own file and frame. No Ray in this process; the service may run anywhere.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import requests

from xray_platform.io.cbf import write_cbf


def frame_cbf(frame: Any) -> bytes:
    """The frame as CBF bytes (masked pixels stay -1)."""
    i = frame.info
    fd, path = tempfile.mkstemp(suffix=".cbf")
    os.close(fd)
    try:
        write_cbf(path, np.rint(frame.image).astype(np.int32), wavelength_A=i.wavelength_A,
                  distance_mm=i.distance_mm, pixel_size_mm=i.pixel_size_mm,
                  beam_center_px=i.beam_center_px)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


class ServerAnswers:
    """Callable: frames -> answers from the service at ``url``."""

    def __init__(self, url: str, timeout_s: float = 120.0, api_key: str | None = None,
                 cell: tuple[float, ...] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        if api_key:  # a service beyond loopback asks for it (live/auth.py)
            self.session.headers["X-API-Key"] = api_key
        self.form = {"cell": ",".join(f"{x:g}" for x in cell)} if cell else {}
        try:
            h = self.session.get(f"{self.url}/healthz", timeout=10).json()
        except (requests.RequestException, ValueError) as e:
            raise ValueError(f"--server {url}: no xrp service answers there ({e}); start one "
                             "with `xrp serve`") from None  # (/healthz needs no key)
        self.models = h.get("models", [])

    def __call__(self, frames: list[Any]) -> list[dict[str, Any]]:
        out = []
        for f in frames:
            key = {"file": f.path, "frame": f.index}
            try:
                r = self.session.post(f"{self.url}/v1/predict", timeout=self.timeout_s,
                                      files={"file": (f"frame-{f.index}.cbf", frame_cbf(f))},
                                      data=self.form)
                body = r.json()
            except (requests.RequestException, ValueError) as e:
                out.append(key | {"error": f"xrp service {self.url}: {e}"})
                continue
            if r.status_code != 200:
                out.append(key | {"error": str(body.get("error", body))})
            else:
                out.append(body | key)
        return out
