"""Random shot distributions: what a data set of shots spans, and drawing one shot from a seed.

Ranges cover what real serial and still data look like (design.md "Cover what real frames look
like"): crystal size / exposure over four orders of magnitude (``spot_scale``), background from
~0.1 to ~30 photons per pixel, mosaic spread up to ~1 deg, beam divergence and bandwidth from a
monochromated synchrotron (1e-4) to a pink/SASE beam (3e-3), large and small cells.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from xray_platform.physics import crystal as xtal
from xray_platform.physics.geometry import Beamstop, detector
from xray_platform.physics.simulate import SPOT_PROFILES, ShotParams

Range = tuple[float, float]


@dataclass(frozen=True)
class SimConfig:
    """The distribution shots are drawn from. Ranges are (low, high); ``log_*`` are sampled
    log-uniformly. ``n_lattices`` maps a lattice count (0 = blank) to its probability."""

    detectors: tuple[str, ...] = ("pilatus6m", "eiger16m")
    distance_mm: Range = (100.0, 400.0)
    wavelength_A: Range = (0.7, 1.5)
    beam_jitter_mm: float = 2.0  # beam centre: uniform in a disc around the detector centre
    p_beamstop: float = 0.9
    crystal_forms: tuple[str, ...] = ()  # empty: every form in crystal.CRYSTAL_FORMS
    n_lattices: dict[int, float] = field(default_factory=lambda: {0: 0.05, 1: 0.95})
    #: "gaussian" (sigma below), "uniform" (range below), or "mixed": each multi-lattice shot
    #: draws one of uniform and gaussian with each sigma of ``misorientation_sigmas_deg``
    misorientation: str = "gaussian"
    misorientation_sigma_deg: float = 5.0
    misorientation_range_deg: Range = (1.0, 180.0)
    misorientation_sigmas_deg: tuple[float, ...] = ()  # "mixed" only
    lattice_scale: Range = (0.3, 1.0)  # relative intensity of lattices 2..N
    d_B: Range = (1.0, 6.0)  # Å, uniform
    log_mosaic_deg: Range = (0.02, 1.0)
    log_domain_size_A: Range = (500.0, 10000.0)
    log_bandwidth: Range = (1e-4, 3e-3)
    log_divergence_mrad: Range = (0.01, 0.3)
    spot_sigma_px: Range = (0.5, 1.4)
    spot_profile: str = "round"  # simulate.SPOT_PROFILES ("mosaic": smeared by mosaic spread)
    log_spot_scale: Range = (5.0, 2e5)
    log_bg_level: Range = (0.2, 30.0)
    p_ice: float = 0.15
    log_ice: Range = (0.3, 10.0)
    p_hot_pixels: float = 0.3
    max_hot_pixels: int = 10
    dead_pixels: int = 0

    def __post_init__(self) -> None:
        for d in self.detectors:
            detector(d)  # raises on unknown names
        for name in self.crystal_forms:
            if name not in xtal.CRYSTAL_FORMS:
                raise ValueError(f"unknown crystal form {name!r}; known: "
                                 f"{sorted(xtal.CRYSTAL_FORMS)}")
        if not self.n_lattices or any(k < 0 or v < 0 for k, v in self.n_lattices.items()):
            raise ValueError(f"n_lattices must map counts >= 0 to weights >= 0: {self.n_lattices}")
        for name, value in asdict(self).items():
            if isinstance(value, tuple) and len(value) == 2 and all(
                    isinstance(v, float | int) for v in value):
                lo, hi = value
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                    raise ValueError(f"{name}: bad range {value}")
                if name.startswith("log_") and lo <= 0:
                    raise ValueError(f"{name}: log-uniform range must be positive, got {value}")
        if self.spot_profile not in SPOT_PROFILES:
            raise ValueError(f"spot_profile must be one of {SPOT_PROFILES}, got "
                             f"{self.spot_profile!r}")
        if self.misorientation not in ("gaussian", "uniform", "mixed"):
            raise ValueError(f"misorientation must be 'gaussian', 'uniform' or 'mixed', "
                             f"got {self.misorientation!r}")
        if self.misorientation == "mixed" and not all(
                math.isfinite(v) and v > 0 for v in self.misorientation_sigmas_deg):
            raise ValueError("mixed misorientation needs sigmas > 0 in misorientation_sigmas_deg, "
                             f"got {self.misorientation_sigmas_deg}")

    def with_(self, **changes) -> SimConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_lattices"] = {str(k): v for k, v in self.n_lattices.items()}
        if not self.misorientation_sigmas_deg:  # data sets written before "mixed" existed
            del d["misorientation_sigmas_deg"]
        if self.spot_profile == "round":  # data sets written before spot profiles existed
            del d["spot_profile"]
        return d


def shot_seed(base_seed: int, index: int) -> int:
    """The seed of shot ``index`` of a data set with seed ``base_seed`` (63-bit)."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(2, np.uint64)[0] >> 1)


def _u(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _logu(rng: np.random.Generator, r: Range) -> float:
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


def sample_params(seed: int, cfg: SimConfig, **fixed) -> ShotParams:
    """Draw one shot from ``cfg``; the seed fully determines it. ``fixed`` overrides any
    ShotParams field after drawing (e.g. d_B for a user set)."""
    rng = np.random.default_rng(seed)
    det = detector(fixed.get("detector", cfg.detectors[rng.integers(len(cfg.detectors))]))
    distance = _u(rng, cfg.distance_mm)
    wavelength = _u(rng, cfg.wavelength_A)
    r = cfg.beam_jitter_mm * math.sqrt(rng.uniform())
    a = rng.uniform(0, 2 * math.pi)
    f0 = (det.n_fast - 1) / 2 + r * math.cos(a) / det.pixel_mm
    s0 = (det.n_slow - 1) / 2 + r * math.sin(a) / det.pixel_mm
    beamstop = None
    if rng.uniform() < cfg.p_beamstop:
        beamstop = Beamstop(radius_mm=_u(rng, (0.8, 2.5)), arm_width_mm=_u(rng, (0.5, 1.5)),
                            arm_angle_deg=_u(rng, (0.0, 360.0)))
    counts = sorted(cfg.n_lattices)
    w = np.array([cfg.n_lattices[c] for c in counts], dtype=float)
    n_lat = int(counts[rng.choice(len(counts), p=w / w.sum())])
    forms = cfg.crystal_forms or tuple(sorted(xtal.CRYSTAL_FORMS))
    form = forms[rng.integers(len(forms))]
    U0 = xtal.random_rotation(rng)
    Us = [U0]
    mis: list[float] = []
    dist, sigma = cfg.misorientation, cfg.misorientation_sigma_deg
    if dist == "mixed" and n_lat > 1:  # one distribution per shot: uniform or one gaussian
        pick = int(rng.integers(1 + len(cfg.misorientation_sigmas_deg)))
        dist = "uniform" if pick == 0 else "gaussian"
        sigma = cfg.misorientation_sigmas_deg[pick - 1] if pick else sigma
    for _ in range(1, n_lat):
        axis, angle = xtal.sample_misorientation(
            rng, dist, sigma_deg=sigma,
            low_deg=cfg.misorientation_range_deg[0], high_deg=cfg.misorientation_range_deg[1])
        Us.append(xtal.axis_angle_matrix(axis, angle) @ U0)
        mis.append(float(angle))
    scales = [1.0] + [_u(rng, cfg.lattice_scale) for _ in range(1, n_lat)]
    # draw every remaining number even for blanks, so a seed's other parameters do not
    # depend on the lattice count
    p = ShotParams(
        seed=int(seed),
        detector=det.name,
        distance_mm=distance,
        wavelength_A=wavelength,
        beam_center_px=(f0, s0),
        beamstop=beamstop,
        crystal_form=form if n_lat else None,
        U=tuple(tuple(map(tuple, u.tolist())) for u in Us) if n_lat else (),
        lattice_scale=tuple(scales) if n_lat else (),
        misorientation_deg=tuple(mis),
        d_B=_u(rng, cfg.d_B),
        mosaic_deg=_logu(rng, cfg.log_mosaic_deg),
        domain_size_A=_logu(rng, cfg.log_domain_size_A),
        bandwidth=_logu(rng, cfg.log_bandwidth),
        divergence_mrad=_logu(rng, cfg.log_divergence_mrad),
        spot_sigma_px=_u(rng, cfg.spot_sigma_px),
        spot_profile=cfg.spot_profile,  # not drawn: the other numbers of a seed stay the same
        spot_scale=_logu(rng, cfg.log_spot_scale),
        sf_seed=int(rng.integers(2**31)),
        bg_level=_logu(rng, cfg.log_bg_level),
        air=_u(rng, (0.1, 0.6)),
        water=_u(rng, (0.3, 1.5)),
        plastic=_u(rng, (0.0, 0.4)),
        ice=_logu(rng, cfg.log_ice) if rng.uniform() < cfg.p_ice else 0.0,
        ice_width_invA=_logu(rng, (0.001, 0.004)),
        hot_pixels=int(rng.integers(1, cfg.max_hot_pixels + 1))
        if rng.uniform() < cfg.p_hot_pixels else 0,
        dead_pixels=cfg.dead_pixels,
    )
    if not n_lat:
        p = replace(p, d_B=float("nan"))
    return replace(p, **fixed) if fixed else p
