"""The DECTRIS stream interface: the pixel encodings against the bitshuffle filter's own code
(hdf5plugin), stream v1 and v2 messages, and `watch_stream` over a real ZeroMQ socket on
127.0.0.1 (a publisher thread in the real wire format): every frame once, a restart answers
nothing twice, a burst beyond the queue is dropped and counted without blocking the sender."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from helpers import free_port

from xray_platform.io import dectris_codec as codec
from xray_platform.live import dectris
from xray_platform.live.publisher import GridScan, Publisher, grid_scan_frames
from xray_platform.live.store import RunStore
from xray_platform.live.stream import watch_stream
from xray_platform.physics.geometry import DETECTORS, Geometry


@pytest.mark.parametrize("dtype", ["<u2", "<u4"])
@pytest.mark.parametrize("shape", [(13, 7), (517, 1030)])
def test_bitshuffle_lz4_reads_what_the_hdf5_filter_writes(tmp_path: Path, dtype, shape) -> None:
    img = np.random.default_rng(0).poisson(3, shape).astype(dtype)
    img[0, :5] = np.iinfo(dtype).max
    with h5py.File(tmp_path / "c.h5", "w") as f:  # the chunk exactly as DECTRIS writes it
        f.create_dataset("d", data=img, chunks=shape, **hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(tmp_path / "c.h5") as f:
        _, blob = f["d"].id.read_direct_chunk((0, 0))
    total, block = struct.unpack(">QI", blob[:12])
    assert total == img.nbytes and block % np.dtype(dtype).itemsize == 0
    enc = f"bs{8 * np.dtype(dtype).itemsize}-lz4<"
    assert (codec.decode(blob, enc, np.dtype(dtype), shape) == img).all()
    for e in ("<", "lz4<", enc):
        assert (codec.decode(codec.encode(img, e), e, np.dtype(dtype), shape) == img).all()


def test_broken_pixel_data_is_an_error_never_a_crash() -> None:
    img = np.random.default_rng(1).poisson(2, (200, 300)).astype("<u4")
    blob = codec.encode(img, "bs32-lz4<")
    dt = np.dtype("<u4")
    for cut in (5, 11, 40, len(blob) // 2, len(blob) - 1):  # the C filter would read past these
        with pytest.raises(codec.EncodingError, match="bitshuffle-lz4"):
            codec.decode(blob[:cut], "bs32-lz4<", dt, img.shape)
    with pytest.raises(codec.EncodingError, match="header says"):
        codec.decode(blob, "bs32-lz4<", dt, (100, 300))
    with pytest.raises(codec.EncodingError, match="corrupt lz4"):
        codec.decode(b"\xff" * 100, "lz4<", dt, img.shape)
    with pytest.raises(codec.EncodingError, match="not one xrp decodes"):
        codec.decode(blob, "bs32-zstd<", dt, img.shape)
    rng = np.random.default_rng(2)
    for _ in range(300):  # corrupt bytes inside the blocks: decoded or refused, never a crash
        bad = bytearray(blob)
        bad[rng.integers(12, len(bad))] = rng.integers(0, 256)
        try:
            codec.decode(bytes(bad), "bs32-lz4<", dt, img.shape)
        except codec.EncodingError:
            pass


GEOM = Geometry(DETECTORS["test"], 150.0, 1.0, (128.0, 120.0))


@pytest.mark.parametrize("version", [1, 2])
def test_messages_carry_geometry_mask_and_pixels(version: int) -> None:
    img = np.random.default_rng(3).poisson(2, (256, 256)).astype("<u4")
    img[5, 5] = 2**32 - 1  # EIGER's bad-pixel value
    mask = np.zeros((256, 256), np.uint32)
    mask[10, 20] = 1
    config = dectris.config_of(GEOM, 256, 256, 1)
    head = dectris.header_v1(7, config, mask) if version == 1 else \
        dectris.start_v2(7, config, mask)
    what, series, s = dectris.kind(head)
    assert (what, series, s.version) == ("header", 7, version)
    i = s.info
    assert (i.wavelength_A, i.distance_mm, i.pixel_size_mm) == pytest.approx((1.0, 150.0, 0.172))
    assert i.beam_center_px == pytest.approx((128.0, 120.0)) and (i.n_fast, i.n_slow) == (256,
                                                                                          256)
    msg = dectris.image_v1(7, 3, img) if version == 1 else dectris.image_v2(7, 3, img)
    what, _, image = dectris.kind(msg)
    frame = dectris.decode(image, s, "tcp://det:9999")
    assert (what, frame.index, frame.path) == ("image", 3, "tcp://det:9999#series-7")
    assert frame.image[5, 5] == -1 and frame.image[10, 20] == -1
    assert frame.image[100, 100] == img[100, 100]
    assert frame.geometry().distance_mm == pytest.approx(150.0)
    end = dectris.end_v1(7) if version == 1 else dectris.end_v2(7)
    assert dectris.kind(end)[:2] == ("end", 7)
    with pytest.raises(dectris.StreamError, match="no header"):
        dectris.decode(image, None, "tcp://det:9999")


def test_messages_that_break_the_protocol_are_named() -> None:
    with pytest.raises(dectris.StreamError, match="unknown stream v1"):
        dectris.kind([json.dumps({"htype": "dsomething-1.0"}).encode()])
    with pytest.raises(dectris.StreamError, match="at least 3"):
        dectris.kind([json.dumps({"htype": "dimage-1.0", "series": 1, "frame": 0}).encode()])
    with pytest.raises(dectris.StreamError, match="neither JSON"):
        dectris.kind([b"\xff\x00garbage"])
    config = dectris.config_of(GEOM, 256, 256, 1) | {"detector_distance": 0.001}  # 1 mm
    _, _, s = dectris.kind(dectris.header_v1(1, config))
    _, _, image = dectris.kind(dectris.image_v1(1, 0, np.zeros((256, 256), "<u4")))
    with pytest.raises(ValueError, match="distance"):  # a geometry no real setup has
        dectris.decode(image, s, "tcp://det:9999").geometry()


def _watch_in_thread(url: str, store: RunStore, run: str, **kw) -> tuple[threading.Thread,
                                                                         dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=watch_stream(url, store, run, {}, **kw)))
    t.start()
    return t, out


def test_watch_answers_every_frame_once_and_a_restart_nothing_twice(tmp_path: Path) -> None:
    scan = GridScan(rows=2, cols=4, crystal=(0.5, 1.5), radius=1.0)
    frames, geometry = grid_scan_frames(scan)
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    url = f"tcp://127.0.0.1:{free_port()}"
    for attempt in range(2):  # the detector sends the same series again after a restart
        pub = Publisher(url)
        t, out = _watch_in_thread(url, store, "scan", exit_after_series=1, batch=3)
        pub.series(1, frames, geometry, version=1 + attempt)
        t.join(timeout=60)
        pub.close()
        assert not t.is_alive()
        assert out["s"].answered == (scan.n if attempt == 0 else 0)
    answers = store.answers("scan")
    assert [a["frame"] for a in answers] == list(range(scan.n))
    assert [a["hit"] for a in answers] == [scan.is_hit(i) for i in range(scan.n)]
    live = store.live(store.run("scan")["id"])
    assert live["received"] == scan.n and live["thumb"][:4] == b"\x89PNG"


def test_a_burst_beyond_the_queue_is_dropped_and_counted_and_never_blocks(
        tmp_path: Path) -> None:
    frames, geometry = grid_scan_frames(GridScan(rows=1, cols=4))
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    url = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(url)
    t, out = _watch_in_thread(url, store, "burst", exit_after_series=1, max_queue=4, batch=2)
    pub.series(1, frames, geometry, repeat=100)  # 400 frames as fast as the socket takes them
    t.join(timeout=120)
    pub.close()
    s = out["s"]
    assert s.received == 400 and s.dropped > 0  # all received: the sender was never held up
    assert s.answered + s.dropped == 400 and len(store.answers("burst")) == s.answered
    assert store.run("burst")["dropped"] == s.dropped
