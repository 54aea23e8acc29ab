"""The DECTRIS stream interface (SIMPLON API): messages -> xrp frames, and frames -> messages
(for publishers: the test detector, benchmarks). No Ray, no sockets (live/stream.py has those).

Covered, as the SIMPLON API manual gives them:

- **stream v1** (EIGER / EIGER2 ``stream/api/1.8.0``), JSON multipart ZeroMQ messages:
  ``dheader-1.0`` (+ detector config JSON for header_detail basic/all, + ``dflatfield-1.0``,
  ``dpixelmask-1.0`` and ``dcountrate_table-1.0`` parts with their blobs for "all"),
  ``dimage-1.0`` + ``dimage_d-1.0`` (shape [x, y], type, encoding) + data blob + ``dconfig-1.0``
  (+ optional appendix: a JSON object there may place the frame, live/positions.py),
  ``dseries_end-1.0``.
- **stream v2** (CBOR, one part per message): ``start`` (geometry, ``pixel_mask``, and kept
  with the run: ``goniometer``, ``user_data``, ``channels``, ``threshold_energy``), ``image``
  (``data`` per threshold channel: an RFC 8746 multi-dimensional typed array, its bytes plain or
  under the DECTRIS compression tag 56500 ``["bslz4", elem_size, bytes]`` or ``["lz4", 0,
  bytes]``, both in HDF5 filter framing; its ``user_data`` may place the frame: xrp's
  convention, live/positions.py), ``end``. One threshold is answered per run (``N``,
  1-based, default the first): the channel named ``threshold_N``, else the N-th in the message.

Geometry follows the master-file conventions (io/formats/eiger.py): ``detector_distance`` and
``x_pixel_size`` in m, wavelength in Å, ``beam_center_x/y`` in pixels from the first pixel's
corner (centre = value - 0.5). Pixels at the top of their bit depth and pixels of the mask are
-1, as the HDF5 reader marks them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xray_platform.io import dectris_codec as codec
from xray_platform.io.formats.base import FormatError, FrameInfo, positive, to_image
from xray_platform.io.formats.base import Frame as XrpFrame
from xray_platform.live.positions import from_user_data

FORMAT = "dectris-stream"
#: RFC 8746 typed-array tags -> numpy dtype
TYPED_ARRAYS = {64: "u1", 65: ">u2", 66: ">u4", 69: "<u2", 70: "<u4", 72: "i1", 73: ">i2",
                74: ">i4", 77: "<i2", 78: "<i4", 81: ">f4", 85: "<f4"}
MULTI_DIM = 40
DECTRIS_COMPRESSION = 56500
#: v2 compression algorithm -> the codec's encoding name (io/dectris_codec.py)
V2_COMPRESSION = {"bslz4": "bslz4", "lz4": codec.LZ4_HDF5}
#: start-message fields kept with the run (store run_info), JSON-safe
V2_KEPT = ("goniometer", "user_data", "channels", "threshold_energy", "series_unique_id",
           "arm_date", "detector_serial_number", "incident_energy")
MAX_KEPT_BYTES = 64 << 10  # a byte string in user_data beyond this is kept as its size only


class StreamError(FormatError):
    """A message that does not follow the stream interface (its message says what)."""


@dataclass
class Series:
    """What a series' header gives: the frame info every image of the series shares."""

    series: int
    info: FrameInfo
    mask: np.ndarray | None  # (slow, fast), nonzero = bad pixel
    bit_depth: int | None
    version: int  # 1 (JSON) or 2 (CBOR)
    meta: dict[str, Any] = field(default_factory=dict)  # V2_KEPT fields of a v2 start, JSON-safe


@dataclass
class Image:
    """One image message, still encoded (decoding costs: it is done by the answering side)."""

    series: int
    frame: int
    shape: tuple[int, int]  # (slow, fast)
    dtype: np.dtype
    encoding: str
    blob: bytes
    threshold: int | None = None  # v2: the threshold (1-based) of the channel taken
    channel: str | None = None  # v2: its channel name (threshold_N)
    error: str | None = None  # why this image cannot be answered (stored as its answer)
    position: tuple[float, float] | None = None  # (x, y) µm from its user data (positions.py)


def kind(parts: list[bytes], threshold: int = 1) -> tuple[str, int, Any]:
    """("header" | "image" | "end", series, parsed message) of a received multipart message;
    a v2 image keeps only its ``threshold``-th channel (1-based)."""
    first = bytes(parts[0])
    if first[:1] == b"{":
        try:
            head = json.loads(first)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StreamError(f"stream message is not JSON ({e})") from None
        htype = str(head.get("htype", ""))
        series = int(head.get("series", -1))
        if htype.startswith("dheader-"):
            return "header", series, parse_header_v1(parts)
        if htype.startswith("dimage-"):
            image = parse_image_v1(parts)
            if threshold != 1:
                image.error = (f"threshold {threshold} asked for, but stream v1 carries one "
                               "image per frame (multi-threshold images need stream v2)")
            return "image", series, image
        if htype.startswith("dseries_end-"):
            return "end", series, None
        raise StreamError(f"unknown stream v1 message htype {htype!r}")
    return _kind_v2(first, threshold)


def _json(part: bytes, what: str) -> dict:
    try:
        out = json.loads(bytes(part))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StreamError(f"{what}: not JSON ({e})") from None
    if not isinstance(out, dict):
        raise StreamError(f"{what}: not a JSON object")
    return out


def _info(config: dict, n_fast: int | None = None, n_slow: int | None = None,
          wavelength_key: str = "wavelength") -> FrameInfo:
    def num(key: str) -> float | None:
        v = config.get(key)
        try:
            return positive(float(v)) if v is not None else None
        except (TypeError, ValueError):
            return None

    dist, pix = num("detector_distance"), num("x_pixel_size")
    bx, by = config.get("beam_center_x"), config.get("beam_center_y")
    try:
        centre = (float(bx) - 0.5, float(by) - 0.5) if bx is not None and by is not None \
            else None
    except (TypeError, ValueError):
        centre = None
    nf = n_fast or int(config.get("x_pixels_in_detector") or config.get("image_size_x") or 0)
    ns = n_slow or int(config.get("y_pixels_in_detector") or config.get("image_size_y") or 0)
    cutoff = num("countrate_correction_count_cutoff")
    n = int(config.get("nimages") or 1) * int(config.get("ntrigger") or 1)
    return FrameInfo(
        wavelength_A=num(wavelength_key), distance_mm=dist * 1e3 if dist else None,
        pixel_size_mm=pix * 1e3 if pix else None, beam_center_px=centre, n_fast=nf,
        n_slow=ns, detector=str(config.get("description") or "DECTRIS stream"),
        format=FORMAT, n_frames=max(n, 1), exposure_s=num("count_time"),
        max_counts=int(cutoff) if cutoff else None)


def parse_header_v1(parts: list[bytes]) -> Series:
    head = _json(parts[0], "dheader part 1")
    series = int(head.get("series", -1))
    detail = head.get("header_detail", "none")
    config = _json(parts[1], "dheader part 2 (detector config)") if detail in (
        "basic", "all") and len(parts) > 1 else {}
    mask = None
    k = 2
    while detail == "all" and k + 1 < len(parts):  # (header JSON, blob) pairs
        sub = _json(parts[k], f"dheader part {k + 1}")
        if sub.get("htype", "").startswith("dpixelmask-"):
            x, y = (int(v) for v in sub["shape"])
            mask = np.frombuffer(bytes(parts[k + 1]), dtype=codec.dtype_of(
                str(sub.get("type", "uint32")), "<"))
            if mask.size != x * y:
                raise StreamError(f"pixel mask of {mask.size} values, its header says {x} x {y}")
            mask = mask.reshape(y, x)
        k += 2
    bits = config.get("bit_depth_image")
    return Series(series, _info(config), mask, int(bits) if bits else None, 1)


def parse_image_v1(parts: list[bytes]) -> Image:
    if len(parts) < 3:
        raise StreamError(f"dimage message of {len(parts)} parts (at least 3: dimage, "
                          "dimage_d, data)")
    head, d = _json(parts[0], "dimage part 1"), _json(parts[1], "dimage part 2 (dimage_d)")
    try:
        x, y = (int(v) for v in d["shape"][:2])
        encoding = str(d.get("encoding", "<"))
        dtype = codec.dtype_of(str(d["type"]), encoding)
        return Image(int(head["series"]), int(head["frame"]), (y, x), dtype, encoding,
                     bytes(parts[2]), position=from_user_data(bytes(parts[4]))
                     if len(parts) > 4 else None)
    except (KeyError, TypeError, ValueError) as e:
        raise StreamError(f"dimage message: bad or missing field ({e})") from None


def decode(image: Image, series: Series | None, source: str) -> XrpFrame:
    """The xrp frame of an image message, with its series' geometry and mask applied."""
    where = f"{source} series {image.series} frame {image.frame}"
    if series is None:
        raise StreamError(f"{where}: no header for this series was received (start the "
                          "watcher before arming the detector, or use header_detail basic/all)")
    if image.error:
        raise StreamError(f"{where}: {image.error}")
    try:
        raw = codec.decode(image.blob, image.encoding, image.dtype, image.shape)
    except codec.EncodingError as e:
        raise StreamError(f"{where}: {e}") from None
    info = series.info
    if (info.n_slow, info.n_fast) != image.shape:  # ROI mode: the image message is the truth
        info = FrameInfo(**{**info.__dict__, "n_fast": image.shape[1],
                            "n_slow": image.shape[0]})
    img = to_image(where, raw, image.shape)
    if raw.dtype.kind == "u":  # EIGER marks masked/defective pixels with the top value
        bad = raw == np.iinfo(raw.dtype).max
        if series.bit_depth and series.bit_depth < raw.dtype.itemsize * 8:
            bad |= raw == 2**series.bit_depth - 1
        img[bad] = -1
    if series.mask is not None and series.mask.shape == img.shape:
        img[series.mask != 0] = -1
    return XrpFrame(img, info, frame_file(source, image.series), image.frame)


def frame_file(source: str, series: int) -> str:
    """The "file" a streamed frame is stored under: its source and series."""
    return f"{source}#series-{series}"


# -- stream v2 (CBOR) ------------------------------------------------------------------------

def _kind_v2(data: bytes, threshold: int = 1) -> tuple[str, int, Any]:
    import cbor2

    try:
        msg = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for garbage  # noqa: BLE001
        raise StreamError(f"stream message is neither JSON (v1) nor CBOR (v2): {e}") from None
    if not isinstance(msg, dict) or "type" not in msg:
        raise StreamError("stream v2 message without a 'type'")
    series = int(msg.get("series_id", -1))
    if msg["type"] == "start":
        mask = msg.get("pixel_mask")
        if isinstance(mask, dict) and mask:  # the answered threshold's, else the first
            mask = _array(mask.get(f"threshold_{threshold}", next(iter(mask.values()))))
        else:
            mask = None
        bits = msg.get("bit_depth_image")
        config = {**msg}
        for v1_name, v2_name in (("x_pixel_size", "pixel_size_x"), ("nimages",
                                 "number_of_images"), ("description", "detector_description")):
            config.setdefault(v1_name, msg.get(v2_name))  # the v2 manual's names
        meta = {k: jsonable(msg[k]) for k in V2_KEPT if k in msg}
        return "header", series, Series(series, _info(config,
                                                      wavelength_key="incident_wavelength"),
                                        mask, int(bits) if bits else None, 2, meta)
    if msg["type"] == "image":
        data_ = msg.get("data") or {}
        if not data_ or not isinstance(data_, dict):
            raise StreamError("stream v2 image without data")
        frame = int(msg.get("image_id", -1))
        channel = f"threshold_{threshold}" if f"threshold_{threshold}" in data_ else \
            (list(data_)[threshold - 1] if 0 < threshold <= len(data_) else None)
        if channel is None:
            return "image", series, Image(
                series, frame, (0, 0), np.dtype("<u4"), "<", b"", threshold, None,
                f"threshold {threshold} asked for, the image carries {len(data_)} "
                f"({', '.join(map(str, data_))})")
        shape, dtype, encoding, blob = _typed(data_[channel])
        return "image", series, Image(series, frame, shape, dtype, encoding, blob, threshold,
                                      str(channel),
                                      position=from_user_data(msg.get("user_data")))
    if msg["type"] == "end":
        return "end", series, None
    raise StreamError(f"unknown stream v2 message type {msg['type']!r}")


def _typed(tag: Any) -> tuple[tuple[int, int], np.dtype, str, bytes]:
    """(shape, dtype, encoding, bytes) of a tag-40 multi-dimensional typed array."""
    import cbor2

    if not isinstance(tag, cbor2.CBORTag) or tag.tag != MULTI_DIM:
        raise StreamError("stream v2 image data is not a multi-dimensional array (tag 40)")
    dims, arr = tag.value
    if not isinstance(arr, cbor2.CBORTag) or arr.tag not in TYPED_ARRAYS:
        raise StreamError("stream v2 image array is not a typed array xrp reads")
    dtype = np.dtype(TYPED_ARRAYS[arr.tag])
    body = arr.value
    encoding = "<" if dtype.byteorder in "<=|" else ">"
    if isinstance(body, cbor2.CBORTag) and body.tag == DECTRIS_COMPRESSION:
        try:
            algorithm, elem, body = body.value
        except (TypeError, ValueError):
            raise StreamError("stream v2 compression tag 56500 is not [algorithm, "
                              "modifier, bytes]") from None
        if algorithm not in V2_COMPRESSION:
            raise StreamError(f"stream v2 compression {algorithm!r} is not one xrp decodes "
                              f"({', '.join(V2_COMPRESSION)})")
        if algorithm == "bslz4" and elem != dtype.itemsize:
            raise StreamError(f"stream v2 bslz4 element size {elem} for {dtype.itemsize}-byte "
                              "pixels")
        encoding = V2_COMPRESSION[algorithm]
    if not isinstance(body, bytes):
        raise StreamError("stream v2 image array holds no byte string")
    if len(dims) != 2:
        raise StreamError(f"stream v2 image of {len(dims)} dimensions (2 expected)")
    return (int(dims[0]), int(dims[1])), dtype, encoding, bytes(body)


def jsonable(v: Any, depth: int = 0) -> Any:
    """A CBOR value made JSON-safe for the run store: byte strings as base64 (their size only
    beyond MAX_KEPT_BYTES), dates as ISO text, other tags as {"cbor_tag", "value"}."""
    import cbor2

    if depth > 32:
        return "(nested too deep)"
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"bytes": len(v)} if len(v) > MAX_KEPT_BYTES else \
            {"base64": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x, depth + 1) for x in v]
    if isinstance(v, cbor2.CBORTag):
        return {"cbor_tag": v.tag, "value": jsonable(v.value, depth + 1)}
    return str(v)


def _array(tag: Any) -> np.ndarray:
    shape, dtype, encoding, blob = _typed(tag)
    return codec.decode(blob, encoding, dtype, shape)


# -- publishing (the detector side) ---------------------------------------------------------

def config_of(geometry: Any, n_fast: int, n_slow: int, nimages: int, *,
              description: str = "xrp simulated EIGER", bit_depth: int = 32) -> dict:
    """A detector config (v1 dheader part 2 / v2 start fields) for a physics Geometry."""
    f0, s0 = geometry.beam_center_px
    return {"beam_center_x": f0 + 0.5, "beam_center_y": s0 + 0.5,
            "detector_distance": geometry.distance_mm / 1e3,
            "wavelength": geometry.wavelength_A, "incident_wavelength": geometry.wavelength_A,
            "x_pixel_size": geometry.detector.pixel_mm / 1e3,
            "y_pixel_size": geometry.detector.pixel_mm / 1e3,
            "x_pixels_in_detector": n_fast, "y_pixels_in_detector": n_slow,
            "image_size_x": n_fast, "image_size_y": n_slow,
            "nimages": nimages, "ntrigger": 1, "count_time": 0.01, "frame_time": 0.01,
            "bit_depth_image": bit_depth, "description": description}


def header_v1(series: int, config: dict, mask: np.ndarray | None = None) -> list[bytes]:
    parts = [json.dumps({"htype": "dheader-1.0", "series": series,
                         "header_detail": "all" if mask is not None else "basic"}).encode(),
             json.dumps(config).encode()]
    if mask is not None:
        y, x = mask.shape
        parts += [json.dumps({"htype": "dpixelmask-1.0", "shape": [x, y],
                              "type": "uint32"}).encode(), mask.astype("<u4").tobytes()]
    return parts


def image_v1(series: int, frame: int, image: np.ndarray, encoding: str = "bs32-lz4<",
             appendix: dict | None = None) -> list[bytes]:
    """An image message; ``appendix``: a JSON object sent as the image appendix part."""
    import hashlib

    blob = codec.encode(image, encoding)
    y, x = image.shape
    return [json.dumps({"htype": "dimage-1.0", "series": series, "frame": frame,
                        "hash": hashlib.md5(blob).hexdigest()}).encode(),
            json.dumps({"htype": "dimage_d-1.0", "shape": [x, y], "type": image.dtype.name,
                        "encoding": encoding, "size": len(blob)}).encode(),
            blob,
            json.dumps({"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0,
                        "real_time": 0}).encode(),
            *([json.dumps(appendix).encode()] if appendix is not None else [])]


def end_v1(series: int) -> list[bytes]:
    return [json.dumps({"htype": "dseries_end-1.0", "series": series}).encode()]


def _typed_tag(image: np.ndarray, compression: str | None) -> Any:
    """The tag-40 array of ``image``, its bytes plain or under tag 56500 (``"bslz4"`` or
    ``"lz4"``)."""
    import cbor2

    code = {v: k for k, v in TYPED_ARRAYS.items()}[image.dtype.newbyteorder("<").str
                                                    if image.dtype.itemsize > 1 else
                                                    image.dtype.str.lstrip("|")]
    body: Any = image.astype(image.dtype.newbyteorder("<")).tobytes()
    if compression is not None:
        if compression not in V2_COMPRESSION:
            raise ValueError(f"stream v2 compression {compression!r}: bslz4, lz4 or None")
        body = cbor2.CBORTag(DECTRIS_COMPRESSION, [
            compression, image.dtype.itemsize if compression == "bslz4" else 0,
            codec.encode(image, V2_COMPRESSION[compression])])
    return cbor2.CBORTag(MULTI_DIM, [list(image.shape), cbor2.CBORTag(code, body)])


def start_v2(series: int, config: dict, mask: np.ndarray | None = None, *,
             extra: dict | None = None) -> list[bytes]:
    """A start message; ``extra``: more fields (goniometer, user_data, channels,
    threshold_energy, ...) as the detector sends them."""
    import cbor2

    msg = {"type": "start", "series_id": series, "series_unique_id": f"xrp-{series}",
           **config, **(extra or {})}
    if mask is not None:
        msg["pixel_mask"] = {"threshold_1": _typed_tag(mask.astype("<u4"), None)}
    return [cbor2.dumps(msg)]


def image_v2(series: int, frame: int, image: np.ndarray | list[np.ndarray],
             compression: str | None = "bslz4", user_data: dict | None = None) -> list[bytes]:
    """An image message; a list of images: one channel each (threshold_1, threshold_2, ...);
    ``user_data``: the message's user_data map."""
    import cbor2

    images = image if isinstance(image, list) else [image]
    msg = {"type": "image", "series_id": series, "series_unique_id": f"xrp-{series}",
           "image_id": frame, "data": {f"threshold_{k + 1}": _typed_tag(im, compression)
                                       for k, im in enumerate(images)}}
    if user_data is not None:
        msg["user_data"] = user_data
    return [cbor2.dumps(msg)]


def end_v2(series: int) -> list[bytes]:
    import cbor2

    return [cbor2.dumps({"type": "end", "series_id": series, "series_unique_id": f"xrp-{series}"})]
