"""Run an `xrp` command as a Ray job: on the cluster the job was submitted to, with the code
the job shipped (its working_dir, see runtime_env.yaml)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> None:
    """``xrp <command> <job arguments>``, attached to the job's cluster (``--address auto``)
    unless the arguments name another address."""
    sys.path.insert(0, str(ROOT))  # the submitted xray_platform, not an older installed one
    args = [*command, *sys.argv[1:]]
    if "--address" not in args and os.environ.get("RAY_ADDRESS"):
        args += ["--address", "auto"]
    from xray_platform.cli import app

    print(f"[xrp job] xrp {' '.join(args)}", flush=True)
    app(args, prog_name="xrp")
