"""Stream v2 complete, and every DECTRIS encoding: LZ4 in the HDF5 LZ4 filter's framing (v2's
"lz4") against the filter's own writer (hdf5plugin), DECTRIS-shaped messages of every encoding
(v1 raw/lz4/bslz4, v2 none/bslz4/lz4) decoded to the same pixels, multi-threshold images
answered for the chosen threshold (stored with each answer), and the start message's goniometer
and user_data kept with the run, over a real ZeroMQ socket into a real SQLite store."""

from __future__ import annotations

import threading
from pathlib import Path

import cbor2
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

GEOM = Geometry(DETECTORS["test"], 150.0, 1.0, (128.0, 120.0))


@pytest.mark.parametrize("block", [None, 4096, 1000])
@pytest.mark.parametrize("dtype", ["<u2", "<u4"])
def test_lz4_hdf5_framing_reads_what_the_hdf5_lz4_filter_writes(
    tmp_path: Path, block, dtype
) -> None:
    img = np.random.default_rng(0).poisson(3, (217, 301)).astype(dtype)
    img[:3, :40] = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (3, 40))
    kw = {"nbytes": block} if block else {}
    with h5py.File(tmp_path / "c.h5", "w") as f:  # a chunk exactly as the filter stores it
        f.create_dataset("d", data=img, chunks=img.shape, **hdf5plugin.LZ4(**kw))
    with h5py.File(tmp_path / "c.h5") as f:
        _, blob = f["d"].id.read_direct_chunk((0, 0))
    assert int.from_bytes(blob[:8], "big") == img.nbytes
    assert (codec.decode(blob, codec.LZ4_HDF5, np.dtype(dtype), img.shape) == img).all()
    assert codec.encode(img, codec.LZ4_HDF5, block) == blob  # our writer is the filter


def test_lz4_hdf5_blocks_stored_uncompressed_are_read_as_they_are() -> None:
    noise = np.random.default_rng(2).integers(0, 2**32, (64, 64), dtype=np.uint64)
    img = noise.astype("<u4")  # incompressible: the filter stores each block as it is
    blob = codec.encode(img, codec.LZ4_HDF5, 1024)
    assert len(blob) == 12 + 16 * (4 + 1024)
    assert (codec.decode(blob, codec.LZ4_HDF5, img.dtype, img.shape) == img).all()


def test_broken_lz4_hdf5_data_is_an_error_never_a_crash() -> None:
    img = np.random.default_rng(3).poisson(2, (200, 300)).astype("<u4")
    blob = codec.encode(img, codec.LZ4_HDF5, 8192)
    dt = img.dtype
    for cut in (5, 11, 14, 40, len(blob) // 2, len(blob) - 1):
        with pytest.raises(codec.EncodingError, match="lz4 \\(HDF5 framing\\)"):
            codec.decode(blob[:cut], codec.LZ4_HDF5, dt, img.shape)
    with pytest.raises(codec.EncodingError, match="header says"):
        codec.decode(blob, codec.LZ4_HDF5, dt, (100, 300))
    with pytest.raises(codec.EncodingError, match="after its blocks"):
        codec.decode(blob + b"\0", codec.LZ4_HDF5, dt, img.shape)
    rng = np.random.default_rng(4)
    for _ in range(300):  # corrupt bytes anywhere: decoded or refused, never a crash
        bad = bytearray(blob)
        bad[rng.integers(0, len(bad))] = rng.integers(0, 256)
        try:
            codec.decode(bytes(bad), codec.LZ4_HDF5, dt, img.shape)
        except codec.EncodingError:
            pass


#: (stream version, the publisher's encoding name, the pixel type)
ENCODINGS = [
    (1, "<", "<u4"),
    (1, "lz4<", "<u4"),
    (1, "bs32-lz4<", "<u4"),
    (1, "bs16-lz4<", "<u2"),
    (2, "none", "<u4"),
    (2, "bslz4", "<u4"),
    (2, "bslz4", "<u2"),
    (2, "lz4", "<u4"),
    (2, "lz4", "<u2"),
]


@pytest.mark.parametrize("version,encoding,dtype", ENCODINGS)
def test_every_encoding_gives_the_same_frame(version: int, encoding: str, dtype: str) -> None:
    from xray_platform.live.publisher import V2_ENCODINGS

    img = np.random.default_rng(5).poisson(2, (256, 256)).astype(dtype)
    img[5, 5] = np.iinfo(dtype).max  # EIGER's bad-pixel value
    mask = np.zeros((256, 256), np.uint32)
    mask[10, 20] = 1
    config = dectris.config_of(GEOM, 256, 256, 1, bit_depth=8 * np.dtype(dtype).itemsize)
    head = dectris.header_v1(3, config, mask) if version == 1 else dectris.start_v2(3, config, mask)
    msg = (
        dectris.image_v1(3, 9, img, encoding)
        if version == 1
        else dectris.image_v2(3, 9, img, V2_ENCODINGS[encoding])
    )
    if version == 2 and encoding != "none":  # the tag as the DECTRIS document gives it
        tag = cbor2.loads(msg[0])["data"]["threshold_1"].value[1].value
        assert tag.tag == 56500 and tag.value[0] == encoding
        assert tag.value[1] == (np.dtype(dtype).itemsize if encoding == "bslz4" else 0)
    _, _, series = dectris.kind(head)
    what, _, image = dectris.kind(msg)
    frame = dectris.decode(image, series, "tcp://det:31001")
    assert (what, frame.index, image.threshold) == ("image", 9, 1 if version == 2 else None)
    assert frame.image[5, 5] == -1 and frame.image[10, 20] == -1
    keep = np.ones(img.shape, bool)
    keep[5, 5] = keep[10, 20] = False
    assert (frame.image[keep] == img[keep]).all()


def test_a_multi_threshold_image_is_answered_for_the_threshold_asked() -> None:
    rng = np.random.default_rng(6)
    images = [rng.poisson(1 + k, (256, 256)).astype("<u4") for k in range(3)]
    config = dectris.config_of(GEOM, 256, 256, 1)
    _, _, series = dectris.kind(dectris.start_v2(1, config))
    msg = dectris.image_v2(1, 0, images, "lz4")
    for n in (1, 2, 3):
        _, _, image = dectris.kind(msg, threshold=n)
        assert (image.threshold, image.channel) == (n, f"threshold_{n}")
        assert (dectris.decode(image, series, "s").image == images[n - 1]).all()
    _, _, image = dectris.kind(msg, threshold=4)  # not there: the frame's answer says so
    with pytest.raises(dectris.StreamError, match="threshold 4 asked for, the image carries 3"):
        dectris.decode(image, series, "s")
    swapped = cbor2.loads(msg[0])  # channels by name, whatever their order
    swapped["data"] = {
        "threshold_2": swapped["data"]["threshold_2"],
        "threshold_1": swapped["data"]["threshold_1"],
    }
    _, _, image = dectris.kind([cbor2.dumps(swapped)], threshold=1)
    assert (dectris.decode(image, series, "s").image == images[0]).all()
    _, _, image = dectris.kind(dectris.image_v1(1, 0, images[0]), threshold=2)
    with pytest.raises(dectris.StreamError, match="multi-threshold images need stream v2"):
        dectris.decode(image, series, "s")


def test_v2_messages_that_break_the_compression_tag_are_named() -> None:
    img = np.zeros((16, 16), "<u4")
    blob = codec.encode(img, "bslz4")

    def message(content: list) -> list[bytes]:
        body = cbor2.CBORTag(56500, content)
        return [
            cbor2.dumps(
                {
                    "type": "image",
                    "series_id": 1,
                    "image_id": 0,
                    "data": {"threshold_1": cbor2.CBORTag(40, [[16, 16], cbor2.CBORTag(70, body)])},
                }
            )
        ]

    assert dectris.kind(message(["bslz4", 4, blob]))[2].encoding == "bslz4"
    with pytest.raises(dectris.StreamError, match="'zstd' is not one xrp decodes"):
        dectris.kind(message(["zstd", 4, blob]))
    with pytest.raises(dectris.StreamError, match="element size 2 for 4-byte"):
        dectris.kind(message(["bslz4", 2, blob]))
    with pytest.raises(dectris.StreamError, match="not \\[algorithm, modifier, bytes\\]"):
        dectris.kind(message(["bslz4", 4]))
    with pytest.raises(dectris.StreamError, match="no byte string"):
        dectris.kind(message(["lz4", 0, "text"]))


def test_the_v2_manual_names_and_odd_user_data_are_understood() -> None:
    config = dectris.config_of(GEOM, 256, 256, 5)
    v2_names = {
        k: v for k, v in config.items() if k not in ("x_pixel_size", "nimages", "description")
    }
    extra = {
        "pixel_size_x": 172e-6,
        "number_of_images": 5,
        "detector_description": "E2 4M",
        "goniometer": {"omega": {"start": 10.0, "increment": 0.1}},
        "user_data": {
            "sample": "lyso-3",
            "blob": b"\x00\x01",
            "tagged": cbor2.CBORTag(1, 1700000000),
            "big": b"x" * (dectris.MAX_KEPT_BYTES + 1),
        },
    }
    _, _, s = dectris.kind(dectris.start_v2(2, v2_names, extra=extra))
    assert s.info.pixel_size_mm == pytest.approx(0.172) and s.info.n_frames == 5
    assert s.info.detector == "E2 4M"
    assert s.meta["goniometer"] == {"omega": {"start": 10.0, "increment": 0.1}}
    user = s.meta["user_data"]
    assert user["sample"] == "lyso-3" and user["blob"] == {"base64": "AAE="}
    assert user["big"] == {"bytes": dectris.MAX_KEPT_BYTES + 1}
    assert isinstance(user["tagged"], str)  # cbor2 gives a datetime for tag 1: ISO text


def _watch(url: str, store: RunStore, run: str, **kw) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=watch_stream(url, store, run, {}, **kw)))
    t.start()
    return t, out


@pytest.fixture(scope="module")
def scan():
    scan = GridScan(rows=1, cols=4, crystal=(0.0, 1.0), radius=1.0)
    frames, geometry = grid_scan_frames(scan)
    return scan, frames, geometry


@pytest.mark.parametrize("version,encoding", [(v, e) for v, e, d in ENCODINGS if d == "<u4"])
def test_watch_answers_a_stream_of_every_encoding(
    tmp_path: Path, scan, version: int, encoding: str
) -> None:
    scan, frames, geometry = scan
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    url = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(url)
    t, out = _watch(url, store, "enc", exit_after_series=1, batch=4)
    pub.series(1, frames, geometry, version=version, encoding=encoding)
    t.join(timeout=120)
    pub.close()
    assert not t.is_alive() and out["s"].answered == scan.n and out["s"].bad_messages == 0
    answers = store.answers("enc")
    assert [a.get("error") for a in answers] == [None] * scan.n
    assert [a["hit"] for a in answers] == [scan.is_hit(i) for i in range(scan.n)]
    assert all(a.get("threshold") == (1 if version == 2 else None) for a in answers)


def test_watch_answers_the_chosen_threshold_and_keeps_the_start_fields(
    tmp_path: Path, scan
) -> None:
    scan, frames, geometry = scan
    blank = frames[-1] if not scan.is_hit(scan.n - 1) else frames[0]
    assert not scan.is_hit(scan.n - 1)
    channels = [[blank, f] for f in frames]  # threshold_1: background only; 2: the crystal
    extra = {
        "goniometer": {"omega": {"start": 30.0, "increment": 0.0}},
        "user_data": {"proposal": "mx1234", "grid": [1, 4]},
        "channels": ["threshold_1", "threshold_2"],
        "threshold_energy": {"threshold_1": 6000.0, "threshold_2": 9000.0},
    }
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    url = f"tcp://127.0.0.1:{free_port()}"
    for run, threshold in (("t2", 2), ("t1", 1)):
        pub = Publisher(url)
        t, out = _watch(url, store, run, exit_after_series=1, threshold=threshold)
        pub.series(4, channels, geometry, version=2, encoding="lz4", start_extra=extra)
        t.join(timeout=120)
        pub.close()
        assert not t.is_alive() and out["s"].answered == scan.n
    t2, t1 = store.answers("t2"), store.answers("t1")
    assert [a["hit"] for a in t2] == [scan.is_hit(i) for i in range(scan.n)]
    assert any(a["hit"] for a in t2) and not any(a["hit"] for a in t1)
    assert {(a["threshold"], a["threshold_energy_eV"]) for a in t2} == {(2, 9000.0)}
    assert {(a["threshold"], a["threshold_energy_eV"]) for a in t1} == {(1, 6000.0)}
    info = store.info(store.run("t2")["id"])
    assert info["threshold"] == 2
    kept = info["series"]["4"]
    assert kept["goniometer"] == extra["goniometer"] and kept["user_data"] == extra["user_data"]
    assert kept["channels"] == extra["channels"]
    assert kept["threshold_energy"] == extra["threshold_energy"]
    with pytest.raises(ValueError, match="thresholds count from 1"):
        watch_stream(url, store, "t0", {}, threshold=0)
    with pytest.raises(ValueError, match="run 't2' answered threshold 2; watch threshold 1"):
        watch_stream(url, store, "t2", {}, threshold=1)  # a resumed run keeps its threshold
