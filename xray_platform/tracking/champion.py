"""The champion decision: a candidate takes the alias only if it beats the incumbent, scored by
the same code on the same validation shots. The incumbent is the registry's champion, or, when
the registry has none, the zoo model the package ships (it answers until a champion beats it).
An incumbent reading another input grid is scored on the same shots mapped onto its grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xray_platform.core.metrics import headline
from xray_platform.core.models import model_metadata
from xray_platform.core.preprocess import InputOptions, Preprocessing
from xray_platform.core.training import score_model

Rows = dict[str, np.ndarray]


@dataclass(frozen=True)
class Incumbent:
    path: Path  # its model file
    label: str  # e.g. "champion v3" or "zoo xrp-zoo-resolution 2026.12"


def incumbent(client, task: str, tmp: Path) -> Incumbent | None:
    """The model a new candidate must beat: the registry champion, else the zoo model."""
    from xray_platform.tracking.registry import champion, download
    from xray_platform.zoo import zoo_model

    mv = champion(client, task)
    if mv is not None:
        return Incumbent(download(client, mv, tmp / "champion"), f"champion v{mv.version}")
    z = zoo_model(task)
    if z is not None and z.file.is_file():
        return Incumbent(z.file, f"zoo {z.name} {z.version}")
    return None


def decide(task: str, cand: dict, inc: Incumbent | None, val_rows: Rows,
           rows_for: Callable[[Preprocessing], Rows] | None, force: bool,
           val_grid: tuple[int, float] | None = None) -> tuple[bool, str, dict | None]:
    """Should the candidate take the alias? (yes/no, why, the incumbent's metrics on the same
    validation shots). ``rows_for(prep)`` gives those shots on another grid (ValueError when it
    cannot); ``val_grid`` (size, d_min Å) is the grid of ``val_rows`` (default: its size)."""
    key, label, _ = headline(task)
    if inc is None:
        return True, "no champion yet", None
    try:
        prep = Preprocessing.from_dict(model_metadata(inc.path)["preprocessing"])
        rows = val_rows
        own = (prep.grid_size, prep.d_min_A)
        same = own == val_grid if val_grid else prep.grid_size == val_rows["x"].shape[-1]
        raw = prep.options == InputOptions()  # the search's rows are raw (trials: no options)
        same &= raw
        if not same and rows_for is not None:
            rows = rows_for(prep)
        elif not raw:
            raise ValueError(f"its inputs are not raw ({prep.options})")
        champ = score_model(inc.path, rows)
    except ValueError as e:  # e.g. another input grid the shots cannot be put on
        if force:
            return True, f"--force ({inc.label} not comparable: {e})", None
        return False, (f"the {inc.label} cannot be scored on this search's validation shots "
                       f"({e}); pass --force to promote anyway"), None
    verdict = cand["val_score"] > champ["val_score"]
    why = (f"{label}: candidate {cand[key]:.4g} vs {inc.label} {champ[key]:.4g} on the same "
           f"{len(val_rows['y'])} validation shots")
    if verdict:
        return True, "better: " + why, champ
    if force:
        return True, "--force; not better: " + why, champ
    return False, "not better: " + why + " (pass --force to promote anyway)", champ
