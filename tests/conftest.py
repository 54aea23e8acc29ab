"""Test layout: unit/ (fast, pure: no Ray, no subprocesses), integration/ (Ray, Serve, the CLI
in subprocesses: marked `ray` and `slow`, ~14 min in one process on 2 cores), behaviour/ (the
shipped models). `pytest -m "not slow"` (unit + behaviour, ~1.5 min) is the inner loop; CI runs
all on two processes (`-n 2 --dist loadfile`, ~11 min): tests never touch what another test
file started (own ports, own Ray temp dirs, processes picked by ancestry).
Shared helpers: helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "integration":
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.slow)
