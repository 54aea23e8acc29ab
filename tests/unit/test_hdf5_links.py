"""Crafted HDF5 masters cannot make xrp read a file it was not given (formats/hdf5_links.py):
absolute and ../ external links, virtual data set sources, external raw storage, links out of
compressed files, symbolic links, and link loops. The refusal names neither the target nor
whether it exists."""

from __future__ import annotations

import bz2
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import nxmx_groups

from xray_platform.io.formats import FormatError, open_frames, read_frame
from xray_platform.io.formats.hdf5_links import LinkOutside, check_links

FRAME = (np.arange(200 * 200) % 1000).astype(np.uint16).reshape(1, 200, 200)


def _master(path: Path, link: object | None = None) -> Path:
    """A minimal NXmx master whose /entry/data/data is ``link`` (None: the pixels inline)."""
    with h5py.File(path, "w") as f:
        _, beam, det, data = nxmx_groups(f)
        beam["incident_wavelength"] = 1.0
        for name, value in (("detector_distance", 0.2), ("x_pixel_size", 1.72e-4),
                            ("y_pixel_size", 1.72e-4), ("beam_center_x", 100.5),
                            ("beam_center_y", 100.5)):
            det[name] = value
        data["data"] = FRAME if link is None else link
    return path


def _secret(where: Path) -> Path:
    """Another user's data file: a valid EIGER data file outside the upload's folder."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / "other_user_data_000001.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data"] = FRAME + 7
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    upload = tmp_path / "upload"
    upload.mkdir()
    return upload, tmp_path / "elsewhere"


def _refusal(master: Path, root: Path, **kw) -> str:
    with pytest.raises(LinkOutside) as e:
        check_links(master, root, name="frame.h5", **kw)
    return str(e.value)


def test_absolute_external_link_refused_alike_whether_its_target_exists(dirs) -> None:
    upload, elsewhere = dirs
    secret = _secret(elsewhere)
    assert read_frame(_master(upload / "m.h5", h5py.ExternalLink(str(secret), "/entry/data/data"))
                      ).image[0, 0] == 7  # the hole: without the check the file is read
    msg = _refusal(upload / "m.h5", upload)
    _master(upload / "m.h5", h5py.ExternalLink(str(elsewhere / "nope.h5"), "/entry/data/data"))
    assert _refusal(upload / "m.h5", upload) == msg  # nothing tells existing from missing
    assert str(elsewhere) not in msg and "nope" not in msg and "other_user" not in msg
    assert msg.startswith("frame.h5: /entry/data/data is an external link") and "upload" in msg


def test_relative_dotdot_link_and_missing_sibling_refused_in_an_upload(dirs) -> None:
    upload, elsewhere = dirs
    _secret(elsewhere)
    _master(upload / "m.h5", h5py.ExternalLink("../elsewhere/other_user_data_000001.h5",
                                               "/entry/data/data"))
    assert "external link" in _refusal(upload / "m.h5", upload)
    # a data file that was not uploaded: HDF5 would search the working folder next
    _master(upload / "m.h5", h5py.ExternalLink("m_data_000001.h5", "/entry/data/data"))
    assert "not uploaded with it" in _refusal(upload / "m.h5", upload)


def test_virtual_data_set_and_external_storage_refused(dirs) -> None:
    upload, elsewhere = dirs
    secret = _secret(elsewhere)
    layout = h5py.VirtualLayout(FRAME.shape, FRAME.dtype)
    layout[:] = h5py.VirtualSource(str(secret), "/entry/data/data", FRAME.shape)
    m = _master(upload / "m.h5", None)
    with h5py.File(m, "a") as f:
        del f["entry/data/data"]
        f["entry/data"].create_virtual_dataset("data", layout)
    assert "virtual data set" in _refusal(m, upload)
    raw = elsewhere / "raw.bin"
    raw.write_bytes(bytes(FRAME.nbytes))
    with h5py.File(m, "a") as f:
        del f["entry/data/data"]
        f["entry/data"].create_dataset("data", FRAME.shape, FRAME.dtype,
                                       external=[(str(raw), 0, FRAME.nbytes)])
    msg = _refusal(m, upload)
    assert "external storage" in msg and str(raw) not in msg


def test_links_in_a_compressed_upload_refused(dirs) -> None:
    upload, _ = dirs
    m = _master(upload / "m.h5", h5py.ExternalLink("m.h5", "/entry/instrument"))  # itself
    packed = upload / "m.h5.bz2"
    packed.write_bytes(bz2.compress(m.read_bytes()))
    assert "compressed" in _refusal(packed, upload)


def test_link_loops_end(dirs) -> None:
    upload, _ = dirs
    a, b = upload / "a.h5", upload / "b.h5"
    _master(a, h5py.ExternalLink("b.h5", "/entry/data/data"))
    with h5py.File(b, "w") as f:
        f["entry/data/data"] = h5py.ExternalLink("a.h5", "/entry/data/data")
    check_links(a, upload)  # both sent: the walk ends at the loop
    with pytest.raises(FormatError):  # and reading it is an error, not a hang
        read_frame(a)
    with h5py.File(a, "a") as f:  # a soft-link loop inside one file
        del f["entry/data/data"]
        f["entry/data/data"] = h5py.SoftLink("/entry/data/loop")
        f["entry/data/loop"] = h5py.SoftLink("/entry/data/data")
    check_links(a, upload)
    with pytest.raises(FormatError):
        read_frame(a)


def test_inline_and_sibling_data_pass(dirs) -> None:
    upload, _ = dirs
    check_links(_master(upload / "inline.h5"), upload)
    with h5py.File(upload / "run_data_000001.h5", "w") as f:
        f["entry/data/data"] = FRAME
    m = _master(upload / "run_master.h5", h5py.ExternalLink("run_data_000001.h5",
                                                            "/entry/data/data"))
    check_links(m, upload)
    with open_frames(m, links_inside=upload) as src:
        assert src.frame(0).image[0, 1] == 1


def test_watched_folder_symlinks_and_late_data_files(dirs) -> None:
    upload, elsewhere = dirs
    secret = _secret(elsewhere)
    os.symlink(secret, upload / "shortcut.h5")
    msg = _refusal(upload / "shortcut.h5", upload, upload=False)
    assert "--allow-links-outside" in msg and str(secret) not in msg
    m = _master(upload / "run_master.h5", h5py.ExternalLink(str(secret), "/entry/data/data"))
    with pytest.raises(LinkOutside):
        open_frames(m, links_inside=upload)
    assert read_frame(m).image[0, 0] == 7  # without a folder to keep to: the user's own files
    # a data file the detector has not written yet: the reader says so (retried), not refused
    _master(m, h5py.ExternalLink("run_data_000001.h5", "/entry/data/data"))
    check_links(m, upload, upload=False)
    with pytest.raises(FormatError, match="no data file"):
        read_frame(m)
