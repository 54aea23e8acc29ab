"""`xrp watch tcp://HOST:PORT`: answer the frames of a DECTRIS detector's ZeroMQ stream as they
arrive (live/dectris.py has the wire format) and append the answers to the run store. No Ray.

Two threads, so the detector is never blocked:

- the **receiver** drains the PULL socket all the time and keeps the still-encoded images in a
  bounded queue; when the queue is full the oldest image is dropped and counted (ZeroMQ's own
  buffer stays nearly empty, so the detector's PUSH never stalls);
- the **answerer** (the caller's thread) takes images in batches, decodes them and answers them
  through the frame -> answer path of `xrp predict` (core/answer.py), then stores the answers,
  the counters and, about once a second, a thumbnail of the latest frame.

A frame is keyed by (source#series, frame number): a restarted watcher never answers a frame
the store already holds. Stream v2: one threshold channel is answered (``threshold``, 1-based),
stored with each answer (``threshold``, ``threshold_energy_eV``) and with the run; each series'
start-message fields (goniometer, user_data, channels, threshold energies) are kept with the run
(run_info ``series``: {series id: fields}).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xray_platform.live.dectris import Image, Series, StreamError, decode, frame_file, kind
from xray_platform.live.positions import Positions
from xray_platform.live.store import RunStore
from xray_platform.live.watch import WatchStats, _Thumbs, answerer, keep_positions

POLL_MS = 100
MAX_QUEUE_BYTES = 2 << 30  # 2 GiB of encoded frames (~500 bslz4 EIGER 16M frames)


@dataclass
class StreamStats(WatchStats):
    received: int = 0
    bad_messages: int = 0
    series_ended: int = 0
    last_error: str | None = None


@dataclass
class Receiver:
    """Drains a ZeroMQ PULL socket into a bounded queue of encoded images (its own thread)."""

    url: str
    max_queue: int = 256
    threshold: int = 1  # v2: the threshold channel kept (1-based)
    max_queue_bytes: int = MAX_QUEUE_BYTES  # encoded bytes held, whatever the frame count
    queue: deque = field(default_factory=deque)
    series: dict[int, Series] = field(default_factory=dict)
    received: int = 0
    dropped: int = 0
    bad: int = 0
    ended: int = 0
    last_error: str | None = None

    def __post_init__(self) -> None:
        import zmq

        self._lock = threading.Lock()
        self._bytes = 0
        self._stop = threading.Event()
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.connect(self.url)
        except zmq.ZMQError as e:
            self._sock.close()
            raise ValueError(f"{self.url}: not a ZeroMQ address xrp can connect to ({e}); "
                             "the DECTRIS stream is tcp://DETECTOR:9999") from None
        self._thread = threading.Thread(target=self._run, name="xrp-stream-receiver",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(POLL_MS):
                continue
            parts = self._sock.recv_multipart()
            try:
                what, series, msg = kind(parts, self.threshold)
            except (StreamError, ValueError, KeyError, TypeError) as e:
                with self._lock:
                    self.bad += 1
                    self.last_error = str(e)
                continue
            with self._lock:
                if what == "header":
                    self.series[series] = msg
                elif what == "image":
                    self.received += 1
                    self.queue.append(msg)
                    self._bytes += len(msg.blob)
                    while len(self.queue) > self.max_queue or (
                            self._bytes > self.max_queue_bytes and len(self.queue) > 1):
                        self._bytes -= len(self.queue.popleft().blob)  # the oldest goes
                        self.dropped += 1
                elif what == "end":
                    self.ended += 1
        self._sock.close()

    def take(self, n: int) -> list[tuple[Image, Series | None]]:
        """Up to ``n`` queued images, oldest first, each with its series' header."""
        with self._lock:
            out = []
            while self.queue and len(out) < n:
                img = self.queue.popleft()
                self._bytes -= len(img.blob)
                out.append((img, self.series.get(img.series)))
            return out

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {"received": self.received, "dropped": self.dropped, "bad": self.bad,
                    "ended": self.ended, "queued": len(self.queue),
                    "last_error": self.last_error}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def answer_images(items: list[tuple[Image, Series | None]], source: str, models: dict
                  ) -> tuple[list[dict[str, Any]], list[Any]]:
    """(answers, decoded frames) of the images; one that fails to decode gets its error as
    its answer."""
    frames, errors, decode_ms = [], [], []
    for img, series in items:
        t0 = time.perf_counter()
        try:
            frames.append(decode(img, series, source))
            decode_ms.append(round(1e3 * (time.perf_counter() - t0), 2))
        except ValueError as e:
            errors.append({"file": frame_file(source, img.series), "frame": img.frame,
                           "error": str(e)})
    answers = answerer(models)(frames) if frames else []
    for a, ms in zip(answers, decode_ms, strict=False):
        a.setdefault("timings_ms", {})["decode_ms"] = ms
    thresholds = {(frame_file(source, i.series), i.frame): _threshold(i, s) for i, s in items
                  if i.threshold is not None}
    placed = {(frame_file(source, i.series), i.frame): {"x_um": i.position[0],
                                                        "y_um": i.position[1]}
              for i, _ in items if i.position is not None}
    for a in answers + errors:  # v2: which threshold channel; where the frame was taken
        key = (str(a.get("file")), int(a.get("frame", -1)))
        a.update(thresholds.get(key, {}), **placed.get(key, {}))
    return answers + errors, frames


def _threshold(image: Image, series: Series | None) -> dict[str, Any]:
    """The answer fields of a v2 image's threshold: its number and energy (eV) if known."""
    energies = (series.meta.get("threshold_energy") if series else None) or {}
    energy = energies.get(image.channel) if isinstance(energies, dict) else None
    return {"threshold": image.threshold,
            "threshold_energy_eV": float(energy) if isinstance(energy, (int, float)) else None}


def watch_stream(url: str, store: RunStore, run: str, models: dict, *, max_queue: int = 256,
                 batch: int = 8, exit_after_series: int | None = None,
                 exit_when_idle_s: float | None = None, raster: dict | None = None,
                 thumb_every_s: float = 1.0,
                 on_update: Callable[[StreamStats], None] | None = None,
                 info: dict | None = None, threshold: int = 1,
                 on_answers: Callable[[list[dict[str, Any]]], None] | None = None,
                 positions: Positions | None = None) -> StreamStats:
    """Follow the stream at ``url`` until ``exit_after_series`` series have ended and every
    image is answered, or no image came for ``exit_when_idle_s`` (None: until interrupted).
    ``threshold``: the v2 threshold channel answered (1-based); ``on_answers``: called with
    each batch of answers once they are stored (live/epics.py); ``positions``: a positions
    file's (live/positions.py), kept with the run. Images whose user data carry positions
    (xrp's convention, live/positions.py) have them in their answers (x_um, y_um) and in the
    run store's positions."""
    if threshold < 1:
        raise ValueError(f"threshold {threshold}: thresholds count from 1")
    rx = Receiver(url, max_queue, threshold)  # a bad address fails before the store gets a run
    try:
        run_id = store.open_run(run, f"stream:{url}")
        held = store.info(run_id).get("threshold")
        if held not in (None, threshold) and store.answered(run_id):
            raise ValueError(f"run {run!r} answered threshold {held}; watch threshold "
                             f"{threshold} under another --run (a frame is answered once)")
        store.set_info(run_id, **(info or {}), threshold=threshold)
        keep_positions(store, run_id, positions)
    except ValueError:
        rx.close()
        raise
    if raster:
        store.set_live(run_id, raster=raster)
    done = store.answered(run_id)
    stats, told_dropped = StreamStats(), 0
    told, told_at = (-1, -1), 0.0  # the live counters last written, and when
    idle_since, thumbs = time.time(), _Thumbs(store, run_id, thumb_every_s)
    kept: set[int] = set()  # series whose start fields are in the run's info
    try:
        while True:
            _keep_series(store, run_id, rx, kept)
            items = [(i, s) for i, s in rx.take(batch)
                     if (frame_file(url, i.series), i.frame) not in done]
            c = rx.counts()
            if items:
                answers, frames = answer_images(items, url, models)
                store.add(run_id, answers, dropped=c["dropped"] - told_dropped)
                told_dropped = c["dropped"]
                done.update((str(a["file"]), int(a["frame"])) for a in answers)
                stats.count(answers)
                if on_answers:
                    on_answers(answers)
                if frames:
                    thumbs.offer(frames[-1])
                idle_since = time.time()
            _update(stats, rx.counts())
            if (stats.received, stats.backlog) != told and time.time() - told_at > 0.2:
                store.set_live(run_id, received=stats.received, queued=stats.backlog)
                told, told_at = (stats.received, stats.backlog), time.time()
            if on_update:
                on_update(stats)
            if items:
                continue
            thumbs.flush()  # idle: the page shows the latest frame
            if c["dropped"] > told_dropped:
                store.add(run_id, [], dropped=c["dropped"] - told_dropped)
                told_dropped = c["dropped"]
            if (exit_after_series is not None and c["ended"] >= exit_after_series
                    and not c["queued"]) or (exit_when_idle_s is not None
                                             and time.time() - idle_since >= exit_when_idle_s):
                store.set_live(run_id, received=stats.received, queued=stats.backlog)
                return stats
            time.sleep(0.02)
    finally:
        rx.close()


def _keep_series(store: RunStore, run_id: int, rx: Receiver, kept: set[int]) -> None:
    """Store the start-message fields of series not kept yet with the run (run_info
    ``series``, keyed by series id)."""
    with rx._lock:
        new = {k: s.meta for k, s in rx.series.items() if k not in kept}
    kept.update(new)
    new = {str(k): m for k, m in new.items() if m}
    if new:
        store.set_info(run_id, series={**(store.info(run_id).get("series") or {}), **new})


def _update(stats: StreamStats, c: dict[str, Any]) -> None:
    stats.received, stats.dropped, stats.backlog = c["received"], c["dropped"], c["queued"]
    stats.bad_messages, stats.series_ended, stats.last_error = c["bad"], c["ended"], \
        c["last_error"]
