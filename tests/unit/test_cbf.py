"""Tests for xray_platform.io.cbf: nanoBragg references, real PILATUS/EIGER frames, round trips."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import fabio
import numpy as np
import pytest
from helpers import NANOBRAGG as REF
from helpers import REAL, needs_real
from helpers import needs_nanobragg as needs_ref

from xray_platform.io.cbf import (
    FrameHeader,
    GeometryMissing,
    read_cbf,
    require_geometry,
    write_cbf,
)

# PILATUS 6M: 5 x 12 modules of 487 x 195 pixels in a 2463 x 2527 frame; the rest are gaps (-1).
P6M_FAST, P6M_SLOW = 2463, 2527
P6M_GAPS = P6M_FAST * P6M_SLOW - 60 * 487 * 195


@pytest.fixture(scope="module")
def thaumatin() -> dict[str, tuple[np.ndarray, FrameHeader]]:
    return {n: read_cbf(REAL / f"thau_3_2_{n}.cbf.bz2") for n in ("0002", "0017")}


# --- nanoBragg references ---------------------------------------------------------------------


@needs_ref
@pytest.mark.parametrize("i", range(8))
def test_nanobragg_ref_header_and_pixels(i: int) -> None:
    truth = json.loads((REF / f"ref_{i:03d}.json").read_text())
    img, hdr = read_cbf(REF / f"ref_{i:03d}.cbf")
    n_fast, n_slow = truth["image_size_fast_slow"]
    assert img.dtype == np.int32
    assert img.shape == (n_slow, n_fast)
    assert (hdr.n_fast, hdr.n_slow) == (n_fast, n_slow)
    # the header prints wavelength %.5f Å, distance %.5f m, Beam_xy %.2f px
    assert hdr.wavelength_A == pytest.approx(truth["wavelength_A"], abs=5e-6 + 1e-12)
    assert hdr.distance_mm == pytest.approx(truth["distance_mm"], abs=5e-3 + 1e-9)
    assert hdr.pixel_size_mm == pytest.approx(truth["pixel_size_mm"], abs=1e-12)
    assert hdr.beam_center_px is not None
    np.testing.assert_allclose(hdr.beam_center_px, truth["beam_center_px"], atol=5e-3 + 1e-9)
    np.testing.assert_allclose(
        np.asarray(hdr.beam_center_px) + 0.5, truth["header_beam_xy"], atol=5e-3 + 1e-9
    )
    assert hdr.exposure_s == pytest.approx(truth["exposure_s"])
    assert hdr.detector is not None and hdr.detector.startswith("PILATUS")
    assert int(img[img >= 0].sum(dtype=np.int64)) == truth["image_sum_active"]
    assert int(img.max()) == truth["image_max_counts"]
    assert int((img < 0).sum()) == truth["n_gap_pixels"] == 0


@needs_ref
def test_pixels_match_fabio() -> None:
    img, _ = read_cbf(str(REF / "ref_000.cbf"))
    np.testing.assert_array_equal(img, fabio.open(str(REF / "ref_000.cbf")).data)


# --- real frames ------------------------------------------------------------------------------


@needs_real
def test_thaumatin_bz2(thaumatin: dict[str, tuple[np.ndarray, FrameHeader]]) -> None:
    # Header of both frames, read by eye (bzcat | head):
    #   # Detector: PILATUS3 6M, S/N 60-0119     # Pixel_size 172e-6 m x 172e-6 m
    #   # Exposure_time 0.0190000 s               # Wavelength 0.96859 A
    #   # Detector_distance 0.35100 m             # Beam_xy (1261.61, 1306.96) pixels
    for name, (img, hdr) in thaumatin.items():
        assert img.dtype == np.int32, name
        assert img.shape == (P6M_SLOW, P6M_FAST)
        assert (hdr.n_fast, hdr.n_slow) == (P6M_FAST, P6M_SLOW)
        assert int((img == -1).sum()) == P6M_GAPS  # inter-module gaps
        assert int((img == -2).sum()) > 0  # bad pixels
        assert hdr.wavelength_A == pytest.approx(0.96859, abs=1e-9)
        assert hdr.distance_mm == pytest.approx(351.0, abs=1e-9)
        assert hdr.pixel_size_mm == pytest.approx(0.172, abs=1e-12)
        assert hdr.beam_center_px == pytest.approx((1261.11, 1306.46), abs=1e-9)
        assert hdr.exposure_s == pytest.approx(0.019)
        assert hdr.detector == "PILATUS3 6M, S/N 60-0119"
        assert hdr.raw["Beam_xy"] == "(1261.61, 1306.96) pixels"
        assert hdr.raw["Sensor_thickness"] == "0.000450 m"
    hit, miss = thaumatin["0002"][0], thaumatin["0017"][0]
    assert hit[hit >= 0].sum(dtype=np.int64) > miss[miss >= 0].sum(dtype=np.int64)


@needs_real
def test_dls_full_cbf_gz_pilatus_header() -> None:
    # Full CBF that also carries a PILATUS header: '# Wavelength 0.97625 A',
    # '# Detector_distance 0.29147 m', '# Beam_xy (1229.30, 1200.48) pixels', 0.009 s exposure.
    img, hdr = read_cbf(REAL / "DLS_I03_smargon_0001.cbf.gz")
    assert img.dtype == np.int32 and img.shape == (P6M_SLOW, P6M_FAST)
    assert int((img == -1).sum()) == P6M_GAPS
    assert hdr.wavelength_A == pytest.approx(0.97625)
    assert hdr.distance_mm == pytest.approx(291.47)
    assert hdr.pixel_size_mm == pytest.approx(0.172)
    assert hdr.beam_center_px == pytest.approx((1228.80, 1199.98))
    assert hdr.exposure_s == pytest.approx(0.009)
    assert hdr.detector == "PILATUS3 6M, S/N 60-0126"
    assert hdr.raw["_diffrn_radiation_wavelength.wavelength"] == "0.97625"


@needs_real
def test_dls_full_cbf_geometry_from_imgcif_tables(tmp_path: Path) -> None:
    """Drop the PILATUS text header: geometry must come from the _axis etc. categories."""
    src = gzip.decompress((REAL / "DLS_I03_smargon_0001.cbf.gz").read_bytes())
    stripped, n = re.subn(
        rb"_array_data\.header_convention[^\n]*\n_array_data\.header_contents\s*\n;.*?\n;\r?\n",
        b"",
        src,
        count=1,
        flags=re.S,
    )
    assert n == 1 and b"Beam_xy" not in stripped
    path = tmp_path / "full_only.cbf"
    path.write_bytes(stripped)
    img, hdr = read_cbf(path)
    ref_img, ref_hdr = read_cbf(REAL / "DLS_I03_smargon_0001.cbf.gz")
    np.testing.assert_array_equal(img, ref_img)
    assert "Beam_xy" not in hdr.raw
    assert hdr.wavelength_A == pytest.approx(0.97625)  # _diffrn_radiation_wavelength
    assert hdr.pixel_size_mm == pytest.approx(0.172)  # _array_element_size (m)
    assert hdr.distance_mm == pytest.approx(291.47)  # DET_Z displacement along the beam
    assert hdr.exposure_s == pytest.approx(0.009)  # _diffrn_scan_frame.integration_time
    assert hdr.detector == "Pilatus6M"
    # ELEMENT_Y offset (-211.44, 206.48) mm -> (1229.302, 1200.465) px from the first pixel's
    # corner; agrees with the PILATUS header's Beam_xy - 0.5 to its rounding (0.01 mm).
    assert hdr.beam_center_px == pytest.approx((211.44 / 0.172 - 0.5, 206.48 / 0.172 - 0.5))
    assert ref_hdr.beam_center_px is not None
    np.testing.assert_allclose(hdr.beam_center_px, ref_hdr.beam_center_px, atol=0.02)


@needs_real
def test_eiger_minicbf_gz() -> None:
    # '# Wavelength 0.98027 A', '# Detector_distance 0.21396 m', '# Pixel_size 75e-6 m',
    # '# Beam_xy (2216.06, 2300.41) pixels', 4148 x 4362 pixels.
    img, hdr = read_cbf(REAL / "dlsnxs2cbf_therm_0001.cbf.gz")
    assert img.dtype == np.int32 and img.shape == (4362, 4148)
    assert (img == -1).any()
    assert hdr.wavelength_A == pytest.approx(0.98027)
    assert hdr.distance_mm == pytest.approx(213.96)
    assert hdr.pixel_size_mm == pytest.approx(0.075)
    assert hdr.beam_center_px == pytest.approx((2215.56, 2299.91))


# --- missing geometry ---------------------------------------------------------------------------


@needs_ref
def test_missing_geometry_and_overrides(tmp_path: Path) -> None:
    data = (REF / "ref_000.cbf").read_bytes()
    data = re.sub(rb"# Wavelength [^\r\n]*\r?\n", b"", data)
    data = re.sub(rb"# Beam_xy [^\r\n]*\r?\n", b"", data)
    path = tmp_path / "nogeom.cbf"
    path.write_bytes(data)
    img, hdr = read_cbf(path)
    assert img.shape == (1024, 1024)
    assert hdr.wavelength_A is None and hdr.beam_center_px is None
    assert hdr.distance_mm == pytest.approx(187.78)
    with pytest.raises(GeometryMissing, match="wavelength_A, beam_center_px"):
        require_geometry(hdr)
    full = require_geometry(hdr, wavelength_A=1.2, beam_center_px=(500, 510), distance_mm=100.0)
    assert full.wavelength_A == 1.2 and full.beam_center_px == (500.0, 510.0)
    assert full.distance_mm == 100.0  # overrides win over the header
    assert full.pixel_size_mm == pytest.approx(0.172)


# --- writing ----------------------------------------------------------------------------------


def _random_image(rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 5000, size=(301, 203), dtype=np.int32)  # slow != fast
    img[rng.random(img.shape) < 0.01] = rng.integers(0, 2**31 - 1, dtype=np.int32)  # big jumps
    img[:, 97:104] = -1  # a vertical gap
    img[150:160, :] = -1  # a horizontal gap
    img[5, 7] = -2
    img[0, 0] = np.iinfo(np.int32).max
    return img


GEOM = dict(
    wavelength_A=1.0332123456,
    distance_mm=187.7801459,
    pixel_size_mm=0.172,
    beam_center_px=(101.2345678, 149.8765432),
    exposure_s=0.05,
)


@pytest.mark.parametrize("name", ["shot.cbf", "shot.cbf.gz", "shot.cbf.bz2"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    img = _random_image(np.random.default_rng(7))
    path = tmp_path / name
    path.write_bytes(b"old contents")  # overwritten atomically
    write_cbf(path, img, **GEOM, detector="xrp test detector", extra={"Comment": "hello"})
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp files left behind

    back, hdr = read_cbf(path)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, img)
    assert (hdr.n_fast, hdr.n_slow) == (203, 301)
    assert hdr.wavelength_A == pytest.approx(GEOM["wavelength_A"], abs=1e-5)
    assert hdr.distance_mm == pytest.approx(GEOM["distance_mm"], abs=1e-3)
    assert hdr.pixel_size_mm == pytest.approx(0.172, abs=1e-12)
    assert hdr.beam_center_px is not None
    np.testing.assert_allclose(hdr.beam_center_px, GEOM["beam_center_px"], atol=1e-3)
    assert hdr.exposure_s == pytest.approx(0.05)
    assert hdr.detector == "xrp test detector"
    assert hdr.raw["Comment"] == "hello"

    # independent readers: fabio, and the header lines in the nanoBragg/PILATUS format
    np.testing.assert_array_equal(fabio.open(str(path)).data, img)
    if name.endswith(".cbf"):
        text = path.read_bytes()[:4096].decode("latin-1")
        assert "_array_data.header_convention" in text and "PILATUS_1.2" in text
        assert "# Pixel_size 172e-6 m x 172e-6 m" in text
        assert re.search(r"# Beam_xy \(101\.7346, 150\.3765\) pixels", text)
        assert re.search(r"# Wavelength 1\.03321\d* A", text)
        assert re.search(r"# Detector_distance 0\.18778\d* m", text)
        assert "data_shot" in text


@needs_ref
def test_write_reproduces_reference(tmp_path: Path) -> None:
    img, hdr = read_cbf(REF / "ref_003.cbf")
    assert hdr.beam_center_px is not None
    write_cbf(
        tmp_path / "copy.cbf",
        img,
        wavelength_A=hdr.wavelength_A or 0.0,
        distance_mm=hdr.distance_mm or 0.0,
        pixel_size_mm=hdr.pixel_size_mm or 0.0,
        beam_center_px=hdr.beam_center_px,
        exposure_s=hdr.exposure_s or 0.0,
    )
    back, hdr2 = read_cbf(tmp_path / "copy.cbf")
    np.testing.assert_array_equal(back, img)
    for field in ("wavelength_A", "distance_mm", "pixel_size_mm", "exposure_s"):
        assert getattr(hdr2, field) == pytest.approx(getattr(hdr, field), abs=1e-9)
    assert hdr2.beam_center_px == pytest.approx(hdr.beam_center_px, abs=1e-9)


def test_write_rejects_bad_input(tmp_path: Path) -> None:
    img = np.zeros((4, 5), dtype=np.int32)
    with pytest.raises(ValueError, match="integer dtype"):
        write_cbf(tmp_path / "a.cbf", img.astype(np.float32), **GEOM)
    with pytest.raises(ValueError, match="int32"):
        write_cbf(tmp_path / "a.cbf", np.full((4, 5), 2**40, dtype=np.int64), **GEOM)
    with pytest.raises(ValueError, match="wavelength_A"):
        write_cbf(tmp_path / "a.cbf", img, **{**GEOM, "wavelength_A": -1.0})
    with pytest.raises(ValueError, match="2-D"):
        write_cbf(tmp_path / "a.cbf", np.zeros(5, dtype=np.int32), **GEOM)
    assert not list(tmp_path.iterdir())


# --- broken input -----------------------------------------------------------------------------


@needs_ref
@pytest.mark.parametrize("n_bytes", [100, 1500, 600_000, 1_050_000])
def test_truncated_file(tmp_path: Path, n_bytes: int) -> None:
    # 1500 bytes ends inside the MIME header of the binary section: plain fabio loops forever.
    path = tmp_path / f"cut_{n_bytes}.cbf"
    path.write_bytes((REF / "ref_000.cbf").read_bytes()[:n_bytes])
    with pytest.raises(ValueError, match=re.escape(path.name)):
        read_cbf(path)


@needs_real
def test_truncated_gz(tmp_path: Path) -> None:
    path = tmp_path / "cut.cbf.gz"
    path.write_bytes((REAL / "DLS_I03_smargon_0001.cbf.gz").read_bytes()[:200_000])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_cbf(path)


@needs_ref
def test_corrupt_binary(tmp_path: Path) -> None:
    data = bytearray((REF / "ref_000.cbf").read_bytes())
    data[500_000:500_010] = b"\x80" * 10
    path = tmp_path / "corrupt.cbf"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt.cbf.*MD5"):
        read_cbf(path)


def test_not_a_cbf(tmp_path: Path) -> None:
    path = tmp_path / "notes.cbf"
    path.write_text("this is not a CBF file\n" * 10)
    with pytest.raises(ValueError, match="notes.cbf: not a CBF"):
        read_cbf(path)
    empty = tmp_path / "empty.cbf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.cbf"):
        read_cbf(empty)


@needs_real
def test_hdf5_is_not_a_cbf() -> None:
    with pytest.raises(ValueError, match="dectris_eiger_master.h5"):
        read_cbf(REAL / "dectris_eiger_master.h5")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_cbf(tmp_path / "nope.cbf")
