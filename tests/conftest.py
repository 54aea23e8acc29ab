"""Test layout: unit/ (fast, pure: no Ray, no subprocesses), integration/ (Ray, Serve, the CLI
in subprocesses: marked `ray` and `slow`, ~14 min in one process on 2 cores), behaviour/ (the
shipped models). `pytest -m "not slow"` (unit + behaviour, ~1.5 min) is the inner loop; CI runs
all on two processes (`-n 2 --dist loadfile`, ~11 min): tests never touch what another test
file started (own ports, own Ray temp dirs, processes picked by ancestry).
Shared helpers: helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import NANOBRAGG, REAL


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI (CI=true, as .ci/run is run) the shared reference data must be there: without it
    the tests that score real and nanoBragg frames would skip and the run would look green."""
    missing = [str(d) for d in (REAL, NANOBRAGG) if not d.is_dir() or not any(d.iterdir())]
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and missing:
        pytest.exit(f"CI: the shared data is missing ({', '.join(missing)})", returncode=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "integration":
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.slow)
