"""Unit cells, orientations, reflection enumeration and random structure factors.

Conventions (design.md): lab frame with the beam along +z, k0 = (0, 0, 1/lambda) in 1/Å;
q = A @ (h, k, l) with A = U @ B, where B holds the reciprocal basis vectors a*, b*, c* as columns
in the standard PDB orientation (a along x, b in the xy plane, so B is lower-triangular) and U is a
proper rotation. d = 1/|q|; a reflection is near diffraction when |k0 + q| is close to 1/lambda.

Pure numpy/torch: no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CRYSTAL_FORMS",
    "CrystalForm",
    "UnitCell",
    "axis_angle_matrix",
    "debye_waller",
    "misorientation_deg",
    "random_axis",
    "random_rotation",
    "reflections_near_ewald",
    "sample_misorientation",
    "wilson_intensities",
]


# --------------------------------------------------------------------------------------------
# Unit cells and crystal forms
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitCell:
    """Unit cell: edges a, b, c in Å and angles alpha, beta, gamma in degrees."""

    a: float
    b: float
    c: float
    alpha: float
    beta: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"unit cell edge {name}={v!r} must be a positive finite length")
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 < v < 180):
                raise ValueError(f"unit cell angle {name}={v!r} must lie in (0, 180) degrees")
        if self._volume_factor_sq() <= 1e-12:
            raise ValueError(
                f"angles alpha={self.alpha}, beta={self.beta}, gamma={self.gamma} "
                "do not form a cell (zero or imaginary volume)"
            )

    def _volume_factor_sq(self) -> float:
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        return 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg

    @property
    def edges(self) -> tuple[float, float, float]:
        """(a, b, c) in Å."""
        return self.a, self.b, self.c

    @property
    def parameters(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c) in Å and (alpha, beta, gamma) in degrees."""
        return self.a, self.b, self.c, self.alpha, self.beta, self.gamma

    @property
    def volume(self) -> float:
        """V = abc sqrt(1 - cos^2 a - cos^2 b - cos^2 g + 2 cos a cos b cos g), in Å^3."""
        return self.a * self.b * self.c * math.sqrt(self._volume_factor_sq())

    def orthogonalization(self) -> np.ndarray:
        """Real-space basis (columns a, b, c) in the PDB orientation: a || x, b in the xy plane."""
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        sg = math.sin(math.radians(self.gamma))
        cz = self.volume / (self.a * self.b * sg)
        return np.array(
            [
                [self.a, self.b * cg, self.c * cb],
                [0.0, self.b * sg, self.c * (ca - cb * cg) / sg],
                [0.0, 0.0, cz],
            ],
            dtype=np.float64,
        )

    def B(self) -> np.ndarray:
        """Reciprocal basis as columns (a*, b*, c*) in 1/Å: B = (M^-1)^T for M = [a b c].

        a* . a = 1, a* . b = 0, ...; lower-triangular since b*, c* are normal to a (|| x) and c*
        is normal to the xy plane of a and b.
        """
        return np.ascontiguousarray(np.linalg.inv(self.orthogonalization()).T)


@dataclass(frozen=True)
class CrystalForm:
    """A named protein crystal form: cell and space group (Hermann-Mauguin, no spaces)."""

    name: str
    cell: UnitCell
    space_group: str


def _form(name: str, space_group: str, *cell: float) -> CrystalForm:
    return CrystalForm(name=name, cell=UnitCell(*cell), space_group=space_group)


# Space groups are written as in the nanoBragg reference JSONs: Hermann-Mauguin symbol with the
# spaces removed (monoclinic in full, "P1211"; rhombohedral on hexagonal axes, "R3").
_FORMS = [
    # --- the seven forms of data/nanobragg-ref (names and cells exactly as in ref_000..ref_006)
    _form("lysozyme", "P43212", 79.1, 79.1, 37.9, 90, 90, 90),  # hen egg-white, PDB 6LYZ
    _form("thaumatin", "P41212", 57.8, 57.8, 150.2, 90, 90, 90),  # PDB 1RQW
    _form("thermolysin", "P6122", 92.8, 92.8, 130.4, 90, 90, 120),  # PDB 8TLN
    _form("trypsin", "P212121", 54.9, 58.5, 67.5, 90, 90, 90),  # bovine, PDB 5PTP
    _form("myoglobin", "P1211", 64.1, 30.8, 34.7, 90, 105.8, 90),  # sperm whale, PDB 1A6M
    _form("proteinase_K", "P43212", 67.9, 67.9, 102.1, 90, 90, 90),  # PDB 2ID8
    _form("insulin_cubic", "I213", 77.9, 77.9, 77.9, 90, 90, 90),  # porcine cubic, PDB 9INS
    # --- further common forms, literature cells (rounded)
    _form("glucose_isomerase", "I222", 93.9, 99.7, 102.9, 90, 90, 90),  # S. rubiginosus, 1XIB
    _form("photoactive_yellow_protein", "P63", 66.9, 66.9, 40.8, 90, 90, 120),  # PDB 2PHY
    _form("ribonuclease_A", "P1211", 30.2, 38.4, 53.3, 90, 105.8, 90),  # bovine, PDB 7RSA
    _form("concanavalin_A", "I222", 89.9, 87.2, 63.1, 90, 90, 90),  # jack bean, PDB 3CNA
    _form("insulin_hexagonal", "R3", 82.5, 82.5, 34.0, 90, 90, 120),  # 2Zn porcine, PDB 4INS
    _form("lysozyme_triclinic", "P1", 27.3, 31.9, 34.2, 88.3, 108.7, 111.9),  # PDB 2LZT
    _form("ferritin_cubic", "F432", 184.0, 184.0, 184.0, 90, 90, 90),  # horse apoferritin, 1IER
    _form("hemoglobin", "P1211", 63.2, 83.6, 53.8, 90, 99.3, 90),  # human deoxy, PDB 2HHB
    _form("ubiquitin", "P212121", 50.8, 42.8, 29.0, 90, 90, 90),  # human, PDB 1UBQ
    _form("carbonic_anhydrase_II", "P1211", 42.7, 41.7, 73.0, 90, 104.6, 90),  # human, 2CBA
    _form("transthyretin", "P21212", 43.2, 85.9, 64.4, 90, 90, 90),  # human, PDB 1F41
]

CRYSTAL_FORMS: dict[str, CrystalForm] = {f.name: f for f in _FORMS}


# --------------------------------------------------------------------------------------------
# Orientations
# --------------------------------------------------------------------------------------------


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform (Haar) random rotation: Shoemake's uniform unit quaternion (Graphics Gems III).

    q = (sqrt(1-u1) sin 2pi u2, sqrt(1-u1) cos 2pi u2, sqrt(u1) sin 2pi u3, sqrt(u1) cos 2pi u3).
    """
    u1, u2, u3 = rng.random(3)
    s1, s2 = math.sqrt(1.0 - u1), math.sqrt(u1)
    x, y = s1 * math.sin(2 * math.pi * u2), s1 * math.cos(2 * math.pi * u2)
    z, w = s2 * math.sin(2 * math.pi * u3), s2 * math.cos(2 * math.pi * u3)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        dtype=np.float64,
    )


def axis_angle_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by angle_deg about axis (Rodrigues).

    R = I + sin(t) K + (1 - cos(t)) K^2, K the cross-product matrix of the unit axis.
    """
    n = np.asarray(axis, dtype=np.float64).reshape(-1)
    if n.shape != (3,):
        raise ValueError(f"axis must have 3 components, got shape {np.shape(axis)}")
    norm = float(np.linalg.norm(n))
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"axis={axis!r} must be a finite non-zero vector")
    if not math.isfinite(angle_deg):
        raise ValueError(f"angle_deg={angle_deg!r} must be finite")
    n = n / norm
    k = np.array([[0.0, -n[2], n[1]], [n[2], 0.0, -n[0]], [-n[1], n[0], 0.0]])
    t = math.radians(angle_deg)
    return np.eye(3) + math.sin(t) * k + (1.0 - math.cos(t)) * (k @ k)


def random_axis(rng: np.random.Generator) -> np.ndarray:
    """Unit vector uniform on the sphere (normalised isotropic Gaussian)."""
    while True:
        v = rng.standard_normal(3)
        n = float(np.linalg.norm(v))
        if n > 1e-12:
            return v / n


def misorientation_deg(U1: np.ndarray, U2: np.ndarray) -> float:
    """Rotation angle of U2 @ U1.T in degrees, in [0, 180] (no symmetry reduction).

    Uses atan2(|vee(R - R^T)| / 2, (tr R - 1) / 2), accurate near 0 and 180 degrees.
    """
    u1 = np.asarray(U1, dtype=np.float64)
    u2 = np.asarray(U2, dtype=np.float64)
    if u1.shape != (3, 3) or u2.shape != (3, 3):
        raise ValueError(f"U1, U2 must be 3x3, got {u1.shape} and {u2.shape}")
    r = u2 @ u1.T
    cos_t = 0.5 * (np.trace(r) - 1.0)
    sin_t = 0.5 * math.sqrt(
        (r[2, 1] - r[1, 2]) ** 2 + (r[0, 2] - r[2, 0]) ** 2 + (r[1, 0] - r[0, 1]) ** 2
    )
    return math.degrees(math.atan2(sin_t, cos_t))


_GAUSSIAN_NAMES = ("gaussian", "normal")


def sample_misorientation(
    rng: np.random.Generator,
    distribution: str,
    sigma_deg: float = 5.0,
    low_deg: float = 1.0,
    high_deg: float = 180.0,
) -> tuple[np.ndarray, float]:
    """Draw a misorientation (axis, angle in degrees) between two lattices.

    "gaussian" (alias "normal"): angle = |N(0, sigma_deg)| about a uniform random axis; an angle
    above 180 (only for very large sigma) is returned as 360 - angle about -axis, the same rotation.
    "uniform": angle ~ U(low_deg, high_deg), 0 <= low_deg <= high_deg <= 180.
    Apply as U2 = axis_angle_matrix(axis, angle) @ U1, so misorientation_deg(U1, U2) == angle.
    """
    if not isinstance(distribution, str):
        raise ValueError(f"distribution={distribution!r} must be 'gaussian' or 'uniform'")
    dist = distribution.lower()
    if dist in _GAUSSIAN_NAMES:
        if not (math.isfinite(sigma_deg) and sigma_deg >= 0):
            raise ValueError(f"sigma_deg={sigma_deg!r} must be finite and >= 0")
        axis = random_axis(rng)
        angle = abs(float(rng.normal(0.0, sigma_deg))) % 360.0
        if angle > 180.0:
            angle, axis = 360.0 - angle, -axis
        return axis, angle
    if dist == "uniform":
        for name, v in (("low_deg", low_deg), ("high_deg", high_deg)):
            if not (math.isfinite(v) and 0.0 <= v <= 180.0):
                raise ValueError(f"{name}={v!r} must lie in [0, 180] degrees")
        if low_deg > high_deg:
            raise ValueError(f"low_deg={low_deg!r} must not exceed high_deg={high_deg!r}")
        axis = random_axis(rng)
        return axis, float(rng.uniform(low_deg, high_deg))
    raise ValueError(
        f"unknown misorientation distribution {distribution!r}; use 'gaussian' or 'uniform'"
    )


# --------------------------------------------------------------------------------------------
# Reflections near the Ewald sphere
# --------------------------------------------------------------------------------------------


def _lens_max(n: np.ndarray, r1: float, c2: np.ndarray, r2: float) -> float:
    """max n.p over the lens |p| <= r1 and |p - c2| <= r2 (n a unit vector, balls intersecting).

    The maximum of a linear function over an intersection of two balls is at the maximiser of one
    ball if that lies in the other, otherwise on the intersection circle.
    """
    p = r1 * n
    if np.linalg.norm(p - c2) <= r2:
        return float(n @ p)
    p = c2 + r2 * n
    if np.linalg.norm(p) <= r1:
        return float(n @ p)
    d = float(np.linalg.norm(c2))
    u = c2 / d
    t = (d * d + r1 * r1 - r2 * r2) / (2.0 * d)  # circle plane: p.u = t
    rc = math.sqrt(max(r1 * r1 - t * t, 0.0))
    nu = float(n @ u)
    return t * nu + rc * math.sqrt(max(1.0 - nu * nu, 0.0))


def reflections_near_ewald(
    A: torch.Tensor,
    wavelength_A: float,
    d_min_A: float,
    max_excitation_invA: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All hkl != 0 with |q| <= 1/d_min and | |k0 + q| - 1/lambda | <= max_excitation.

    q = A @ hkl, k0 = (0, 0, 1/lambda). Returns (hkl int64 (n, 3), q (n, 3) in A's dtype/device,
    excitation (n,) = |k0 + q| - 1/lambda), in an unspecified but deterministic order.

    Exact: candidates come from a slightly padded region (a superset) and the final test is the
    plain filter above, computed in A's dtype. Vectorised: two indices run over a grid bounded by
    the lens |q| <= 1/d_min, |q + k0| <= 1/lambda + max_exc; for each grid point (v = the grid part
    of q, c = the third reciprocal axis) the third index t solves the quadratics
    |v + t c|^2 <= 1/d_min^2 and (1/lambda - e)^2 <= |v + k0 + t c|^2 <= (1/lambda + e)^2,
    which gives at most two integer intervals. The solved index is the one with the widest range.
    """
    if not isinstance(A, torch.Tensor) or A.shape != (3, 3) or not A.is_floating_point():
        raise ValueError(f"A must be a floating (3, 3) torch.Tensor, got {A!r}")
    for name, v in (("wavelength_A", wavelength_A), ("d_min_A", d_min_A)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name}={v!r} must be positive and finite")
    if not (math.isfinite(max_excitation_invA) and max_excitation_invA >= 0):
        raise ValueError(f"max_excitation_invA={max_excitation_invA!r} must be finite and >= 0")

    dev, dtype = A.device, A.dtype
    r_ewald = 1.0 / wavelength_A
    q_max = 1.0 / d_min_A
    exc = float(max_excitation_invA)
    # Padding of the candidate region (covers rounding of the final filter, also in float32).
    pad = 1e-5 * (r_ewald + q_max)
    qm, r_out, r_in = q_max + pad, r_ewald + exc + pad, r_ewald - exc - pad

    a_np = A.detach().to("cpu", torch.float64).numpy()
    try:
        a_inv = np.linalg.inv(a_np)  # rows: real-space vectors; hkl = A^-1 q
    except np.linalg.LinAlgError as err:
        raise ValueError("A is singular") from err
    if not np.all(np.isfinite(a_inv)):
        raise ValueError("A is singular or not finite")

    c2 = np.array([0.0, 0.0, -r_ewald])  # centre of the Ewald sphere in q space
    lo = np.empty(3, dtype=np.int64)
    hi = np.empty(3, dtype=np.int64)
    for i in range(3):
        w = a_inv[i]
        wn = float(np.linalg.norm(w))
        n = w / wn
        hi[i] = math.floor(wn * _lens_max(n, qm, c2, r_out) + 1e-9)
        lo[i] = math.ceil(-wn * _lens_max(-n, qm, c2, r_out) - 1e-9)
    s = int(np.argmax(hi - lo))  # solved index: the widest range
    gi_ax, gj_ax = (ax for ax in range(3) if ax != s)

    empty = (
        torch.empty((0, 3), dtype=torch.int64, device=dev),
        torch.empty((0, 3), dtype=dtype, device=dev),
        torch.empty((0,), dtype=dtype, device=dev),
    )
    if np.any(hi < lo):
        return empty

    a64 = A.detach().to(torch.float64)
    ci = torch.arange(int(lo[gi_ax]), int(hi[gi_ax]) + 1, device=dev)
    cj = torch.arange(int(lo[gj_ax]), int(hi[gj_ax]) + 1, device=dev)
    nj = cj.numel()
    vi = ci.to(torch.float64)[:, None] * a64[:, gi_ax]  # (ni, 3)
    vj = cj.to(torch.float64)[:, None] * a64[:, gj_ax]  # (nj, 3)
    c = a64[:, s]
    cc = float(a_np[:, s] @ a_np[:, s])  # scalars from the CPU copy: no device sync
    # Grid quantities by broadcasting, v = vi + vj: v.c, |v|^2, v_z on (ni, nj).
    vc = ((vi @ c)[:, None] + (vj @ c)[None, :]).reshape(-1)
    vv = ((vi * vi).sum(1)[:, None] + (vj * vj).sum(1)[None, :] + 2.0 * (vi @ vj.T)).reshape(-1)
    vz = (vi[:, 2:3] + vj[None, :, 2]).reshape(-1)
    uc = vc + r_ewald * float(a_np[2, s])  # u = v + k0
    uu = vv + (2.0 * r_ewald) * vz + r_ewald * r_ewald

    disc_q = vc * vc - cc * (vv - qm * qm)
    disc_o = uc * uc - cc * (uu - r_out * r_out)
    # Keep grid points whose line meets both the resolution ball and the outer sphere.
    keep = ((disc_q >= 0) & (disc_o >= 0)).nonzero().squeeze(1)
    vc, uc, uu, disc_q, disc_o = (x.index_select(0, keep) for x in (vc, uc, uu, disc_q, disc_o))

    sq, so = disc_q.sqrt(), disc_o.sqrt()
    m_lo, m_hi = (-vc - sq) / cc, (-vc + sq) / cc
    o_lo, o_hi = (-uc - so) / cc, (-uc + so) / cc
    if r_in > 0:
        disc_i = uc * uc - cc * (uu - r_in * r_in)
        inner = disc_i > 0
        si = disc_i.clamp(min=0).sqrt()
        i_lo = torch.where(inner, (-uc - si) / cc, o_hi)
        i_hi = torch.where(inner, (-uc + si) / cc, o_hi + 1.0)
    else:
        i_lo, i_hi = o_hi, o_hi + 1.0
    # Allowed t: [o_lo, i_lo] and [i_hi, o_hi], each intersected with [m_lo, m_hi].
    a1 = torch.maximum(o_lo, m_lo).ceil()
    b1 = torch.minimum(i_lo, m_hi).floor()
    a2 = torch.maximum(torch.maximum(i_hi, m_lo).ceil(), b1 + 1.0)  # no duplicate t
    b2 = torch.minimum(o_hi, m_hi).floor()
    starts = torch.cat([a1, a2]).to(torch.int64)
    counts = (torch.cat([b1, b2]) - torch.cat([a1, a2]) + 1.0).clamp(min=0).to(torch.int64)

    total = int(counts.sum())
    if total == 0:
        return empty
    g = keep.numel()
    seg = torch.repeat_interleave(torch.arange(2 * g, device=dev), counts, output_size=total)
    first = torch.cumsum(counts, 0) - counts
    t = starts.index_select(0, seg) + (torch.arange(total, device=dev) - first.index_select(0, seg))
    flat = keep.index_select(0, seg % g)

    hkl = torch.empty((total, 3), dtype=torch.int64, device=dev)
    hkl[:, gi_ax] = ci.index_select(0, flat // nj)
    hkl[:, gj_ax] = cj.index_select(0, flat % nj)
    hkl[:, s] = t

    # Exact filter in A's dtype: q = A @ hkl, |q| <= 1/d_min, | |k0 + q| - 1/lambda | <= e.
    hf = hkl.to(dtype)
    q = hf[:, 0:1] * A[:, 0] + hf[:, 1:2] * A[:, 1] + hf[:, 2:3] * A[:, 2]
    q_len = torch.linalg.vector_norm(q, dim=1)
    k0 = torch.tensor([0.0, 0.0, r_ewald], dtype=dtype, device=dev)
    excitation = torch.linalg.vector_norm(q + k0, dim=1) - r_ewald
    # q == 0 only for hkl == 0 (A is invertible).
    sel = ((q_len <= q_max) & (excitation.abs() <= exc) & (q_len > 0)).nonzero().squeeze(1)
    return hkl.index_select(0, sel), q.index_select(0, sel), excitation.index_select(0, sel)


# --------------------------------------------------------------------------------------------
# Structure factors and B-factor falloff
# --------------------------------------------------------------------------------------------


def _s64(x: int) -> int:
    """Python int -> the int64 with the same low 64 bits (two's complement)."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_MIX1 = _s64(0xBF58476D1CE4E5B9)
_MIX2 = _s64(0x94D049BB133111EB)


def _srl(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser (Steele, Lea & Flood 2014) on int64 with wrap-around arithmetic."""
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def _hkl_hash(hkl: torch.Tensor, seed: int) -> torch.Tensor:
    """64-bit hash of (h, k, l, seed) per row; the caller canonicalises Friedel mates.

    key = mix(seed + G); then for v in (h, k, l): key = mix((key + G) ^ v), G = 0x9E3779B97F4A7C15,
    all arithmetic modulo 2^64 (int64 two's complement).
    """
    key0 = torch.full(
        hkl.shape[:-1], _s64(int(seed) + 0x9E3779B97F4A7C15), dtype=torch.int64, device=hkl.device
    )
    key = _mix64(key0)
    for col in range(3):
        key = _mix64((key + _GOLDEN) ^ hkl[..., col])
    return key


def wilson_intensities(hkl: torch.Tensor, seed: int) -> torch.Tensor:
    """Deterministic random |F|^2 with acentric Wilson statistics: p(I) = exp(-I), mean 1.

    I = -log(1 - u), u = top 53 bits of a splitmix64-style hash of (h, k, l, seed) / 2^53, with
    (h, k, l) replaced by its Friedel representative (first non-zero index positive), so
    I(hkl) == I(-h-k-l) and the value of a reflection depends on nothing but hkl and seed.
    Accepts (..., 3) integer tensors; float32 output on hkl's device.
    """
    if not isinstance(hkl, torch.Tensor) or hkl.shape[-1:] != (3,):
        raise ValueError(f"hkl must be a (..., 3) integer tensor, got {hkl!r}")
    if hkl.is_floating_point() or hkl.is_complex() or hkl.dtype == torch.bool:
        raise ValueError(f"hkl must have an integer dtype, got {hkl.dtype}")
    hkl = hkl.to(torch.int64)
    sign = hkl[..., 0].sign()
    sign = torch.where(sign == 0, hkl[..., 1].sign(), sign)
    sign = torch.where(sign == 0, hkl[..., 2].sign(), sign)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    key = _hkl_hash(hkl * sign[..., None], int(seed))
    u = _srl(key, 11).to(torch.float64) * (2.0**-53)  # [0, 1)
    return (-torch.log1p(-u)).to(torch.float32)


def debye_waller(d_A: torch.Tensor, b_factor: float) -> torch.Tensor:
    """Intensity falloff exp(-2 B s^2), s = sin(theta)/lambda = 1/(2d): exp(-B / (2 d^2))."""
    d = torch.as_tensor(d_A)
    if not d.is_floating_point():
        d = d.to(torch.get_default_dtype())
    return torch.exp(-b_factor / (2.0 * d * d))
