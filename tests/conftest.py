"""Test layout: unit/ (fast, pure: no Ray, no subprocesses), integration/ (Ray, Serve, the CLI
in subprocesses: marked `ray`), behaviour/ (the shipped models). Tests marked `slow` take more
than ~20 s each; `pytest -m "not slow"` is the inner loop. Shared helpers: helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "integration":
            item.add_marker(pytest.mark.ray)
