"""Property-based fuzzing (hypothesis) of what hostile input reaches first: the geometry limits
and the readers. Whatever the bytes or numbers, the answer is a valid frame or a ValueError
naming the problem (FormatError, GeometryError, GeometryMissing), never another exception (an
IndexError, OverflowError or AssertionError becomes a 500 in the service), and never a frame
with a geometry outside physics/limits.py."""

from __future__ import annotations

import bz2
import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xray_platform.io.cbf import write_cbf
from xray_platform.io.formats import geometry_overrides, open_frames, read_frame
from xray_platform.io.formats.smv import write_smv
from xray_platform.physics import limits

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
GEOM = dict(wavelength_A=0.98, distance_mm=200.0, pixel_size_mm=0.172,
            beam_center_px=(130.0, 120.0))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**40, 10**40))


def _within(v: float, lo_hi: tuple[float, float]) -> bool:
    return math.isfinite(v) and lo_hi[0] <= v <= lo_hi[1]


@FUZZ
@given(w=numbers, d=numbers, p=numbers, f0=numbers, s0=numbers,
       n_fast=st.integers(-5, 10**6), n_slow=st.integers(-5, 10**6))
def test_the_geometry_check_passes_only_what_a_real_setup_can_have(w, d, p, f0, s0, n_fast,
                                                                   n_slow) -> None:
    try:
        limits.check_geometry(w, d, p, (f0, s0), n_fast, n_slow)
    except limits.GeometryError as e:
        assert str(e)  # names the value
        return
    assert _within(w, limits.WAVELENGTH_A) and _within(d, limits.DISTANCE_MM)
    assert _within(p, limits.PIXEL_MM)
    assert limits.FRAME_SIDE_PX[0] <= min(n_fast, n_slow)
    assert n_fast * n_slow <= limits.MAX_FRAME_PIXELS
    assert -n_fast <= f0 <= 2 * n_fast and -n_slow <= s0 <= 2 * n_slow


@FUZZ
@given(w=st.none() | numbers, d=st.none() | numbers, p=st.none() | numbers,
       bc=st.none() | st.tuples(numbers, numbers))
def test_geometry_overrides_are_checked_values_or_a_geometry_error(w, d, p, bc) -> None:
    try:
        out = geometry_overrides(w, d, p, bc)
    except limits.GeometryError as e:
        assert str(e)
        return
    for key, lo_hi in (("wavelength_A", limits.WAVELENGTH_A), ("distance_mm", limits.DISTANCE_MM),
                       ("pixel_size_mm", limits.PIXEL_MM)):
        if key in out:
            assert _within(out[key], lo_hi)
    if "beam_center_px" in out:
        assert all(math.isfinite(v) for v in out["beam_center_px"])


@pytest.fixture(scope="module")
def clean_files(tmp_path_factory) -> dict[str, bytes]:
    """A valid 260 x 240 frame in each format the service takes from an upload."""
    root = tmp_path_factory.mktemp("fuzz")
    img = np.random.default_rng(0).poisson(3.0, (240, 260)).astype(np.int32)
    write_cbf(root / "a.cbf", img, **GEOM)
    write_smv(root / "a.img", img.astype(np.uint16), **GEOM)
    np.save(root / "a.npy", img)
    return {ext: (root / f"a{ext}").read_bytes() for ext in (".cbf", ".img", ".npy")}


def _mutate(data: bytes, draw) -> bytes:
    """Truncate, flip, insert or overwrite bytes (the header is where most of them land)."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "header-number"]))
    n = len(data)
    if kind == "truncate":
        return data[:draw(st.integers(0, n - 1))]
    if kind == "flip":
        out = bytearray(data)
        for i in draw(st.lists(st.integers(0, min(n - 1, 4096)), min_size=1, max_size=8)):
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind == "insert":
        i = draw(st.integers(0, min(n, 4096)))
        return data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]
    # a header number replaced by another (huge, negative, zero, not a number)
    head = data[:4096]
    digits = [i for i in range(len(head)) if chr(head[i]).isdigit()]
    if not digits:
        return data
    i = draw(st.sampled_from(digits))
    j = i
    while j < len(head) and (chr(head[j]).isdigit() or chr(head[j]) == "."):
        j += 1
    new = draw(st.sampled_from([b"0", b"-1", b"1e308", b"99999999999", b"nan", b"x", b""]))
    return data[:i] + new + data[j:]


@settings(FUZZ, max_examples=200)
@given(ext=st.sampled_from([".cbf", ".img", ".npy"]),
       comp=st.sampled_from(["", ".gz", ".bz2"]), data=st.data())
def test_a_mutated_file_reads_as_a_valid_frame_or_fails_with_a_named_error(
        clean_files, tmp_path_factory, ext, comp, data) -> None:
    raw = _mutate(clean_files[ext], data.draw)
    blob = {"": raw, ".gz": gzip.compress(raw, 1), ".bz2": bz2.compress(raw, 1)}[comp]
    path = Path(tmp_path_factory.mktemp("m")) / f"frame{ext}{comp}"
    path.write_bytes(blob)
    overrides = GEOM if ext == ".npy" else {}
    try:
        frame = read_frame(path, **overrides)
        geom = frame.geometry()
    except ValueError as e:  # FormatError, GeometryError, GeometryMissing
        assert str(e)
        return
    img = np.asarray(frame.image)
    assert img.ndim == 2 and img.shape == (frame.info.n_slow, frame.info.n_fast)
    limits.check_geometry(geom.wavelength_A, geom.distance_mm, frame.info.pixel_size_mm,
                          frame.info.beam_center_px, frame.info.n_fast, frame.info.n_slow)


# --- EIGER / NeXus HDF5: a master with its pixels inline (what an HTTP upload can be) ---------
H5_FIELDS = {  # dataset -> (group, value, units) of a clean Dectris-like master
    "incident_wavelength": ("entry/instrument/beam", 0.098, "nm"),
    "detector_distance": ("entry/instrument/detector", 0.2, "m"),
    "x_pixel_size": ("entry/instrument/detector", 75e-6, "m"),
    "y_pixel_size": ("entry/instrument/detector", 75e-6, "m"),
    "beam_center_x": ("entry/instrument/detector", 130.5, "pixel"),
    "beam_center_y": ("entry/instrument/detector", 120.5, "pixel"),
    "count_time": ("entry/instrument/detector", 0.01, "s"),
    "bit_depth_image": ("entry/instrument/detector", 32, None),
    "photon_energy": ("entry/instrument/detector/detectorSpecific", 12651.0, "eV"),
    "x_pixels_in_detector": ("entry/instrument/detector/detectorSpecific", 260, None),
    "y_pixels_in_detector": ("entry/instrument/detector/detectorSpecific", 240, None),
    "nimages": ("entry/instrument/detector/detectorSpecific", 2, None),
    "ntrigger": ("entry/instrument/detector/detectorSpecific", 1, None),
    "countrate_correction_count_cutoff": ("entry/instrument/detector/detectorSpecific", 1e5,
                                          None),
}
H5_BAD_VALUES = [0, -1, 1e308, float("nan"), float("inf"), 2**63, b"x", "12 mm", [1.0, 2.0],
                 np.zeros((0,)), np.zeros((2, 2))]
H5_BAD_UNITS = ["", "parsec", "mm", "pixel", "keV", "m", b"\xff\xfe", "nan"]


def _write_master(path: Path, changes: list[tuple[str, str, object]]) -> None:
    """A Dectris-like master holding 2 frames of 240 x 260 inline, with ``changes`` applied:
    (field, "value" | "units" | "delete", new) or ("data", "value", array)."""
    import h5py

    fields = {k: [g, v, u] for k, (g, v, u) in H5_FIELDS.items()}
    frames: object = np.random.default_rng(1).poisson(3.0, (2, 240, 260)).astype(np.int32)
    deleted = set()
    for name, what, new in changes:
        if name == "data":
            frames = new
        elif what == "delete":
            deleted.add(name)
        else:
            fields[name][1 if what == "value" else 2] = new
    with h5py.File(path, "w") as f:
        for group, cls in (("entry", "NXentry"), ("entry/instrument", "NXinstrument"),
                           ("entry/instrument/beam", "NXbeam"),
                           ("entry/instrument/detector", "NXdetector")):
            f.require_group(group).attrs["NX_class"] = cls
        for name, (group, value, units) in fields.items():
            if name in deleted:
                continue
            ds = f.require_group(group).create_dataset(name, data=value)
            if units is not None:
                ds.attrs["units"] = units
        f.require_group("entry/data").attrs["NX_class"] = "NXdata"
        if frames is not None:
            f["entry/data"].create_dataset("data", data=frames)


h5_change = st.tuples(st.sampled_from(sorted(H5_FIELDS)), st.sampled_from(["value", "units",
                                                                            "delete"]),
                      st.sampled_from(range(len(H5_BAD_VALUES)))).map(
    lambda t: (t[0], t[1], (H5_BAD_VALUES if t[1] == "value" else H5_BAD_UNITS)[
        t[2] % (len(H5_BAD_VALUES) if t[1] == "value" else len(H5_BAD_UNITS))]))
h5_data = st.sampled_from([None, np.zeros(5, np.int32), np.zeros((1, 1, 240, 260), np.int32),
                           np.zeros((2, 240, 260), np.complex64), np.zeros((2, 3, 3), np.int32),
                           np.array([b"pixels"]), np.zeros((0, 240, 260), np.int32),
                           np.full((1, 240, 260), np.nan, np.float32)]).map(
    lambda a: ("data", "value", a))


def _check_frames(path: Path) -> None:
    """Every frame reads with in-range geometry, or a ValueError names the problem."""
    try:
        with open_frames(path) as src:
            for i in range(min(src.n_frames, 3)):
                frame = src.frame(i)
                geom = frame.geometry()
                img = np.asarray(frame.image)
                assert img.ndim == 2 and img.shape == (frame.info.n_slow, frame.info.n_fast)
                limits.check_geometry(geom.wavelength_A, geom.distance_mm,
                                      frame.info.pixel_size_mm, frame.info.beam_center_px,
                                      frame.info.n_fast, frame.info.n_slow)
    except ValueError as e:  # FormatError, GeometryError, GeometryMissing
        assert str(e)


@settings(FUZZ, max_examples=120)
@given(changes=st.lists(st.one_of(h5_change, h5_data), min_size=1, max_size=3))
def test_a_master_with_hostile_values_reads_right_or_fails_with_a_named_error(
        tmp_path_factory, changes) -> None:
    path = Path(tmp_path_factory.mktemp("h5")) / "run_master.h5"
    _write_master(path, changes)
    _check_frames(path)


@settings(FUZZ, max_examples=80)
@given(comp=st.sampled_from(["", ".gz"]), data=st.data())
def test_a_mutated_master_file_reads_or_fails_with_a_named_error(tmp_path_factory, comp,
                                                                 data) -> None:
    root = Path(tmp_path_factory.mktemp("h5b"))
    _write_master(root / "clean.h5", [])
    raw = _mutate((root / "clean.h5").read_bytes(), data.draw)
    path = root / f"run_master.h5{comp}"
    path.write_bytes(gzip.compress(raw, 1) if comp else raw)
    _check_frames(path)
