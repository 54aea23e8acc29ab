"""Sensor layouts (physics/layouts.py): CSPAD's 64 ASICs as LCLS metrology placed them and the
ePix10k 2M pinwheel are simulated on a virtual flat frame, cut into their sensors, written as
multi-panel files, and read back onto the same model-grid cells."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import REAL, needs_real

from xray_platform.io.crystfel_geom import write_geom
from xray_platform.io.formats.registry import read_frame
from xray_platform.io.imgcif import read_panels, write_imgcif
from xray_platform.physics.geometry import HC_KEV_A, detector
from xray_platform.physics.layouts import LAYOUT_DIR, layout, layout_of_panels
from xray_platform.physics.panels import cut_into_panels
from xray_platform.physics.presets import preset
from xray_platform.physics.qgrid import frame_to_grid
from xray_platform.physics.sampling import sample_params
from xray_platform.physics.simulate import simulate

PRESET = preset("zoo-resolution")


@needs_real
def test_the_cspad_layout_is_the_metrology_of_the_real_frame() -> None:
    path = REAL / "cspad_thermolysin_0401.cbf"
    _, panels, _ = read_panels(path, path.read_bytes())
    shipped = json.loads((LAYOUT_DIR / "cspad.json").read_text())
    rebuilt = layout_of_panels(panels, shipped["description"], shipped["source"])
    assert rebuilt == shipped


@pytest.mark.parametrize("name,n_sensors", [("cspad", 64), ("epix10k2m", 16)])
def test_a_layout_covers_exactly_its_sensors_pixels(name: str, n_sensors: int) -> None:
    lay, det = layout(name), detector(name)
    assert len(lay.sensors) == n_sensors and det.shape == lay.frame_shape
    gaps = det.gap_mask()
    # the virtual frame holds as many sensor pixels as the sensors (rotations are area-true)
    assert abs(int((~gaps).sum()) - n_sensors * lay.n_fast * lay.n_slow) <= 8
    ns, nf = det.shape
    assert gaps[(ns - 1) // 2, (nf - 1) // 2]  # the beam passes the central hole
    fi = torch.tensor([0.0, (nf - 1) / 2, nf + 5.0])
    si = torch.tensor([0.0, (ns - 1) / 2, -3.0])
    assert det.is_gap(fi, si)[1] and bool(det.is_gap(fi, si)[0]) == bool(gaps[0, 0])


def _shot(name: str, seed: int = 3):
    p = sample_params(seed, PRESET.sim.with_(n_lattices={1: 1.0}), detector=name)
    p = replace(p, spot_scale=p.spot_scale * 30)  # spots far above the background
    return p, simulate(p, PRESET.grid, full_frame=True)


@pytest.mark.parametrize("name", ["cspad", "epix10k2m"])
def test_a_simulated_layout_frame_reads_back_onto_the_same_cells(tmp_path, name: str) -> None:
    """Simulated on the virtual frame, cut into sensors and written as a full imgCIF CBF and as
    stacked HDF5 with a CrystFEL .geom: both read back as the sensors written, and map onto the
    grid as the simulator's own input does (same masked cells, same brightest cell)."""
    import h5py

    p, shot = _shot(name)
    img, pg = cut_into_panels(shot.frame, p.geometry)
    assert img.shape == (len(layout(name).sensors), layout(name).n_slow, layout(name).n_fast)
    assert (img < 0).mean() < 0.01  # sensor pixels are not gaps
    fast = shot.inputs
    cbf = tmp_path / f"{name}.cbf"
    write_imgcif(cbf, img, pg.panels, wavelength_A=p.wavelength_A, max_counts=10_000)
    h5, geom = tmp_path / f"{name}.h5", tmp_path / f"{name}.geom"
    with h5py.File(h5, "w") as fh:
        fh["/entry/data/data"] = img.reshape(1, -1, img.shape[2])
    geom.write_text(write_geom(pg.panels, p.distance_mm, 1e3 * HC_KEV_A / p.wavelength_A))
    for frame in (read_frame(cbf), read_frame(h5, geometry=geom)):
        got = frame.geometry()
        assert len(got.panels) == len(pg.panels)
        for a, b in zip(got.panels, pg.panels, strict=True):
            assert np.allclose(a.origin_mm, b.origin_mm, atol=1e-4)
            assert np.allclose(a.fast, b.fast, atol=1e-6)
        g = frame_to_grid(torch.from_numpy(frame.image.astype(np.float32)), got,
                          PRESET.grid).numpy()
        assert np.mean((g < 0) != (fast < 0)) < 0.002
        assert np.argmax(g) == np.argmax(fast)
