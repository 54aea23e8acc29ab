"""Test layout: unit/ (fast, pure: no Ray, no subprocesses), integration/ (Ray, Serve, the CLI
in subprocesses: marked `ray` and `slow`, together ~25 min on 2 cores), behaviour/ (the shipped
models). `pytest -m "not slow"` (unit + behaviour, ~1.5 min) is the inner loop; CI runs all.
Shared helpers: helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "integration":
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.slow)
