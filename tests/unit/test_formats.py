"""Tests for xray_platform.io.formats: real frames, files written here, errors, input expansion."""

from __future__ import annotations

import bz2
import gzip
import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch
from helpers import REAL, needs_real, nxmx_groups

from xray_platform.core.preprocess import Preprocessing, model_input
from xray_platform.io.cbf import write_cbf
from xray_platform.io.formats import (
    READERS,
    CBFReader,
    DataFileMissing,
    EigerHDF5Reader,
    FormatError,
    Frame,
    FrameInfo,
    GeometryMissing,
    NpyReader,
    SMVReader,
    detector_for,
    expand_inputs,
    read_frame,
    read_info,
    reader_for,
    write_smv,
)
from xray_platform.physics.geometry import DETECTORS

GEO = {"wavelength_A": 0.9795, "distance_mm": 180.5, "pixel_size_mm": 0.075,
       "beam_center_px": (40.25, 30.75)}
N_SLOW, N_FAST = 160, 176  # the smallest frames physics/limits.py accepts are 128 px a side


def _image(seed: int = 0, hi: int = 5000) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hi, size=(N_SLOW, N_FAST)).astype(np.int32)


def _assert_geometry(info: FrameInfo, *, beam_atol: float = 1e-6) -> None:
    assert info.wavelength_A == pytest.approx(GEO["wavelength_A"], rel=1e-6)
    assert info.distance_mm == pytest.approx(GEO["distance_mm"], rel=1e-6)
    assert info.pixel_size_mm == pytest.approx(GEO["pixel_size_mm"], rel=1e-6)
    assert info.beam_center_px is not None
    np.testing.assert_allclose(info.beam_center_px, GEO["beam_center_px"], atol=beam_atol)
    assert (info.n_fast, info.n_slow) == (N_FAST, N_SLOW)


# --- real frames ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thau_hit() -> Frame:
    return read_frame(REAL / "thau_3_2_0002.cbf.bz2")


@needs_real
def test_real_thaumatin_hit(thau_hit: Frame) -> None:
    info = thau_hit.info
    assert info.format == "cbf" and info.n_frames == 1
    assert info.wavelength_A == pytest.approx(0.96859)
    assert info.distance_mm == pytest.approx(351.0)
    assert info.pixel_size_mm == pytest.approx(0.172)
    # README gives Beam_xy in the header (first-pixel-corner) convention; io/cbf.py subtracts 0.5
    assert info.beam_center_px is not None
    np.testing.assert_allclose(np.add(info.beam_center_px, 0.5), (1261.6, 1307.0), atol=0.05)
    assert info.detector is not None and info.detector.startswith("PILATUS3 6M")
    img = thau_hit.image
    assert img.dtype == np.float32 and img.shape == (2527, 2463)
    assert np.isfinite(img).all()
    assert (img < 0).sum() >= 2463 * 2527 - 60 * 487 * 195  # gaps (and bad pixels) negative
    assert (img > 50).sum() > 3000  # a hit: thousands of bright pixels
    assert CBFReader().info(REAL / "thau_3_2_0002.cbf.bz2") == info  # header-only path agrees


@needs_real
def test_real_thaumatin_geometry_and_model_input(thau_hit: Frame) -> None:
    geom = thau_hit.geometry()
    assert geom.detector is DETECTORS["pilatus6m"]
    assert geom.distance_mm == pytest.approx(351.0)
    assert geom.beam_center_px == thau_hit.info.beam_center_px
    x = model_input(thau_hit.image, geom, Preprocessing(64))
    assert tuple(x.shape) == (1, 1, 64, 64)
    assert torch.isfinite(x).all() and x.max() > 0


@needs_real
def test_real_thaumatin_miss_and_expected_sameness() -> None:
    info = read_info(REAL / "thau_3_2_0017.cbf.bz2")
    assert info.distance_mm == pytest.approx(351.0)
    assert info.wavelength_A == pytest.approx(0.96859)


@needs_real
def test_real_full_cbf_dls_i03() -> None:
    path = REAL / "DLS_I03_smargon_0001.cbf.gz"
    assert isinstance(reader_for(path), CBFReader)
    frame = read_frame(path)
    info = frame.info
    assert info.distance_mm == pytest.approx(291.47)
    assert info.pixel_size_mm == pytest.approx(0.172)
    assert info.beam_center_px is not None
    np.testing.assert_allclose(np.add(info.beam_center_px, 0.5), (1229.3, 1200.5), atol=0.05)
    assert read_info(path) == info
    assert frame.geometry().detector.name == "pilatus6m"
    assert frame.image.min() < 0


@needs_real
def test_real_eiger_minicbf_gets_generic_detector() -> None:
    path = REAL / "dlsnxs2cbf_therm_0001.cbf.gz"
    info = read_info(path)
    assert (info.n_fast, info.n_slow, info.pixel_size_mm) == (4148, 4362, 0.075)
    assert info.detector is not None and "EIGER 16M" in info.detector
    det = detector_for(info)  # 4148 x 4362 is not the 4150 x 4371 EIGER 16M preset
    assert det.name == "from-header" and det.shape == (4362, 4148)
    assert det.gap_fast == det.gap_slow == 0 and det.max_counts == 65535
    assert not det.gap_mask().any()


@needs_real
def test_real_eiger_master_without_data_file() -> None:
    path = REAL / "dectris_eiger_master.h5"
    reader = reader_for(path)
    assert isinstance(reader, EigerHDF5Reader)
    info = reader.info(path)
    assert info.format == "eiger-hdf5" and info.n_frames == 1
    assert info.wavelength_A == pytest.approx(0.98011, abs=1e-5)
    assert info.distance_mm == pytest.approx(134.255, abs=1e-4)
    assert info.pixel_size_mm == pytest.approx(0.075)
    assert (info.n_fast, info.n_slow) == (3110, 3269)
    assert info.beam_center_px is not None  # header 1607.415, 1586.4314 (pixel corner)
    np.testing.assert_allclose(info.beam_center_px, (1606.915, 1585.9314), atol=1e-3)
    assert info.detector == "Dectris Eiger 9M"
    assert info.exposure_s == pytest.approx(0.00499)
    with pytest.raises(DataFileMissing, match="dectris_eiger_data_000001.h5"):
        read_frame(path)


@needs_real
def test_real_folder_expands_to_detector_files() -> None:
    entries = expand_inputs([REAL])
    names = [p.name for p, _ in entries]
    files = sorted(p.name for p in REAL.iterdir() if p.name != "README.md")
    assert names == files  # every detector file, in order, the README left out
    assert all(i == 0 for _, i in entries)


# --- EIGER / NXmx HDF5 written here -----------------------------------------------------------

UINT32_MAX = 2**32 - 1


def _nxmx_frames() -> np.ndarray:
    frames = np.random.default_rng(7).integers(0, 1000, size=(5, N_SLOW, N_FAST), dtype=np.uint32)
    frames[:, 3, 5] = UINT32_MAX  # a masked pixel as EIGER writes it
    frames[4, 10, 11] = 123456789  # big but legitimate counts stay positive
    return frames


def _pixel_mask() -> np.ndarray:
    mask = np.zeros((N_SLOW, N_FAST), np.uint32)
    mask[:, 40:42] = 1  # a vertical module gap
    mask[20, 7] = 8  # a hot pixel
    return mask


def _write_nxmx(master: Path, frames: np.ndarray, split: tuple[int, ...] | None) -> None:
    """Dectris-like NXmx master; split=(3, 2) puts frames in data files, None writes them inline."""
    comp = hdf5plugin.Bitshuffle()  # LZ4, as EIGER writes
    with h5py.File(master, "w") as f:
        _, beam, det, data = nxmx_groups(f)
        beam.create_dataset("incident_wavelength", data=np.float32(GEO["wavelength_A"] / 10))
        beam["incident_wavelength"].attrs["units"] = "nm"  # the units attribute is honoured
        for name, value, units in (
            ("detector_distance", GEO["distance_mm"] / 1e3, "m"),
            ("x_pixel_size", GEO["pixel_size_mm"] / 1e3, "m"),
            ("y_pixel_size", GEO["pixel_size_mm"] / 1e3, "m"),
            ("beam_center_x", GEO["beam_center_px"][0] + 0.5, "pixel"),
            ("beam_center_y", GEO["beam_center_px"][1] + 0.5, "pixel"),
            ("count_time", 0.01, "s"),
        ):
            det.create_dataset(name, data=value)
            det[name].attrs["units"] = units
        det.create_dataset("description", data=b"Dectris Eiger test 80x64")
        det.create_dataset("bit_depth_image", data=np.int32(32))
        det.create_dataset("pixel_mask", data=_pixel_mask(), **comp)
        spec = det.create_group("detectorSpecific")
        for name, value in (("x_pixels_in_detector", N_FAST), ("y_pixels_in_detector", N_SLOW),
                            ("nimages", len(frames)), ("ntrigger", 1),
                            ("countrate_correction_count_cutoff", 100000)):
            spec.create_dataset(name, data=np.uint32(value))
        if split is None:
            data.create_dataset("data", data=frames, chunks=(1, N_SLOW, N_FAST), **comp)
            return
        start = 0
        for k, n in enumerate(split, 1):
            name = f"{master.stem.replace('_master', '')}_data_{k:06d}.h5"
            with h5py.File(master.parent / name, "w") as df:
                df.create_dataset("entry/data/data", data=frames[start:start + n],
                                  chunks=(1, N_SLOW, N_FAST), **comp)
            data[f"data_{k:06d}"] = h5py.ExternalLink(name, "entry/data/data")
            start += n


@pytest.fixture
def nxmx(tmp_path: Path) -> Path:
    folder = tmp_path / "eiger"
    folder.mkdir()
    master = folder / "run_master.h5"
    _write_nxmx(master, _nxmx_frames(), split=(3, 2))
    return master


def test_nxmx_master_and_two_data_files(nxmx: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # links resolve beside the master, not in the CWD
    with h5py.File(nxmx.parent / "run_data_000002.h5") as f:  # really bitshuffle-LZ4
        plist = f["entry/data/data"].id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        assert hdf5plugin.BSHUF_ID in filters
    info = read_info(nxmx)
    assert info.format == "eiger-hdf5" and info.n_frames == 5
    _assert_geometry(info, beam_atol=1e-9)
    assert info.detector == "Dectris Eiger test 80x64"
    assert info.max_counts == 100000

    frames, mask = _nxmx_frames(), _pixel_mask()
    frame = read_frame(nxmx, 4)  # the second frame of the second data file
    assert frame.index == 4 and frame.image.dtype == np.float32
    expected = frames[4].astype(np.float32)
    expected[(mask != 0) | (frames[4] == UINT32_MAX)] = -1
    np.testing.assert_array_equal(frame.image, expected)
    assert frame.image[3, 5] == -1 and frame.image[20, 7] == -1
    assert (frame.image[:, 40:42] == -1).all()
    assert frame.image[10, 11] == 123456789
    np.testing.assert_array_equal(read_frame(nxmx, 2).image[0], np.where(
        mask[0] != 0, -1.0, frames[2, 0].astype(np.float32)))

    geom = frame.geometry()
    assert geom.detector.name == "from-header" and geom.detector.shape == (N_SLOW, N_FAST)
    assert geom.detector.max_counts == 100000
    assert geom.wavelength_A == pytest.approx(GEO["wavelength_A"], rel=1e-6)


def test_nxmx_missing_second_data_file(nxmx: Path) -> None:
    (nxmx.parent / "run_data_000002.h5").unlink()
    assert read_info(nxmx).n_frames == 5  # from nimages * ntrigger
    assert read_frame(nxmx, 2).image.shape == (N_SLOW, N_FAST)  # first file still reads
    with pytest.raises(DataFileMissing, match="run_data_000002.h5"):
        read_frame(nxmx, 3)


@pytest.mark.parametrize("index", [5, 17, -1])
def test_nxmx_index_out_of_range(nxmx: Path, index: int) -> None:
    with pytest.raises(FormatError, match="out of range"):
        read_frame(nxmx, index)


def test_nxmx_inline_data(tmp_path: Path) -> None:
    path = tmp_path / "inline.nxs"
    frames = _nxmx_frames()[:2]
    _write_nxmx(path, frames, split=None)
    info = read_info(path)
    assert info.n_frames == 2
    _assert_geometry(info)
    img = read_frame(path, 1).image
    assert img[0, 0] == frames[1, 0, 0] and img[3, 5] == -1 and (img[:, 40] == -1).all()
    # gzip-compressed master with inline data is read directly too
    gz = tmp_path / "inline.nxs.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_frame(gz, 1).image, img)


def test_nxmx_truncated_and_corrupt(nxmx: Path, tmp_path: Path) -> None:
    data2 = nxmx.parent / "run_data_000002.h5"
    data2.write_bytes(data2.read_bytes()[: data2.stat().st_size // 2])
    with pytest.raises(FormatError, match="run_data_000002.h5"):
        read_frame(nxmx, 4)
    master = tmp_path / "cut_master.h5"
    master.write_bytes(nxmx.read_bytes()[:3000])
    with pytest.raises(FormatError, match="cut_master.h5.*(truncated|corrupt)"):
        read_frame(master)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(5000))
    with pytest.raises(FormatError, match="junk.h5"):
        read_info(junk)


def test_hdf5_data_file_and_other_hdf5_are_not_masters(nxmx: Path, tmp_path: Path) -> None:
    data1 = nxmx.parent / "run_data_000001.h5"
    assert not EigerHDF5Reader.understands(data1)
    with pytest.raises(FormatError, match="not a detector file.*master"):
        reader_for(data1)
    other = tmp_path / "table.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    assert not any(r.understands(other) for r in READERS)


# --- SMV --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["little_endian", "big_endian"])
@pytest.mark.parametrize("suffix", [".img", ".img.gz", ".img.bz2"])
def test_smv_round_trip(tmp_path: Path, order: str, suffix: str) -> None:
    img = _image(1, 65536)
    img[0, 0], img[1, 1] = 65535, 0
    path = tmp_path / f"frame{suffix}"
    write_smv(path, img, byte_order=order, **GEO)  # type: ignore[arg-type]
    assert isinstance(reader_for(path), SMVReader)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.image, img.astype(np.float32))
    _assert_geometry(frame.info)
    assert frame.info.format == "smv" and frame.info.max_counts == 65535
    assert read_info(path) == frame.info
    assert frame.geometry().detector.name == "from-header"


def test_smv_header_beam_centre_convention(tmp_path: Path) -> None:
    """dxtbx FormatSMVADSC: BEAM_CENTER_X (mm) runs along slow, BEAM_CENTER_Y along fast,
    both from the first pixel's outer corner."""
    path = tmp_path / "adsc.img"
    write_smv(path, _image(), **GEO)  # type: ignore[arg-type]
    header = path.read_bytes()[:512].decode()
    assert header.startswith("{\nHEADER_BYTES=  512;\n")
    p = GEO["pixel_size_mm"]
    f0, s0 = GEO["beam_center_px"]
    assert f"BEAM_CENTER_X={(s0 + 0.5) * p:.9g};" in header
    assert f"BEAM_CENTER_Y={(f0 + 0.5) * p:.9g};" in header
    assert f"SIZE1={N_FAST};" in header and f"SIZE2={N_SLOW};" in header


def test_smv_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.img"
    write_smv(path, _image(), **GEO)  # type: ignore[arg-type]
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(FormatError, match="cut.img: truncated SMV"):
        read_frame(path)
    path.write_bytes(data[:200])  # cut inside the header
    with pytest.raises(FormatError, match="cut.img: truncated"):
        read_info(path)
    gz = tmp_path / "cut.img.gz"
    gz.write_bytes(gzip.compress(data)[:-500])
    with pytest.raises(FormatError, match="cut.img.gz: truncated"):
        read_frame(gz)


def test_write_smv_refuses_negative_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="0..65535"):
        write_smv(tmp_path / "x.img", _image() - 1, **GEO)  # type: ignore[arg-type]


# --- CBF variants -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".cbf", ".cbf.gz", ".cbf.bz2"])
def test_cbf_plain_and_compressed(tmp_path: Path, suffix: str) -> None:
    img = _image(2)
    img[:, 40:42] = -1
    path = tmp_path / f"shot{suffix}"
    write_cbf(path, img, **GEO)  # type: ignore[arg-type]
    reader = reader_for(path)
    assert isinstance(reader, CBFReader)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.image, img.astype(np.float32))
    _assert_geometry(frame.info, beam_atol=1e-4)  # Beam_xy is printed with 4 decimals
    assert reader.info(path) == frame.info


def test_compression_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    src = tmp_path / "a.cbf"
    write_cbf(src, _image(3), **GEO)  # type: ignore[arg-type]
    hidden = tmp_path / "a_compressed.cbf"  # bzip2 data under a plain .cbf name
    hidden.write_bytes(bz2.compress(src.read_bytes()))
    np.testing.assert_array_equal(read_frame(hidden).image, read_frame(src).image)


def test_truncated_cbf(tmp_path: Path) -> None:
    path = tmp_path / "cut.cbf"
    write_cbf(path, _image(4), **GEO)  # type: ignore[arg-type]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    with pytest.raises(FormatError, match="cut.cbf: truncated"):
        read_frame(path)
    gz = tmp_path / "cut.cbf.gz"
    gz.write_bytes(gzip.compress(data)[:-300])
    with pytest.raises(FormatError, match="cut.cbf.gz: truncated"):
        read_frame(gz)


def test_cbf_index_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "one.cbf"
    write_cbf(path, _image(), **GEO)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="out of range"):
        read_frame(path, 1)


# --- NumPy ------------------------------------------------------------------------------------


def test_npy_2d_needs_geometry_overrides(tmp_path: Path) -> None:
    path = tmp_path / "frame.npy"
    img = _image(5).astype(np.float64)
    img[0, :] = -1
    np.save(path, img)
    frame = read_frame(path)
    assert isinstance(reader_for(path), NpyReader)
    np.testing.assert_array_equal(frame.image, img.astype(np.float32))
    assert frame.info.missing_geometry == ["wavelength_A", "distance_mm", "pixel_size_mm",
                                           "beam_center_px"]
    with pytest.raises(GeometryMissing, match="wavelength_A, distance_mm"):
        frame.geometry()
    fixed = read_frame(path, **GEO)  # type: ignore[arg-type]
    _assert_geometry(fixed.info)
    geom = fixed.geometry()
    assert geom.detector.shape == (N_SLOW, N_FAST) and geom.pixel_mm == GEO["pixel_size_mm"]
    x = model_input(fixed.image, geom, Preprocessing(32, d_min_A=2.0))
    assert tuple(x.shape) == (1, 1, 32, 32) and torch.isfinite(x).all()


def test_npy_3d_stack_and_gz(tmp_path: Path) -> None:
    stack = np.stack([_image(i) for i in range(3)]).astype(np.uint16)
    path = tmp_path / "stack.npy"
    np.save(path, stack)
    assert read_info(path).n_frames == 3
    np.testing.assert_array_equal(read_frame(path, 2).image, stack[2])
    with pytest.raises(FormatError, match="out of range"):
        read_frame(path, 3)
    gz = tmp_path / "stack.npy.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_frame(gz, 1).image, stack[1])


class _Marker:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.path), "w"))


def test_npy_object_array_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "UNPICKLED"
    arr = np.empty((2, 2), dtype=object)
    arr[...] = _Marker(marker)
    path = tmp_path / "evil.npy"
    np.save(path, arr, allow_pickle=True)
    assert not marker.exists()
    with pytest.raises(FormatError, match="pickled objects are not accepted"):
        read_frame(path)
    with pytest.raises(FormatError, match="pickled objects are not accepted"):
        read_info(path)
    with pytest.raises(FormatError, match="pickled objects are not accepted"):
        expand_inputs([tmp_path])
    assert not marker.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_npy_non_finite(tmp_path: Path, bad: float) -> None:
    img = _image().astype(np.float32)
    img[5, 5] = bad
    path = tmp_path / "nan.npy"
    np.save(path, img)
    with pytest.raises(FormatError, match="NaN or infinite"):
        read_frame(path)


@pytest.mark.parametrize("arr", [np.arange(10.0), np.zeros((2, 3, 4, 5)),
                                 np.zeros((4, 4), complex), np.array([["a", "b"]])])
def test_npy_wrong_shape_or_dtype(tmp_path: Path, arr: np.ndarray) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, arr)
    with pytest.raises(FormatError, match="bad.npy"):
        read_frame(path)


def test_npy_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.npy"
    np.save(path, _image())
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(FormatError, match="cut.npy: truncated"):
        read_frame(path)


# --- registry, errors, inputs -----------------------------------------------------------------


def test_unknown_and_missing_files(tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(10000))
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n" * 50)
    empty = tmp_path / "empty.cbf"
    empty.write_bytes(b"")
    for p in (noise, text, empty):
        with pytest.raises(FormatError, match=r"not a detector file xrp can read \(known: "
                                              r"cbf, eiger-hdf5, smv, npy\)") as exc:
            read_frame(p)
        assert p.name in str(exc.value)
    with pytest.raises(FormatError, match="nothere.cbf: no such file"):
        read_frame(tmp_path / "nothere.cbf")
    with pytest.raises(FormatError, match="is a folder"):
        reader_for(tmp_path)


def test_overrides_win_over_header(tmp_path: Path) -> None:
    path = tmp_path / "shot.cbf"
    write_cbf(path, _image(), **GEO)  # type: ignore[arg-type]
    frame = read_frame(path, distance_mm=250.0, beam_center_px=(1.0, 2.0))
    assert frame.info.distance_mm == 250.0 and frame.info.beam_center_px == (1.0, 2.0)
    assert frame.info.wavelength_A == pytest.approx(GEO["wavelength_A"])
    assert frame.geometry().distance_mm == 250.0
    with pytest.raises(ValueError, match="distance_mm"):
        read_frame(path, distance_mm=-1.0)


def test_detector_for_known_preset() -> None:
    info = FrameInfo(1.0, 200.0, 0.172, (1230.0, 1260.0), 2463, 2527, "PILATUS 6M", "cbf", 1)
    assert detector_for(info) is DETECTORS["pilatus6m"]
    generic = detector_for(FrameInfo(1.0, 200.0, 0.1, (5.0, 5.0), 30, 20, None, "smv", 1))
    assert generic.name == "from-header" and generic.max_counts == 2**20
    assert generic.n_modules == (1, 1)


def test_expand_inputs_folder_and_glob(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "sub").mkdir(parents=True)
    write_cbf(folder / "a.cbf.gz", _image(), **GEO)  # type: ignore[arg-type]
    write_smv(folder / "sub" / "b.img", _image(), **GEO)  # type: ignore[arg-type]
    np.save(folder / "c.npy", np.stack([_image(1), _image(2)]))
    _write_nxmx(folder / "sub" / "scan_master.h5", _nxmx_frames(), split=(3, 2))
    (folder / "README.txt").write_text("not a frame")
    (folder / "noise.dat").write_bytes(os.urandom(300))
    (folder / ".hidden.cbf").write_bytes(b"")

    entries = expand_inputs([folder])
    rel = [(str(p.relative_to(folder)), i) for p, i in entries]
    assert rel == [("a.cbf.gz", 0), ("c.npy", 0), ("c.npy", 1), ("sub/b.img", 0)] + [
        ("sub/scan_master.h5", i) for i in range(5)]  # data files are not listed on their own

    globbed = expand_inputs([str(folder / "**" / "*.h5"), folder / "a.cbf.gz"])
    assert [(p.name, i) for p, i in globbed] == [("scan_master.h5", i) for i in range(5)] + [
        ("a.cbf.gz", 0)]
    assert expand_inputs([folder / "c.npy", str(folder / "*.npy")]) == [
        (folder / "c.npy", 0), (folder / "c.npy", 1)]  # each file once

    with pytest.raises(FormatError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.cbf")])
    with pytest.raises(FormatError, match="no such file or folder"):
        expand_inputs([tmp_path / "missing.cbf"])
    with pytest.raises(FormatError, match="no detector file"):
        expand_inputs([str(folder / "*.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="holds no detector files"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(FormatError, match="not a detector file"):
        expand_inputs([folder / "README.txt"])


@needs_real
def test_real_cspad_is_read_as_its_64_asics() -> None:
    """Full imgCIF: 4 x-CBF_PACKED sections of 8 x 185 x 388, each ASIC placed by its axes."""
    f = read_frame(REAL / "cspad_thermolysin_0401.cbf")
    g = f.geometry()
    assert f.image.shape == (64, 185, 194) and f.info.panels is not None
    assert f.info.wavelength_A == pytest.approx(1.272607)
    assert g.pixel_mm == pytest.approx(0.10992) and g.distance_mm == pytest.approx(130.1066, 1e-5)
    assert f.info.max_counts == 90000
    xyz = g.lab_xyz()
    assert np.allclose(xyz[:, 2], 130.1066, atol=1e-3)  # all ASICs in one plane
    assert np.ptp(xyz[:, 0]) == pytest.approx(190, abs=3) and abs(xyz[:, :2].mean()) < 2
    assert np.median(f.image) == 11 and f.image.max() == 16383  # 14-bit ADC


@needs_real
def test_real_rayonix_with_packed_pixels_is_read_as_a_flat_panel() -> None:
    f = read_frame(REAL / "rayonix340_kapton_hit.cbf")
    g = f.geometry()
    assert f.image.shape == (1920, 1920) and f.info.panels is None
    assert g.distance_mm == pytest.approx(124.0) and g.pixel_mm == pytest.approx(0.17708333)
    assert g.beam_center_px == pytest.approx((959.5, 959.5))  # offsets -170 / 170 mm
    assert np.median(f.image) == 441 and f.image.min() == 0  # no pixel at the undefined -1


@needs_real
def test_a_compression_xrp_cannot_decode_is_named(tmp_path) -> None:
    raw = (REAL / "rayonix340_kapton_hit.cbf").read_bytes()
    odd = tmp_path / "odd.cbf"
    odd.write_bytes(raw.replace(b'conversions="x-CBF_PACKED"', b'conversions="x-CBF_CANONICAL"'))
    with pytest.raises(FormatError) as e:
        read_frame(odd)
    assert "x-CBF_CANONICAL" in str(e.value) and "odd.cbf" in str(e.value)
    assert "corrupt" not in str(e.value)
