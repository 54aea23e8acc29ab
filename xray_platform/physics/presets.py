"""Dataset presets: the shapes of the data sets the seed (resonet) used, plus tiny quick ones.

Every preset records its parameters in the data set it writes (manifest and shard provenance).
A preset maps (dataset seed, shot index) to the parameters of one shot, so any shot of any data
set can be regenerated from its seed alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from xray_platform.physics import crystal as xtal
from xray_platform.physics.geometry import detector
from xray_platform.physics.qgrid import QGrid
from xray_platform.physics.sampling import SimConfig, sample_params, shot_seed
from xray_platform.physics.simulate import ShotParams

#: Target resolutions of the 26 user data sets span this range (Å).
USER_SET_RANGE_A = (1.42, 5.45)
#: Shots per user set cycle through these sizes.
USER_SET_SIZES = (500, 700, 1800)


@dataclass(frozen=True)
class UserSet:
    """One crystal measured at a fixed setup: many shots at one target resolution (d_B, Å)."""

    set_id: int
    n_shots: int
    target_resolution_A: float
    fixed: dict = field(default_factory=dict)  # ShotParams fields shared by the set


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    description: str
    n_shots: int
    sim: SimConfig
    grid: QGrid = QGrid()
    task: str = "resolution"  # what the set is for: resolution | lattice | user-sets
    user_sets: tuple[UserSet, ...] = ()
    shard_size: int = 250

    def __post_init__(self) -> None:
        if self.user_sets and sum(u.n_shots for u in self.user_sets) != self.n_shots:
            raise ValueError(f"preset {self.name}: user set sizes do not add up to n_shots")

    def with_n(self, n: int) -> DatasetPreset:
        """The same distribution with n shots (user sets: n per set, at most their size)."""
        if n < 1:
            raise ValueError(f"number of shots must be >= 1, got {n}")
        if not self.user_sets:
            return replace(self, n_shots=n)
        sets = tuple(replace(u, n_shots=min(n, u.n_shots)) for u in self.user_sets)
        return replace(self, user_sets=sets, n_shots=sum(u.n_shots for u in sets))

    def with_grid(self, grid: QGrid) -> DatasetPreset:
        """The same shots, rendered on another model-input grid."""
        return replace(self, grid=grid)

    def with_detector(self, name: str) -> DatasetPreset:
        """The same distribution on one detector preset only."""
        detector(name)  # raises on unknown names
        sets = tuple(replace(u, fixed={**u.fixed, "detector": name}) for u in self.user_sets)
        return replace(self, sim=self.sim.with_(detectors=(name,)), user_sets=sets)

    def user_set_of(self, index: int) -> UserSet | None:
        start = 0
        for u in self.user_sets:
            if index < start + u.n_shots:
                return u
            start += u.n_shots
        return None

    def params(self, seed: int, index: int) -> ShotParams:
        """Parameters of shot ``index`` of this preset's data set with seed ``seed``."""
        if not 0 <= index < self.n_shots:
            raise IndexError(f"shot {index} outside 0..{self.n_shots - 1}")
        u = self.user_set_of(index)
        return sample_params(shot_seed(seed, index), self.sim, **(u.fixed if u else {}))

    def extra_columns(self, index: int) -> dict:
        """Columns only user-set data sets have (set id and target resolution)."""
        if not self.user_sets:
            return {}
        u = self.user_set_of(index)
        return {"set_id": u.set_id, "target_resolution_A": u.target_resolution_A}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sim"] = self.sim.to_dict()
        return d


def make_user_sets(n_sets: int, sizes: tuple[int, ...], seed: int = 2024) -> tuple[UserSet, ...]:
    """User data sets: each one crystal form, one detector/distance/wavelength and one
    crystal quality (d_B = target, mosaicity, exposure), orientations random per shot."""
    rng = np.random.default_rng(seed)
    targets = np.linspace(*USER_SET_RANGE_A, n_sets)
    forms = sorted(xtal.CRYSTAL_FORMS)
    sets = []
    for i, target in enumerate(targets):
        det = detector(("pilatus6m", "eiger16m")[i % 2])
        wavelength = float(rng.uniform(0.9, 1.3))
        # a setup whose detector edge reaches past the target, as a beamline scientist would
        edge = 0.7 * target
        theta = math.asin(min(wavelength / (2 * edge), 0.99))
        half_width = 0.5 * min(det.n_fast, det.n_slow) * det.pixel_mm
        distance = float(np.clip(half_width / math.tan(2 * theta), 100.0, 400.0))
        fixed = {
            "crystal_form": forms[int(rng.integers(len(forms)))],
            "detector": det.name,
            "distance_mm": distance,
            "wavelength_A": wavelength,
            "d_B": float(target),
            "mosaic_deg": float(math.exp(rng.uniform(math.log(0.05), math.log(0.5)))),
            "spot_scale": float(math.exp(rng.uniform(math.log(300), math.log(1e4)))),
            "bg_level": float(math.exp(rng.uniform(math.log(0.5), math.log(5)))),
            "sf_seed": int(rng.integers(2**31)),
        }
        sets.append(UserSet(i, sizes[i % len(sizes)], float(round(target, 3)), fixed))
    return tuple(sets)


_SINGLE = SimConfig(n_lattices={0: 0.05, 1: 0.95})
_BAXTER = SimConfig(n_lattices={0: 0.02, 1: 0.49, 2: 0.3, 3: 0.13, 4: 0.06},
                    misorientation="gaussian", misorientation_sigma_deg=10.0)
_UNIFORM = SimConfig(n_lattices={0: 0.02, 1: 0.49, 2: 0.3, 3: 0.13, 4: 0.06},
                     misorientation="uniform", misorientation_range_deg=(1.0, 180.0))
_QUICK_GRID = QGrid(size=64)
#: The zoo's stored grid: the hit finder's 256 x 256 out to 1.2 Å. Coarser model inputs are
#: derived from it exactly (max-pooled or cropped, core/preprocess.regrid), so one simulation
#: serves every grid size measured.
ZOO_GRID = QGrid(256, 1.2)
#: Zoo release 2026.12's distributions, as its models were trained on them. Frozen: the current
#: definitions derive from them, never the reverse (tests/unit/test_recipes.py pins their
#: fingerprints). The resolution model predates the XFEL detectors (8e3d639): two detectors.
_ZOO_2026_12_SINGLE = SimConfig(n_lattices={0: 0.05, 1: 0.85, 2: 0.1},
                                detectors=("pilatus6m", "eiger16m"))
_ZOO_2026_12_LATTICE = SimConfig(n_lattices={0: 0.02, 1: 0.49, 2: 0.3, 3: 0.13, 4: 0.06},
                                 misorientation="mixed", misorientation_sigmas_deg=(5.0, 20.0),
                                 detectors=("pilatus6m", "eiger16m", "jungfrau4m", "epix10k2m",
                                            "cspad"))
#: the full distribution's detectors: the synchrotron flat panels and the XFEL multi-module
#: ones (ePix10k 2M and CSPAD with their pinwheel sensor layouts, physics/layouts.py)
ZOO_DETECTORS = _ZOO_2026_12_LATTICE.detectors
#: the current zoo distributions (what a new zoo model trains on: `zoo-resolution` etc.)
_ZOO_SINGLE = _ZOO_2026_12_SINGLE.with_(detectors=ZOO_DETECTORS)
_ZOO_LATTICE = _ZOO_2026_12_LATTICE
#: zoo release -> its (resolution, lattice) distributions: presets NAME@RELEASE
ZOO_RELEASES: dict[str, tuple[SimConfig, SimConfig]] = {
    "2026.12": (_ZOO_2026_12_SINGLE, _ZOO_2026_12_LATTICE),
}
_ZOO_USER_SETS = make_user_sets(26, (40,))


def _zoo_presets(single: SimConfig, lattice: SimConfig,
                 release: str | None = None) -> tuple[DatasetPreset, ...]:
    """The zoo's training and evaluation presets on these distributions; with ``release``,
    that release's frozen copies, named NAME@RELEASE."""
    at = f"@{release}" if release else ""

    def lattice_eval(kind: str, **mis) -> DatasetPreset:
        return DatasetPreset(f"zoo-lattice-{kind}{at}", f"lattice evaluation shots ({kind} "
                             "misorientation), full distribution, 256 x 256 grid", 2_000,
                             lattice.with_(misorientation_sigmas_deg=(), **mis), ZOO_GRID,
                             task="lattice")

    return (
        DatasetPreset(f"zoo-resolution{at}", "the zoo's resolution training set: 30,000 shots "
                      f"of the full distribution ({', '.join(single.detectors)}, 100-400 mm, "
                      "0.7-1.5 Å, spot strength 5-2e5, ice, beamstop, 5 % blanks, 10 % two "
                      "lattices), 256 x 256 grid to 1.2 Å", 30_000, single, ZOO_GRID),
        DatasetPreset(f"zoo-lattice{at}", "the zoo's lattice training set: 30,000 shots, half "
                      "multi-lattice (2-4), misorientation uniform 1-180 deg or Gaussian sigma "
                      f"5 or 20 deg ({', '.join(lattice.detectors)}), 256 x 256 grid to 1.2 Å",
                      30_000, lattice, ZOO_GRID, task="lattice"),
        DatasetPreset(f"zoo-user-sets{at}", "26 user sets of 40 shots on the zoo's 256 x 256 "
                      "grid", 26 * 40, _SINGLE.with_(n_lattices={1: 1.0}), ZOO_GRID,
                      task="user-sets", user_sets=_ZOO_USER_SETS, shard_size=130),
        lattice_eval("uniform", misorientation="uniform"),
        lattice_eval("g1", misorientation="gaussian", misorientation_sigma_deg=1.0),
        lattice_eval("g5", misorientation="gaussian", misorientation_sigma_deg=5.0),
        lattice_eval("g20", misorientation="gaussian", misorientation_sigma_deg=20.0),
    )


#: quick presets: one detector and well-diffracting crystals, so a CPU model learns in minutes
_QUICK = {"detectors": ("pilatus6m",), "log_spot_scale": (300.0, 3e4), "log_bg_level": (0.5, 10.0)}
_FULL_USER_SETS = make_user_sets(26, USER_SET_SIZES)

PRESETS: dict[str, DatasetPreset] = {
    p.name: p
    for p in (
        DatasetPreset("resmos2", "RESMOS2-shaped resolution set: 10,000 single-lattice shots "
                      "(5 % blanks), random detector/distance/wavelength", 10_000, _SINGLE),
        DatasetPreset("master", "Master-shaped resolution set: 45,000 single-lattice shots",
                      45_000, _SINGLE),
        DatasetPreset("master-baxter", "Master_baxter-shaped lattice set: 100,000 shots, half "
                      "multi-lattice, Gaussian misorientation (sigma 10 deg)", 100_000, _BAXTER,
                      task="lattice"),
        DatasetPreset("uniform", "Uniform-shaped lattice set: 50,000 shots, half multi-lattice, "
                      "uniform misorientation 1-180 deg", 50_000, _UNIFORM, task="lattice"),
        DatasetPreset("user-sets", "26 user data sets of 500, 700 or 1,800 shots, each one "
                      "crystal at a target resolution in 1.42-5.45 Å",
                      sum(u.n_shots for u in _FULL_USER_SETS), _SINGLE.with_(
                          n_lattices={1: 1.0}), task="user-sets", user_sets=_FULL_USER_SETS),
        *_zoo_presets(_ZOO_SINGLE, _ZOO_LATTICE),
        DatasetPreset("quick-resolution", "64 resolution shots on a 64 x 64 grid, PILATUS 6M, "
                      "strong crystals (tests, laptops)", 64, _SINGLE.with_(**_QUICK),
                      _QUICK_GRID, shard_size=16),
        DatasetPreset("quick-lattice", "64 lattice shots (half multi-lattice) on a 64 x 64 "
                      "grid, PILATUS 6M, strong crystals", 64, _BAXTER.with_(**_QUICK),
                      _QUICK_GRID, task="lattice", shard_size=16),
        DatasetPreset("quick-user-sets", "4 user sets of 8 shots on a 64 x 64 grid",
                      32, _SINGLE.with_(n_lattices={1: 1.0}), _QUICK_GRID, task="user-sets",
                      user_sets=make_user_sets(4, (8,)), shard_size=8),
        *(p for release, (single, lattice) in ZOO_RELEASES.items()
          for p in _zoo_presets(single, lattice, release)),
    )
}


def preset(name: str) -> DatasetPreset:
    """A preset by name: NAME is the current definition, NAME@RELEASE the copy a zoo release
    froze (what its models were trained and evaluated on)."""
    if name in PRESETS:
        return PRESETS[name]
    base, at, release = name.partition("@")
    if at and base in PRESETS:
        known = [n for n in PRESETS if n.startswith(f"{base}@")]
        raise ValueError(f"preset {base!r} has no version {release!r}; known: "
                         + (", ".join(known) if known else "none (it is not versioned)")
                         + f", or {base!r} for the current definition")
    raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
