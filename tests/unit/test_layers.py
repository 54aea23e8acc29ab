"""The layers: physics, io, core, reports, zoo and live import and run without Ray or MLflow."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import xray_platform

PURE = ("physics", "io", "core", "reports", "zoo", "live")


def _modules(layer: str) -> list[str]:
    pkg = __import__(f"xray_platform.{layer}", fromlist=["_"])
    names = [pkg.__name__]
    for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
        names.append(m.name)
    return names


def test_pure_layers_import_without_ray_or_mlflow() -> None:
    names = [n for layer in PURE for n in _modules(layer)]
    assert len(names) > 30  # every module of the pure layers, not a handful
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names) +
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow'))\n"
            "print(','.join(bad))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"pure layers pulled in: {r.stdout.strip()[:300]}"


def test_matplotlib_only_in_reports() -> None:
    names = [n for layer in ("physics", "io", "core") for n in _modules(layer)]
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names) +
            "print('matplotlib' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_every_module_belongs_to_a_layer() -> None:
    top = {m.name for m in pkgutil.iter_modules(xray_platform.__path__)}
    assert top == {"physics", "io", "core", "reports", "tracking", "orchestration", "serve",
                   "cli", "zoo", "live"}, top
