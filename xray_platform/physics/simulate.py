"""Render still diffraction shots: Bragg spots, backgrounds, noise, detector artefacts, labels.

Two renderings of the same :class:`ShotParams` (a seed fully determines one):

- :func:`render_input`: the fast training path. Produces the model input on the reciprocal-space
  grid of :mod:`qgrid` directly: spots are drawn pixel by pixel inside small boxes and Poisson
  sampled; the smooth background of each grid cell is drawn straight from the distribution of the
  maximum of the k Poisson pixels the cell covers (inverse CDF), never rendering the full frame.
- :func:`render_frame`: the full detector frame (int32, gaps -1), for detector files, ``xrp show``
  and comparisons with nanoBragg; :func:`qgrid.frame_to_grid` of it is statistically the fast path.

Physics (per reflection hkl of lattice i, q = A_i (h, k, l), d = 1/|q|):
  excitation error  eps = |k0 + q| - 1/lambda                 (distance to the Ewald sphere)
  rocking width     sigma_eps^2 = (eta |q|)^2 + (div |q|)^2 + (bw lambda |q|^2 / 2)^2 + (0.5/L)^2
                    (mosaic FWHM eta, divergence div, bandwidth bw = dlambda/lambda, domain size
                    L; FWHM -> sigma by /2.355; the bandwidth term is d eps/dk = -2 sin^2 theta)
  partiality        exp(-eps^2 / (2 sigma_eps^2)); Lorentz factor sigma_ref / sigma_eps (the
                    integrated rocking curve of a still, normalised at |q| = 0.25 1/Å)
  intensity         photons = scale * lattice_scale_i * |F|^2 * exp(-2 B s^2) * P * L * partiality
                    with Wilson acentric |F|^2 (mean 1), B = 4 d_B^2 + 12, s = 1/(2d),
                    P = (1 + cos^2 2t - K cos 2phi sin^2 2t) / 2 (Kahn polarisation, K = 0.99)
  spot              centred where the ray along k1 = k0 + q meets the detector; 2D Gaussian
                    profile integrated over pixels (erf) of sigma spot_sigma_px ("round"), or
                    ("mosaic", :func:`spot_widths`) smeared along the azimuth by the mosaic
                    spread and radially by bandwidth and divergence, as real stills show.
Background (photons per pixel): level * profile(1/d) * P * (p / 0.172 mm)^2 * (200 mm / D)^2 *
cos^3 2t (pixel solid angle), profile = air + water ring + plastic/loop + hexagonal ice rings.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch

from xray_platform.physics import crystal as xtal
from xray_platform.physics.geometry import Beamstop, Geometry, detector
from xray_platform.physics.labels import (
    SPOT_BOX_PX,
    b_factor,
    lattice_labels,
    resolution_labels,
)
from xray_platform.physics.qgrid import MASKED, QGrid, grid_on_detector

#: Hexagonal ice (Ih) powder lines: d (Å) and relative intensity.
ICE_RINGS_A = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.948, 1.918, 1.883, 1.721)
ICE_RING_WEIGHTS = (1.0, 0.6, 0.9, 0.25, 0.35, 0.3, 0.05, 0.2, 0.12, 0.05)
#: Reference pixel and distance at which ``bg_level`` is the background in photons per pixel.
BG_REF_PIXEL_MM = 0.172
BG_REF_DISTANCE_MM = 200.0
#: Polarisation fraction of the (horizontally polarised) beam, as in nanoBragg's default.
POLARISATION_K = 0.99
#: Reflections expected to give fewer photons than this are not rendered (noise-free truth
#: still lists them for the labels).
MIN_RENDER_PHOTONS = 0.05
#: Rocking curves are followed out to this many sigma when enumerating reflections.
EXCITATION_SIGMAS = 4.0
#: Above this mean, max-of-Poisson draws use the Cornish-Fisher quantile (tested against
#: brute force in tests/test_physics.py).
NORMAL_APPROX_MU = 12.0
#: Spot pixels expected to get fewer spot photons than this are left to the background.
MIN_PIXEL_PHOTONS = 0.05
FWHM_TO_SIGMA = 1.0 / 2.3548200450309493
#: spot profiles (ShotParams.spot_profile): "round", an isotropic Gaussian of spot_sigma_px; or
#: "mosaic", that Gaussian smeared by the mosaic spread, bandwidth and divergence (spot_widths)
SPOT_PROFILES = ("round", "mosaic")
#: a smeared spot's sigma is capped here (px): it bounds the render box (FWHM 19 px, longer than
#: the streaks of the real thaumatin still, ~10-15 px)
MAX_SPOT_SIGMA_PX = 8.0
#: spot pixels per rendering chunk of smeared spots (bounds the memory of one pass)
SMEAR_CHUNK_PX = 1 << 22


@dataclass(frozen=True)
class ShotParams:
    """Everything that defines one shot (sampled from a seed by :func:`sample_params`)."""

    seed: int
    detector: str
    distance_mm: float
    wavelength_A: float
    beam_center_px: tuple[float, float]
    beamstop: Beamstop | None
    # crystal (crystal_form None: blank shot, no lattice)
    crystal_form: str | None = None
    U: tuple[tuple[tuple[float, ...], ...], ...] = ()  # one 3x3 rotation per lattice
    lattice_scale: tuple[float, ...] = ()
    misorientation_deg: tuple[float, ...] = ()  # lattice i (i >= 1) vs lattice 0
    d_B: float = float("nan")
    mosaic_deg: float = 0.2  # FWHM
    domain_size_A: float = 2000.0
    bandwidth: float = 1e-3  # dlambda/lambda FWHM
    divergence_mrad: float = 0.05  # FWHM
    spot_sigma_px: float = 0.8
    spot_profile: str = "round"  # one of SPOT_PROFILES
    spot_scale: float = 1000.0  # photons of a full reflection with |F|^2 = 1, no falloff
    sf_seed: int = 0
    # background
    bg_level: float = 2.0  # photons / pixel at 200 mm for 0.172 mm pixels
    air: float = 0.3
    water: float = 1.0
    plastic: float = 0.2
    ice: float = 0.0  # ice ring strength (0: no ice)
    ice_width_invA: float = 0.002
    # detector response
    hot_pixels: int = 0
    dead_pixels: int = 0
    gain: float = 1.0  # ADU per photon (photon counters: 1)
    read_noise: float = 0.0  # ADU rms (photon counters: 0)

    def __post_init__(self) -> None:
        if self.spot_profile not in SPOT_PROFILES:
            raise ValueError(f"unknown spot profile {self.spot_profile!r} (known: "
                             f"{', '.join(SPOT_PROFILES)})")

    @property
    def geometry(self) -> Geometry:
        return Geometry(detector(self.detector), self.distance_mm, self.wavelength_A,
                        self.beam_center_px, self.beamstop)

    @property
    def n_lattices(self) -> int:
        return len(self.U)

    @property
    def B_factor(self) -> float:
        return b_factor(self.d_B) if self.n_lattices else float("nan")

    def A_matrices(self) -> list[np.ndarray]:
        if not self.n_lattices:
            return []
        B = xtal.CRYSTAL_FORMS[self.crystal_form].cell.B()
        return [np.asarray(u) @ B for u in self.U]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["beamstop"] = asdict(self.beamstop) if self.beamstop else None
        return d


# ----------------------------------------------------------------------------------------
# Reflections: positions, intensities and the per-reflection truth used by the labels
# ----------------------------------------------------------------------------------------
@dataclass
class Reflections:
    hkl: torch.Tensor  # (n, 3) int64
    lattice: torch.Tensor  # (n,) int64
    d_A: torch.Tensor  # (n,)
    f: torch.Tensor  # spot centre, fast (px)
    s: torch.Tensor  # spot centre, slow (px)
    excitation: torch.Tensor  # 1/Å
    photons: torch.Tensor  # expected total spot photons
    S: torch.Tensor  # expected spot photons in the SPOT_BOX_PX box at the centre pixel
    Bg: torch.Tensor  # expected background photons in that box
    on_active: torch.Tensor  # bool: centre on an active pixel

    def __len__(self) -> int:
        return int(self.hkl.shape[0])

    def numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.__dict__.items()}


def rocking_sigma(p: ShotParams, q_len: torch.Tensor) -> torch.Tensor:
    """Width (1/Å, sigma) of a reflection's rocking curve in excitation error (module doc)."""
    eta = math.radians(p.mosaic_deg) * FWHM_TO_SIGMA
    div = p.divergence_mrad * 1e-3 * FWHM_TO_SIGMA
    bw = p.bandwidth * FWHM_TO_SIGMA * p.wavelength_A / 2.0
    dom = 0.5 / p.domain_size_A
    return torch.sqrt((eta * q_len) ** 2 + (div * q_len) ** 2 + (bw * q_len**2) ** 2 + dom**2)


def polarisation(cos2t: torch.Tensor, cos2phi: torch.Tensor) -> torch.Tensor:
    """Kahn polarisation factor for a beam polarised along +x (fast) with fraction K."""
    sin2 = 1.0 - cos2t * cos2t
    return 0.5 * (1.0 + cos2t * cos2t - POLARISATION_K * cos2phi * sin2)


def background_profile(p: ShotParams, inv_d: torch.Tensor) -> torch.Tensor:
    """Dimensionless background scattering vs 1/d (1/Å): air + water + plastic + ice."""
    s = inv_d
    air = p.air / (1.0 + (s / 0.1) ** 2)
    water = p.water * (
        torch.exp(-0.5 * ((s - 0.312) / 0.042) ** 2)
        + 0.45 * torch.exp(-0.5 * ((s - 0.52) / 0.09) ** 2)
        + 0.12 * torch.exp(-0.5 * (s / 0.25) ** 2)
    )
    plastic = p.plastic * torch.exp(-0.5 * ((s - 0.215) / 0.03) ** 2)
    out = 0.05 + air + water + plastic
    if p.ice > 0:
        for d_ice, w in zip(ICE_RINGS_A, ICE_RING_WEIGHTS, strict=True):
            out = out + p.ice * w * torch.exp(-0.5 * ((s - 1.0 / d_ice) / p.ice_width_invA) ** 2)
    return out


#: The background profile is tabulated on 0 <= 1/d <= PROFILE_MAX_INV_D (1/Å; 2/lambda at
#: 0.7 Å is 2.86) in PROFILE_STEPS steps, well below the narrowest ice ring (sigma 0.001 1/Å).
PROFILE_MAX_INV_D = 3.0
PROFILE_STEPS = 8192


@lru_cache(maxsize=64)
def _profile_table(p: ShotParams, device: str) -> torch.Tensor:
    s = torch.linspace(0.0, PROFILE_MAX_INV_D, PROFILE_STEPS, dtype=torch.float64)
    return background_profile(p, s).to(device=device, dtype=torch.float32)


def _profile_lookup(p: ShotParams, inv_d: torch.Tensor) -> torch.Tensor:
    """:func:`background_profile` by linear interpolation in a cached table (it depends on 1/d
    only)."""
    key = replace(p, seed=0, U=(), lattice_scale=(), misorientation_deg=(), sf_seed=0)
    table = _profile_table(key, str(inv_d.device)).to(inv_d.dtype)
    pos = inv_d * ((PROFILE_STEPS - 1) / PROFILE_MAX_INV_D)
    i0 = pos.long().clamp(0, PROFILE_STEPS - 2)
    w = pos - i0
    return table[i0] * (1 - w) + table[i0 + 1] * w


def background_photons(p: ShotParams, geom: Geometry, inv_d: torch.Tensor,
                       cos2phi: torch.Tensor) -> torch.Tensor:
    """Expected background photons per pixel at resolution 1/d with cos(2 phi) of its azimuth
    (phi from the +fast axis, the polarisation direction)."""
    sin_t = inv_d * (geom.wavelength_A / 2.0)
    cos2t = 1.0 - 2.0 * sin_t * sin_t
    scale = p.bg_level * (geom.pixel_mm / BG_REF_PIXEL_MM) ** 2
    scale *= (BG_REF_DISTANCE_MM / geom.distance_mm) ** 2
    return scale * _profile_lookup(p, inv_d) * polarisation(cos2t, cos2phi) * cos2t**3


def background_per_pixel(p: ShotParams, geom: Geometry, x_mm: torch.Tensor,
                         y_mm: torch.Tensor) -> torch.Tensor:
    """Expected background photons per pixel at detector-plane positions (mm from the beam)."""
    rho2 = x_mm * x_mm + y_mm * y_mm
    cos2t = geom.distance_mm / torch.sqrt(rho2 + geom.distance_mm**2)
    inv_d = torch.sqrt(torch.clamp(2.0 * (1.0 - cos2t), min=0.0)) / geom.wavelength_A
    cos2phi = torch.where(rho2 > 0, (x_mm * x_mm - y_mm * y_mm) / torch.clamp(rho2, min=1e-12),
                          torch.ones_like(rho2))
    return background_photons(p, geom, inv_d, cos2phi)


def _box_fraction(centre: torch.Tensor, lo: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """Fraction of a 1D Gaussian (mean centre, sigma px) on pixels lo .. lo+n-1: (m, n)."""
    edges = lo[:, None] + torch.arange(n + 1, device=centre.device, dtype=centre.dtype) - 0.5
    cdf = 0.5 * (1.0 + torch.erf((edges - centre[:, None]) / (sigma * math.sqrt(2.0))))
    return cdf[:, 1:] - cdf[:, :-1]


def predict_reflections(p: ShotParams, d_min_A: float | None = None,
                        device: torch.device | str | None = None,
                        sf: torch.Tensor | None = None) -> Reflections:
    """All reflections near the Ewald sphere of every lattice whose spots reach the detector,
    with expected photons and the label truth (S, Bg, on_active).

    d_min_A: resolution cut (default: the detector's corner resolution). sf: optional fixed
    |F|^2 per reflection (for tests); default Wilson random per hkl from ``sf_seed``."""
    geom = p.geometry
    dt = torch.float64
    empty = torch.zeros(0, device=device, dtype=dt)
    if p.n_lattices == 0:
        e = empty
        return Reflections(torch.zeros((0, 3), dtype=torch.long, device=device),
                           torch.zeros(0, dtype=torch.long, device=device), e, e, e, e, e, e, e,
                           torch.zeros(0, dtype=torch.bool, device=device))
    d_min = d_min_A or geom.corner_resolution_A
    inv_lam = 1.0 / p.wavelength_A
    max_exc = EXCITATION_SIGMAS * float(rocking_sigma(p, torch.tensor(1.0 / d_min, dtype=dt)))
    parts = []
    for i, A in enumerate(p.A_matrices()):
        At = torch.as_tensor(A, dtype=dt, device=device)
        hkl, q, eps = xtal.reflections_near_ewald(At, p.wavelength_A, d_min, max_exc)
        parts.append((hkl, q, eps, torch.full((len(hkl),), i, dtype=torch.long, device=device)))
    hkl = torch.cat([t[0] for t in parts])
    q = torch.cat([t[1] for t in parts])
    eps = torch.cat([t[2] for t in parts])
    lattice = torch.cat([t[3] for t in parts])

    q_len = torch.linalg.norm(q, dim=1)
    d = 1.0 / q_len
    k1 = q.clone()
    k1[:, 2] += inv_lam
    f, s = geom.project(k1)
    on_plane = torch.isfinite(f)
    nf, ns = geom.detector.n_fast, geom.detector.n_slow
    on_det = on_plane & (f > -0.5) & (f < nf - 0.5) & (s > -0.5) & (s < ns - 0.5)
    keep = on_det
    hkl, q, eps, lattice, q_len, d, k1, f, s = (
        t[keep] for t in (hkl, q, eps, lattice, q_len, d, k1, f, s)
    )

    sig = rocking_sigma(p, q_len)
    sig_ref = rocking_sigma(p, torch.tensor(0.25, dtype=dt, device=device))
    partiality = torch.exp(-0.5 * (eps / sig) ** 2)
    lorentz = sig_ref / sig
    k1n = k1 / torch.linalg.norm(k1, dim=1, keepdim=True)
    cos2t = k1n[:, 2]
    rho2 = k1n[:, 0] ** 2 + k1n[:, 1] ** 2
    cos2phi = torch.where(rho2 > 0, (k1n[:, 0] ** 2 - k1n[:, 1] ** 2) / rho2.clamp(min=1e-30),
                          torch.ones_like(rho2))
    if sf is None:
        sf = xtal.wilson_intensities(hkl, p.sf_seed).to(dt)
    lat_scale = torch.as_tensor(p.lattice_scale, dtype=dt, device=device)[lattice]
    photons = (p.spot_scale * lat_scale * sf * xtal.debye_waller(d, p.B_factor)
               * polarisation(cos2t, cos2phi) * lorentz * partiality)

    # label truth: S and Bg in the SPOT_BOX_PX box centred on the spot's pixel
    half = SPOT_BOX_PX // 2
    if p.spot_profile == "mosaic":
        frac = smeared_profile(p, geom, f, s, torch.round(f) - half, torch.round(s) - half,
                               SPOT_BOX_PX).sum((1, 2))
    else:
        fx = _box_fraction(f, torch.round(f) - half, SPOT_BOX_PX, p.spot_sigma_px).sum(1)
        fy = _box_fraction(s, torch.round(s) - half, SPOT_BOX_PX, p.spot_sigma_px).sum(1)
        frac = fx * fy
    S = photons * frac
    x, y = geom.xy_mm(f, s)
    Bg = SPOT_BOX_PX**2 * background_per_pixel(p, geom, x, y)
    on_active = geom.is_active(f, s)
    return Reflections(hkl, lattice, d, f, s, eps, photons, S, Bg, on_active)


# ----------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------
def shot_labels(p: ShotParams, refl: Reflections) -> dict:
    """The label + geometry record of a shot (definitions in :mod:`labels`)."""
    r = refl.numpy()
    if len(refl):
        res = resolution_labels(r["d_A"], r["S"], r["Bg"], r["on_active"], r["lattice"],
                                p.n_lattices)
    else:
        res = resolution_labels(np.ones(0), np.zeros(0), np.zeros(0))
    geom = p.geometry
    rec = {
        "seed": int(p.seed),
        **lattice_labels(p.n_lattices),
        "hit": bool(res.hit),
        "n_detectable": res.n_detectable,
        "d_vis": res.d_vis,
        "d_B": float(p.d_B) if p.n_lattices else float("nan"),
        "B_factor": p.B_factor,
        "misorientation_deg": json.dumps([round(a, 4) for a in p.misorientation_deg]),
        "max_misorientation_deg": max(p.misorientation_deg) if p.misorientation_deg else 0.0,
        "n_detectable_per_lattice": json.dumps(res.n_detectable_per_lattice),
        "crystal_form": p.crystal_form or "",
        "detector": p.detector,
        "distance_mm": float(p.distance_mm),
        "wavelength_A": float(p.wavelength_A),
        "energy_keV": geom.energy_keV,
        "pixel_mm": geom.pixel_mm,
        "beam_f0_px": float(p.beam_center_px[0]),
        "beam_s0_px": float(p.beam_center_px[1]),
        "corner_resolution_A": geom.corner_resolution_A,
        "edge_resolution_A": geom.edge_resolution_A,
        "mosaic_deg": float(p.mosaic_deg),
        "spot_scale": float(p.spot_scale),
        "bg_level": float(p.bg_level),
        "ice": float(p.ice),
    }
    if res.hit and not math.isfinite(res.d_vis):
        raise AssertionError("a hit must have a finite d_vis")
    return rec


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
def _generator(p: ShotParams, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([p.seed, 7]).generate_state(1)[0]))
    return g


def render_box_px(p: ShotParams) -> int:
    """Side of the box each round spot is rendered in: +-3.5 sigma of its profile."""
    return 2 * math.ceil(3.5 * p.spot_sigma_px) + 1


def spot_widths(p: ShotParams, geom: Geometry, f: torch.Tensor, s: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Radial and tangential sigma (px) of "mosaic" spots at detector positions (f, s).

    A mosaic block turned by delta about the beam moves q by delta q cos(t) along the azimuth;
    turned by epsilon about q's in-plane direction, by epsilon q sin(t), also along the azimuth
    and tangent to the Ewald sphere (the excitation is unchanged to first order). With both of
    sigma eta the spot turns about the beam centre by eta / cos(t), rho eta / cos(t) along the
    azimuth (rho: the spot's distance from the beam), so sigma_t^2 = s0^2 + (rho eta / cos t)^2
    + (D div / cos 2t)^2 with eta, div the mosaic and divergence sigmas (rad). Radially, Bragg's
    law gives d(2t) = 2 tan(t) dlambda/lambda, and d(rho) = D / cos^2(2t) d(2t): sigma_r^2 =
    s0^2 + (D / cos^2 2t)^2 ((2 tan t bw)^2 + div^2), bw the bandwidth sigma. s0 =
    spot_sigma_px (beam and crystal size, point spread); D, rho in px."""
    x, y = geom.xy_mm(f, s)
    px = geom.detector.pixel_mm
    rho = torch.sqrt(x * x + y * y) / px
    dist = geom.distance_mm / px
    two_t = torch.atan2(rho, torch.full_like(rho, dist))
    cos2t = torch.cos(two_t)
    eta = math.radians(p.mosaic_deg) * FWHM_TO_SIGMA
    div = p.divergence_mrad * 1e-3 * FWHM_TO_SIGMA
    bw = p.bandwidth * FWHM_TO_SIGMA
    s0 = p.spot_sigma_px
    radial = dist / cos2t**2 * torch.sqrt((2 * torch.tan(two_t / 2) * bw) ** 2 + div**2)
    tangential = torch.sqrt((rho * eta / torch.cos(two_t / 2)) ** 2 + (dist * div / cos2t) ** 2)
    return (torch.sqrt(s0**2 + radial**2).clamp(max=MAX_SPOT_SIGMA_PX),
            torch.sqrt(s0**2 + tangential**2).clamp(max=MAX_SPOT_SIGMA_PX))


def smeared_profile(p: ShotParams, geom: Geometry, f: torch.Tensor, s: torch.Tensor,
                    f_lo: torch.Tensor, s_lo: torch.Tensor, n: int) -> torch.Tensor:
    """Fraction of each "mosaic" spot (centre f, s) on the pixels of an n x n box from (f_lo,
    s_lo): (m, n, n) (slow, fast). The Gaussian is evaluated at pixel centres with the pixel's
    own variance (1/12 px^2) added, the usual stand-in for integrating over the pixel."""
    sr, st = spot_widths(p, geom, f, s)
    x, y = geom.xy_mm(f, s)
    rho = torch.sqrt(x * x + y * y)
    at_beam = rho == 0  # (q > 0 keeps spots off the beam; any direction would do there)
    ef = torch.where(at_beam, 1.0, x / rho.clamp(min=1e-12))  # the radial direction (fast,
    es = torch.where(at_beam, 0.0, y / rho.clamp(min=1e-12))  # slow)
    vr, vt = sr**2 + 1 / 12, st**2 + 1 / 12
    ar = torch.arange(n, device=f.device, dtype=f.dtype)
    df = (f_lo[:, None] + ar - f[:, None])[:, None, :]  # (m, 1, n)
    ds = (s_lo[:, None] + ar - s[:, None])[:, :, None]  # (m, n, 1)
    u = df * ef[:, None, None] + ds * es[:, None, None]
    v = ds * ef[:, None, None] - df * es[:, None, None]
    w = torch.exp(-0.5 * (u * u / vr[:, None, None] + v * v / vt[:, None, None]))
    return w / (2 * math.pi * torch.sqrt(vr * vt))[:, None, None]


def _render_spot_boxes(p: ShotParams, geom: Geometry, refl: Reflections):
    """Expected spot photons and the background under each spot, on the pixels of the boxes of
    the spots expected to give at least MIN_RENDER_PHOTONS photons.

    Returns (f_idx, s_idx, spot_photons, bg_photons) flattened over boxes; the background is
    taken at the spot centre (it is smooth over a few pixels)."""
    keep = refl.photons >= MIN_RENDER_PHOTONS
    f, s, ph = refl.f[keep], refl.s[keep], refl.photons[keep]
    if p.spot_profile == "mosaic":
        return _render_smeared(p, geom, f, s, ph)
    n = render_box_px(p)
    half = n // 2
    nf, ns = geom.detector.n_fast, geom.detector.n_slow
    f_lo = torch.round(f) - half
    s_lo = torch.round(s) - half
    # float32 boxes, one pass: (spots, n, n) photons, then a single mask for pixels that are on
    # the detector and bright enough; pixel indices are rebuilt only for the survivors
    fx = _box_fraction(f, f_lo, n, p.spot_sigma_px).float()
    fy = _box_fraction(s, s_lo, n, p.spot_sigma_px).float()
    ar = torch.arange(n, device=f.device, dtype=f.dtype)
    fx = torch.where((f_lo[:, None] + ar >= 0) & (f_lo[:, None] + ar < nf), fx, 0.0)
    fy = torch.where((s_lo[:, None] + ar >= 0) & (s_lo[:, None] + ar < ns), fy, 0.0)
    spot = ph.float()[:, None, None] * fy[:, :, None] * fx[:, None, :]
    k, j, i = torch.nonzero(spot >= MIN_PIXEL_PHOTONS, as_tuple=True)
    x, y = geom.xy_mm(f, s)
    bg = background_per_pixel(p, geom, x, y).float()
    return ((f_lo[k] + i).long(), (s_lo[k] + j).long(), spot[k, j, i].to(ph.dtype),
            bg[k].to(ph.dtype))


def _render_smeared(p: ShotParams, geom: Geometry, f: torch.Tensor, s: torch.Tensor,
                    ph: torch.Tensor):
    """_render_spot_boxes for "mosaic" spots: spots grouped by box size (+-3.5 sigma of their
    longer axis), each group in chunks of at most SMEAR_CHUNK_PX pixels."""
    nf, ns = geom.detector.n_fast, geom.detector.n_slow
    half = torch.ceil(3.5 * torch.maximum(*spot_widths(p, geom, f, s))).long()
    out = []
    for h in torch.unique(half).tolist():
        idx = torch.nonzero(half == h).squeeze(1)
        n = 2 * h + 1
        for c in torch.split(idx, max(1, SMEAR_CHUNK_PX // (n * n))):
            fc, sc = f[c], s[c]
            f_lo, s_lo = torch.round(fc) - h, torch.round(sc) - h
            spot = ph[c].float()[:, None, None] * smeared_profile(p, geom, fc, sc, f_lo, s_lo,
                                                                   n).float()
            # as in _render_spot_boxes: off-detector pixels zeroed, indices only for survivors
            ar = torch.arange(n, device=f.device, dtype=f.dtype)
            on_f = (f_lo[:, None] + ar >= 0) & (f_lo[:, None] + ar < nf)
            on_s = (s_lo[:, None] + ar >= 0) & (s_lo[:, None] + ar < ns)
            spot = torch.where(on_s[:, :, None] & on_f[:, None, :], spot, 0.0)
            k, j, i = torch.nonzero(spot >= MIN_PIXEL_PHOTONS, as_tuple=True)
            x, y = geom.xy_mm(fc, sc)
            bg = background_per_pixel(p, geom, x, y).float()
            out.append(((f_lo[k] + i).long(), (s_lo[k] + j).long(), spot[k, j, i].to(ph.dtype),
                        bg[k].to(ph.dtype)))
    if not out:
        empty = torch.zeros(0, dtype=torch.long, device=f.device)
        return empty, empty, ph[:0], ph[:0]
    return tuple(torch.cat([o[i] for o in out]) for i in range(4))


def sample_max_poisson(mu: torch.Tensor, n: torch.Tensor, generator: torch.Generator,
                       ) -> torch.Tensor:
    """One draw of max(X_1..X_n), X_j ~ Poisson(mu) i.i.d., per element, by inverse CDF:
    P(max <= m) = F(m)^n, so max = min{m : F(m) >= u^(1/n)} for u ~ U(0, 1).

    The Poisson CDF is summed term by term for mu <= NORMAL_APPROX_MU (all elements advance
    together, the finished ones are dropped every few terms: cheaper than compacting at every
    term); above, the Cornish-Fisher quantile of the Poisson with its skewness term
    (m = mu + sqrt(mu) z + (z^2 - 1)/6), continuity-corrected. Elements with mu = 0 are 0."""
    shape = mu.shape
    mu = mu.reshape(-1).to(torch.float32)
    out = torch.zeros_like(mu)
    idx = torch.nonzero(mu > 0).squeeze(1)
    m_mu = mu[idx]
    u = torch.rand(m_mu.shape, generator=generator, device=mu.device).clamp(min=1e-30)
    # quantile level of a single Poisson; float32 CDF sums are good to ~1e-7
    m_v = torch.exp(torch.log(u) / n.reshape(-1)[idx].to(torch.float32)).clamp(max=1.0 - 1e-6)
    big = m_mu > NORMAL_APPROX_MU
    if bool(big.any()):
        # Cornish-Fisher quantile (skewness 1/sqrt(mu) term), continuity-corrected
        z = torch.special.ndtri(m_v[big].double()).float()
        b_mu = m_mu[big]
        q = b_mu + torch.sqrt(b_mu) * z + (z * z - 1.0) / 6.0
        out[idx[big]] = torch.floor(q + 0.5).clamp(min=0)
        small = ~big
        idx, m_mu, m_v = idx[small], m_mu[small], m_v[small]
    pmf = torch.exp(-m_mu)
    cdf = pmf.clone()
    cnt = torch.zeros_like(m_mu)
    k = 0
    while m_mu.numel() and k < 400:  # mu <= 12: P(X > 400) ~ 0
        for _ in range(8):
            cnt += (cdf < m_v).float()  # once cdf >= v it stays so: extra terms add nothing
            k += 1
            pmf = pmf * m_mu / k
            cdf = cdf + pmf
        still = cdf < m_v
        if bool(still.all()):
            continue
        done = ~still
        out[idx[done]] = cnt[done]
        idx, m_mu, m_v, pmf, cdf, cnt = (t[still] for t in (idx, m_mu, m_v, pmf, cdf, cnt))
    if idx.numel():
        out[idx] = cnt
    return out.reshape(shape)


def _detector_response(p: ShotParams, counts: torch.Tensor, max_counts: int,
                       g: torch.Generator) -> torch.Tensor:
    """Gain, read noise (integrating detectors) and saturation, on photon counts."""
    if p.gain != 1.0 or p.read_noise > 0:
        noise = torch.randn(counts.shape, generator=g, device=counts.device) * p.read_noise
        counts = torch.round(counts * p.gain + noise).clamp(min=0)
    return counts.clamp(max=max_counts)


def render_input(p: ShotParams, grid: QGrid, device=None,
                 refl: Reflections | None = None) -> torch.Tensor:
    """The model input (grid.size, grid.size) float32, masked cells = -1 (fast path)."""
    geom = p.geometry
    g = _generator(p, device)
    det = geom.detector
    fc, sc, cos2t, reachable = grid.pixels_of_cells(geom, device)
    covered = reachable & grid_on_detector(geom, fc, sc)
    gx, gy = grid.flat_centres(device)
    g2 = gx * gx + gy * gy
    cos2phi = torch.where(g2 > 0, (gx * gx - gy * gy) / g2.clamp(min=1e-20), torch.ones_like(g2))
    mu = background_photons(p, geom, torch.sqrt(g2), cos2phi)
    mu = torch.where(covered, mu, torch.zeros_like(mu))
    if geom.beamstop is not None:
        x, y = geom.xy_mm(fc, sc)
        mu = torch.where(geom.beamstop.shadow(x, y), mu * geom.beamstop.transmission, mu)
    k = grid.pixels_per_cell(geom, cos2t.clamp(min=1e-3))
    # integer number of pixels per cell, >= 1, stochastically rounded to keep the mean
    kf = torch.floor(k)
    k_int = kf + (torch.rand(k.shape, generator=g, device=k.device) < (k - kf)).float()
    img = sample_max_poisson(mu, k_int.clamp(min=1.0), g)  # uncovered cells: mu = 0 -> 0
    img = torch.where(covered, img, torch.full_like(img, MASKED))

    if refl is None:
        refl = predict_reflections(p, d_min_A=max(grid.d_min_A, geom.corner_resolution_A),
                                   device=device)
    if len(refl):
        fi, si, spot, bg = _render_spot_boxes(p, geom, refl)
        lam = spot + bg
        ok = ~det.gap_mask_tensor(fi.device)[si, fi]
        if geom.beamstop is not None:
            x, y = geom.xy_mm(fi.to(spot.dtype), si.to(spot.dtype))
            shadow = geom.beamstop.shadow(x, y)
            lam = torch.where(shadow, lam * geom.beamstop.transmission, lam)
        counts = torch.poisson(lam.float(), generator=g)
        gx, gy = grid.g_of_pixels(geom, fi.float(), si.float())
        row, col = grid.cell_index(gx, gy)
        flat = row * grid.size + col
        ok &= (row >= 0) & covered[flat.clamp(min=0)]  # masked cells stay masked
        flat = flat[ok]
        img.scatter_reduce_(0, flat, counts[ok], reduce="amax", include_self=True)
    cells = torch.nonzero(covered).squeeze(1) if p.hot_pixels else None
    if p.hot_pixels and cells.numel():
        pick = torch.randint(cells.numel(), (p.hot_pixels,), generator=g, device=cells.device)
        img[cells[pick]] = float(min(det.max_counts, 50000))
    img = torch.where(img >= 0, _detector_response(p, img, det.max_counts, g), img)
    return img.view(grid.size, grid.size)


def expected_frame(p: ShotParams, device=None, refl: Reflections | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-free (spots, background) photon images (slow, fast), float32."""
    geom = p.geometry
    s_idx, f_idx = geom.pixel_indices(device)
    x, y = geom.xy_mm(f_idx, s_idx)
    bg = background_per_pixel(p, geom, x, y)
    spots = torch.zeros(geom.detector.shape, dtype=torch.float64, device=device)
    if refl is None:
        refl = predict_reflections(p, device=device)
    if len(refl):
        fi, si, spot, _ = _render_spot_boxes(p, geom, refl)
        spots.index_put_((si, fi), spot, accumulate=True)
    spots = spots.float()
    if geom.beamstop is not None:
        shadow = geom.beamstop_mask(device)
        bg = torch.where(shadow, bg * geom.beamstop.transmission, bg)
        spots = torch.where(shadow, spots * geom.beamstop.transmission, spots)
    return spots, bg


def render_frame(p: ShotParams, device=None, refl: Reflections | None = None) -> torch.Tensor:
    """The full detector frame (slow, fast) int32 as a detector writes it: Poisson photons,
    gain/read noise, saturation, hot and dead pixels, gap pixels = -1."""
    geom = p.geometry
    det = geom.detector
    g = _generator(p, device)
    spots, bg = expected_frame(p, device, refl)
    counts = torch.poisson(spots + bg, generator=g)
    counts = _detector_response(p, counts, det.max_counts, g)
    n_pix = det.n_fast * det.n_slow
    if p.hot_pixels:
        idx = torch.randint(n_pix, (p.hot_pixels,), generator=g, device=counts.device)
        counts.view(-1)[idx] = float(min(det.max_counts, 50000))
    if p.dead_pixels:
        idx = torch.randint(n_pix, (p.dead_pixels,), generator=g, device=counts.device)
        counts.view(-1)[idx] = 0.0
    gaps = det.gap_mask_tensor(counts.device)
    counts = torch.where(gaps, torch.full_like(counts, -1.0), counts)
    return counts.to(torch.int32)


@dataclass
class SimulatedShot:
    params: ShotParams
    inputs: np.ndarray | None  # model input (grid), float32, masked = -1
    record: dict  # labels + geometry
    frame: np.ndarray | None = None  # full detector frame, int32, gaps = -1
    reflections: Reflections | None = field(default=None, repr=False)


def simulate(p: ShotParams, grid: QGrid | None = None, full_frame: bool = False,
             device=None) -> SimulatedShot:
    """Render one shot: model input on ``grid`` (fast path) and/or the full frame, plus labels."""
    geom = p.geometry
    refl = predict_reflections(p, d_min_A=geom.corner_resolution_A, device=device)
    inputs = None
    if grid is not None:
        # spots finer than the grid's edge cannot land on it: skip them for the input
        sel = refl.d_A >= grid.d_min_A * 0.999
        sub = Reflections(**{k: v[sel] for k, v in refl.__dict__.items()})
        inputs = render_input(p, grid, device, refl=sub).cpu().numpy()
    frame = render_frame(p, device, refl).cpu().numpy() if full_frame else None
    return SimulatedShot(p, inputs, shot_labels(p, refl), frame, refl)
