"""JSON-lines caches written a row at a time (a run stopped half-way goes on where it
stopped): reading them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path`` (none if it does not exist), leaving out a line cut by an
    interrupted run."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
