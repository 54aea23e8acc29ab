"""A DECTRIS-protocol publisher of simulated frames: the detector side of the stream interface,
for tests, benchmarks and trying `xrp watch tcp://...` without a detector. It binds a ZeroMQ
PUSH socket, as the detector's DCU does, and sends a series in the real wire format
(live/dectris.py): header, images, end of series. No Ray.

The frames are a grid scan over a crystal: the cells within ``radius`` cells of ``crystal``
hold a lattice (strongest at its centre), the others are blanks (background only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xray_platform.live import dectris


@dataclass(frozen=True)
class GridScan:
    rows: int = 4
    cols: int = 5
    crystal: tuple[float, float] = (1.5, 2.0)  # (row, col) of the crystal's centre
    radius: float = 1.2  # cells
    detector: str = "test"
    seed: int = 7
    snake: bool = False
    distance_mm: float | None = None  # None: drawn with the rest of the geometry

    def cell(self, frame: int) -> tuple[int, int]:
        """(row, col) of a frame (snake: odd rows run backwards)."""
        r, c = divmod(frame, self.cols)
        return r, (self.cols - 1 - c if self.snake and r % 2 else c)

    def is_hit(self, frame: int) -> bool:
        r, c = self.cell(frame)
        return math.hypot(r - self.crystal[0], c - self.crystal[1]) <= self.radius

    @property
    def n(self) -> int:
        return self.rows * self.cols


def grid_scan_frames(scan: GridScan) -> tuple[list[np.ndarray], object]:
    """The scan's frames (uint32, slow x fast) and their shared geometry."""
    from dataclasses import replace

    from xray_platform.physics.presets import preset
    from xray_platform.physics.sampling import sample_params
    from xray_platform.physics.simulate import render_frame

    sim = preset("quick-lattice").sim.with_(detectors=(scan.detector,), n_lattices={1: 1.0},
                                            p_ice=0.0, p_hot_pixels=0.0)
    base = sample_params(scan.seed, sim)
    if scan.distance_mm is not None:
        base = replace(base, distance_mm=scan.distance_mm)
    frames = []
    for i in range(scan.n):
        r, c = scan.cell(i)
        closeness = 1 - math.hypot(r - scan.crystal[0], c - scan.crystal[1]) / scan.radius
        p = replace(base, seed=scan.seed * 1000 + i, spot_scale=2e4 * (0.3 + closeness),
                    d_B=2.0) if scan.is_hit(i) else \
            replace(base, seed=scan.seed * 1000 + i, crystal_form=None, U=(),
                    lattice_scale=(), misorientation_deg=())
        img = render_frame(p).numpy()
        frames.append(np.where(img < 0, np.iinfo(np.uint32).max, img).astype("<u4"))
    return frames, base.geometry


#: the publisher's v2 encodings (the v1 names work too) -> the compression tag's algorithm
V2_ENCODINGS = {"<": None, "none": None, "bslz4": "bslz4", "bs32-lz4<": "bslz4",
                "bs16-lz4<": "bslz4", "lz4": "lz4", "lz4<": "lz4"}


class Publisher:
    """A PUSH socket bound at ``url`` (e.g. tcp://127.0.0.1:9999)."""

    def __init__(self, url: str) -> None:
        import zmq

        self.sock = zmq.Context.instance().socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 2000)
        for attempt in range(50):  # a port just closed is freed by ZeroMQ's I/O thread soon
            try:
                self.sock.bind(url)
                break
            except zmq.ZMQError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        self.url = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def series(self, series: int, frames: list[np.ndarray] | list[list[np.ndarray]],
               geometry: object, *, version: int = 1, encoding: str = "bs32-lz4<",
               rate_hz: float | None = None, mask: np.ndarray | None = None, repeat: int = 1,
               on_sent: Callable[[int, float], None] | None = None,
               start_extra: dict | None = None,
               user_data: Callable[[int], dict | None] | None = None) -> float:
        """Send one series (its frames ``repeat`` times over, numbered on) at ``rate_hz``
        (None: as fast as the socket takes them); ``on_sent(frame, time.time())`` after each
        image. ``encoding``: v1 the ``dimage_d`` encoding, v2 the compression (V2_ENCODINGS).
        v2 only: a frame may be a list of images, one per threshold channel; ``start_extra``
        adds fields to the start message (goniometer, user_data, ...). ``user_data(frame)``:
        each image's user data (v2; v1: its image appendix, as JSON), e.g. its motor
        positions (live/positions.py). Returns the seconds it took."""
        n_slow, n_fast = np.shape(frames[0])[-2:]
        config = dectris.config_of(geometry, n_fast, n_slow, len(frames) * repeat)
        t0 = time.perf_counter()
        if version == 1 and (start_extra or isinstance(frames[0], list)):
            raise ValueError("stream v1 has one threshold and no start fields beyond its "
                             "config: multi-threshold frames and start_extra need version=2")
        self.sock.send_multipart(dectris.header_v1(series, config, mask) if version == 1
                                 else dectris.start_v2(series, config, mask, extra=start_extra))
        encoded = [dectris.image_v1(series, 0, f, encoding) if version == 1 else
                   dectris.image_v2(series, 0, f, V2_ENCODINGS[encoding]) for f in frames]
        for k in range(len(frames) * repeat):
            parts = _renumber(encoded[k % len(frames)], k, version,
                              user_data(k) if user_data else None)
            if rate_hz:
                time.sleep(max(0.0, t0 + k / rate_hz - time.perf_counter()))
            self.sock.send_multipart(parts)
            if on_sent:
                on_sent(k, time.time())
        self.sock.send_multipart(dectris.end_v1(series) if version == 1
                                 else dectris.end_v2(series))
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close()


def _renumber(parts: list[bytes], frame: int, version: int, user: dict | None = None
              ) -> list[bytes]:
    """An encoded image message with another frame number and, given, user data (encoding
    costs more than sending)."""
    import json

    if version == 1:
        head = json.loads(parts[0])
        head["frame"] = frame
        return [json.dumps(head).encode(), *parts[1:4],
                *([json.dumps(user).encode()] if user is not None else parts[4:])]
    import cbor2

    msg = cbor2.loads(parts[0])
    msg["image_id"] = frame
    if user is not None:
        msg["user_data"] = user
    return [cbor2.dumps(msg)]
