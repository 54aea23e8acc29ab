"""The champion decision: a candidate takes the alias only if it beats the current champion
scored by the same code on the same validation shots."""

from __future__ import annotations

from pathlib import Path

from xray_platform.core.metrics import headline
from xray_platform.core.training import score_model
from xray_platform.tracking.registry import download


def decide(client, task: str, cand: dict, champ_mv, val_rows: dict, force: bool,
            tmp: Path) -> tuple[bool, str, dict | None]:
    """Should the candidate take the alias? (yes/no, why, the champion's metrics on the same
    validation shots)."""
    key, label, _ = headline(task)
    if champ_mv is None:
        return True, "no champion yet", None
    try:
        champ = score_model(download(client, champ_mv, tmp / "champion"), val_rows)
    except ValueError as e:  # e.g. another input grid: not comparable on these shots
        if force:
            return True, f"--force (champion not comparable: {e})", None
        return False, (f"the champion (version {champ_mv.version}) cannot be scored on this "
                       f"search's validation shots ({e}); pass --force to promote anyway"), None
    verdict = cand["val_score"] > champ["val_score"]
    why = (f"{label}: candidate {cand[key]:.4g} vs champion v{champ_mv.version} "
           f"{champ[key]:.4g} on the same {len(val_rows['y'])} validation shots")
    if verdict:
        return True, "better: " + why, champ
    if force:
        return True, "--force; not better: " + why, champ
    return False, "not better: " + why + " (pass --force to promote anyway)", champ
