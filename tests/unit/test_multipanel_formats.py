"""Multi-panel detectors from files: the real PILATUS 12M (DLS I23) and CSPAD frames, and
frames written here as stacked HDF5 arrays placed by a CrystFEL geometry file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from helpers import REAL, needs_real, nxmx_groups
from test_panels import GRID, _spot_frame, layouts

from xray_platform.core.answer import prepare_frame
from xray_platform.io.crystfel_geom import GeomError, parse_geom, write_geom
from xray_platform.io.formats import FormatError, expand_inputs, read_frame
from xray_platform.physics.geometry import HC_KEV_A
from xray_platform.physics.limits import GeometryError
from xray_platform.physics.qgrid import frame_to_grid


@needs_real
def test_the_i23_pilatus_12m_is_read_as_24_panels_on_its_cylinder() -> None:
    f = read_frame(REAL / "DLS_I23_P12M_thau_00001.cbf.gz")
    g = f.geometry()
    assert f.image.shape == (24, 195, 2463) and len(g.panels) == 24
    assert g.wavelength_A == pytest.approx(2.7552)
    # the beam meets module row 12 where dxtbx puts it: Beam_xy (1080, 2595) px, corner
    # convention, i.e. row 12's pixel (1079.5, 50.48) (its first image row is 12 * 212)
    panel, fs, ss = g.beam_hit
    assert panel == 12 and fs == pytest.approx(1079.5, abs=0.01)
    assert ss == pytest.approx(50.48, abs=0.01)
    assert 240 < g.distance_mm < 251  # the cylinder's 250 mm, not the header's 10 mm
    normals = np.array([p.normal for p in g.panels])
    angles = np.degrees(np.arccos(np.clip(np.sum(normals[1:] * normals[:-1], 1), -1, 1)))
    assert np.allclose(angles, 7.903 + 0.441, atol=1e-6)  # module pitch round the cylinder
    p = prepare_frame(f, [])
    assert p.hit and p.n_spots >= 50  # a thaumatin still: hundreds of spots


@needs_real
def test_an_unknown_pilatus_12m_is_still_refused(tmp_path) -> None:
    import gzip

    raw = gzip.decompress((REAL / "DLS_I23_P12M_thau_00001.cbf.gz").read_bytes())
    other = tmp_path / "p12m.cbf"
    other.write_bytes(raw.replace(b"S/N 120-0100", b"S/N 120-0999"))
    with pytest.raises(FormatError, match="24 modules on a cylinder"):
        read_frame(other)


def _write(tmp_path, geom, n_frames=2, spot_u=None):
    """Frames of the geometry's panels stacked as (frame, panel * slow, fast) in HDF5, with a
    geometry file; one bright pixel where the ray along spot_u meets the detector."""
    n, ns, nf = geom.shape
    data = np.random.default_rng(1).poisson(2.0, (n_frames, n, ns, nf)).astype(np.int32)
    if spot_u is not None:
        data[1] = _spot_frame(geom, spot_u).astype(np.int32)
    h5 = tmp_path / "run.h5"
    with h5py.File(h5, "w") as fh:
        fh["/entry/data/data"] = data.reshape(n_frames, n * ns, nf)
    gpath = tmp_path / "det.geom"
    gpath.write_text(write_geom(geom.panels, 120.0, 1e3 * HC_KEV_A / geom.wavelength_A))
    return h5, gpath, data


def _same_panels_same_spot_cell(read, geom, image, made) -> None:
    """The panels read back are the ones written, and the spot lands on the same grid cell
    as in the geometry it was made with."""
    for a, b in zip(read.panels, geom.panels, strict=True):
        assert np.allclose(a.origin_mm, b.origin_mm, atol=1e-6)
        assert np.allclose(a.fast, b.fast, atol=1e-8) and np.allclose(a.slow, b.slow, atol=1e-8)
    cell = int(torch.argmax(frame_to_grid(torch.from_numpy(image), read, GRID)))
    assert cell == int(torch.argmax(frame_to_grid(torch.from_numpy(made.astype(np.float32)),
                                                  geom, GRID)))


@pytest.mark.parametrize("layout", ["quads", "cylinder"])
def test_a_crystfel_geometry_places_stacked_hdf5_panels(tmp_path, layout) -> None:
    geom = layouts()[layout]
    u = np.array([0.02, -0.2, 1.0])
    u /= np.linalg.norm(u)
    h5, gpath, data = _write(tmp_path, geom, spot_u=u)
    assert expand_inputs([h5], geometry=gpath) == [(h5, 0), (h5, 1)]
    assert expand_inputs([tmp_path], geometry=gpath) == [(h5, 0), (h5, 1)]
    f = read_frame(h5, 1, geometry=gpath)
    read = f.geometry()
    assert f.image.shape == geom.shape and np.array_equal(f.image, data[1])
    assert read.wavelength_A == pytest.approx(1.0)
    _same_panels_same_spot_cell(read, geom, f.image, data[1])


def test_crystfel_geometry_masks_and_errors(tmp_path) -> None:
    geom = layouts()["quads"]
    h5, gpath, _ = _write(tmp_path, geom)
    text = gpath.read_text()
    masked = tmp_path / "masked.geom"
    masked.write_text(text + "\nbad_a/min_fs = 0\nbad_a/max_fs = 9\nbad_a/min_ss = 0\n"
                      "bad_a/max_ss = 799\nbad_a/panel = p1\np3/no_index = 1\n")
    f = read_frame(h5, 0, geometry=masked)
    assert (f.image[1, :, :10] == -1).all() and (f.image[1, :, 10:] >= 0).all()
    assert (f.image[3] == -1).all() and (f.image[0] >= 0).all()
    with pytest.raises(GeomError, match="p0 lacks res"):
        parse_geom(text.replace("p0/res", "p0/xres"))
    with pytest.raises(GeomError, match="not a vector"):
        parse_geom(text.replace("p0/fs = +", "p0/fs = q"))
    with pytest.raises(FormatError, match="does not hold"):
        read_frame(h5, geometry=gpath.with_name("x.geom").write_text(
            text.replace("/entry/data/data", "/entry/other")) and gpath.with_name("x.geom"))
    with pytest.raises(FormatError, match="not one"):
        other = tmp_path / "a.npy"
        np.save(other, np.zeros((4, 4)))
        read_frame(other, geometry=gpath)
    near = tmp_path / "near.geom"
    near.write_text(text.replace("clen = 0.12 m", "clen = 0.005 m"))
    with pytest.raises(GeometryError, match="detector distance"):
        read_frame(h5, geometry=near).geometry()


def _write_nxmx(path, geom, data, stacked: bool = False) -> None:
    """An NXmx master of one module per panel, the panels tiled into one image (2 x 2 here) or
    (``stacked``) one image per module, each placed by module_offset / fast / slow
    transformations (corner convention, metres)."""
    n, ns, nf = geom.shape
    with h5py.File(path, "w") as fh:
        _, beam, det, data_group = nxmx_groups(fh)
        beam["incident_wavelength"] = geom.wavelength_A
        beam["incident_wavelength"].attrs["units"] = "angstrom"
        det["description"] = "four tilted modules"
        det["x_pixel_size"] = 1e-4
        det["y_pixel_size"] = 1e-4
        for k, p in enumerate(geom.panels):
            m = det.create_group(f"module{k}")
            m.attrs["NX_class"] = "NXdetector_module"
            m["data_origin"] = np.array([k, 0, 0] if stacked else [(k // 2) * ns, (k % 2) * nf])
            m["data_size"] = np.array([1, ns, nf] if stacked else [ns, nf])
            corner = np.asarray(p.origin_mm) - 0.5 * p.pixel_mm * (np.asarray(p.fast)
                                                                   + np.asarray(p.slow))
            off = m.create_dataset("module_offset", data=np.linalg.norm(corner) / 1e3)
            off.attrs.update(transformation_type="translation", units="m",
                             vector=corner / np.linalg.norm(corner), depends_on=".")
            for name, v in (("fast_pixel_direction", p.fast), ("slow_pixel_direction", p.slow)):
                d = m.create_dataset(name, data=p.pixel_mm)
                d.attrs.update(transformation_type="translation", units="mm", vector=v,
                               depends_on=f"/entry/instrument/detector/module{k}/module_offset")
        img = np.zeros((len(data), 2 * ns, 2 * nf), dtype=np.uint16)
        for k in range(n):
            img[:, (k // 2) * ns:(k // 2 + 1) * ns, (k % 2) * nf:(k % 2 + 1) * nf] = data[:, k]
        if stacked:  # (frames, module, slow, fast), as written for unassembled modules
            img = np.asarray(data, dtype=np.uint16)
        data_group["data"] = img


@pytest.mark.parametrize("stacked", [False, True], ids=["one-image", "module-stack"])
def test_nxmx_modules_are_placed_by_their_transformations(tmp_path, stacked) -> None:
    geom = layouts()["quads"]
    u = np.array([0.02, -0.2, 1.0])
    u /= np.linalg.norm(u)
    n, ns, nf = geom.shape
    data = np.random.default_rng(2).poisson(2.0, (2, n, ns, nf))
    data[1] = _spot_frame(geom, u)
    path = tmp_path / "quads_master.h5"
    _write_nxmx(path, geom, data, stacked)
    f = read_frame(path, 1)
    read = f.geometry()
    assert f.info.format == "eiger-hdf5" and f.info.n_frames == 2
    assert f.image.shape == geom.shape and np.array_equal(f.image, data[1])
    _same_panels_same_spot_cell(read, geom, f.image, data[1])
    assert expand_inputs([path]) == [(path, 0), (path, 1)]


def test_a_multi_panel_thumbnail_shows_the_reciprocal_grid() -> None:
    import io

    from PIL import Image

    from xray_platform.io.formats.base import panel_info
    from xray_platform.io.formats.registry import Frame
    from xray_platform.live.thumbnail import thumbnail

    geom = layouts()["quads"]
    img = np.ones(geom.shape, dtype=np.float32)
    frame = Frame(img, panel_info(geom.panels, wavelength_A=1.0, detector="quads",
                                  format="test", n_frames=1), "quads", 0)
    png, meta = thumbnail(frame, size=128)
    pic = np.asarray(Image.open(io.BytesIO(png)))
    assert pic.shape == (128, 128) and meta["grid_d_min_A"] == 1.2 and meta["n_panels"] == 4
    assert pic[64, 64] == 200 and (pic != 200).any()  # the beam's hole masked, panels shown


def test_xrp_watch_reads_a_folder_of_hdf5_arrays_through_a_geometry(tmp_path) -> None:
    from xray_platform.live.store import RunStore
    from xray_platform.live.watch import watch_folder

    geom = layouts()["quads"]
    folder = tmp_path / "run"
    folder.mkdir()
    _, gpath, _ = _write(folder, geom, n_frames=3)
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    s = watch_folder(folder, store, "jf", {}, overrides={"geometry": str(gpath)}, poll_s=0.05,
                     settle_s=0.0, exit_when_idle_s=0.3)
    answers = store.answers("jf")
    assert s.answered == 3 and len(answers) == 3
    assert all(a.get("error") in (None, "") and a["shape"] == [4, 400, 400] for a in answers)


def test_a_module_stack_over_the_frame_size_limit_is_refused_before_reading(tmp_path) -> None:
    geom = layouts()["quads"]
    n, ns, nf = geom.shape
    path = tmp_path / "big_master.h5"
    _write_nxmx(path, geom, np.zeros((1, n, ns, nf), dtype=np.uint16), stacked=True)
    with h5py.File(path, "a") as fh:  # 401 module images of 400 x 400: 64.2 M pixels a frame
        del fh["/entry/data/data"]
        fh.create_dataset("/entry/data/data", shape=(1, 401, ns, nf), dtype=np.uint16,
                          chunks=(1, 1, ns, nf))  # never written: the file stays small
    with pytest.raises(GeometryError, match="above the limit"):
        read_frame(path)
