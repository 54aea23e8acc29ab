"""The model zoo shipped inside the package: one trained model per task, ready to answer.

``index.json`` names each task's model file (fp16 weights, self-describing like every xrp model
file) and its card (``<name>.md``: training data, recipe, how to reproduce it, evaluation).
`xrp predict`, `xrp serve` and `xrp evaluate` use these when the registry has no champion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
INDEX = ZOO_DIR / "index.json"


@dataclass(frozen=True)
class ZooModel:
    task: str
    name: str  # e.g. xrp-zoo-resolution
    version: str  # the zoo release, e.g. 2026.12
    file: Path
    card: Path | None

    @property
    def source(self) -> str:
        return f"zoo:{self.name}/{self.version}"


def zoo_models() -> dict[str, ZooModel]:
    """The shipped models by task (empty when the package ships none)."""
    if not INDEX.is_file():
        return {}
    out = {}
    for task, e in json.loads(INDEX.read_text()).items():
        card = ZOO_DIR / e["card"] if e.get("card") else None
        out[task] = ZooModel(task, e["name"], str(e["version"]), ZOO_DIR / e["file"], card)
    return out


def zoo_model(task: str) -> ZooModel | None:
    return zoo_models().get(task)
