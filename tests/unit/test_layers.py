"""The layers: physics, io, core, reports, zoo and live import and run without Ray or MLflow;
no import cycles; writing the per-image table needs no Ray; only tracking/ speaks to MLflow."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

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


def _module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    root = Path(xray_platform.__file__).parent
    out = {}
    for f in root.rglob("*.py"):
        parts = ("xray_platform", *f.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, at module or function level (ast)."""
    files = _module_names()

    def known(name: str) -> str:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                deps |= {known(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = {d for d in deps if d.startswith("xray_platform") and d != name}
    return graph


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a -> b -> ... -> a), or None (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        if m in path:
            return path[path.index(m):] + [m]
        if m in done:
            return None
        path.append(m)
        found = next((c for d in sorted(graph.get(m, ())) if (c := visit(d))), None)
        path.pop()
        done.add(m)
        return found

    return next((c for m in sorted(graph) if (c := visit(m))), None)


def test_no_import_cycles() -> None:
    graph = _import_graph()
    assert len(graph) > 100 and graph["xray_platform.io.imgcif"]  # the whole package, parsed
    assert _a_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the search finds one
    assert _a_cycle(graph) is None


def test_runs_export_writes_the_table_without_ray(tmp_path: Path) -> None:
    from xray_platform.live.store import RunStore

    url, out = f"sqlite:///{tmp_path}/runs.db", tmp_path / "r.csv"
    store = RunStore(url)
    store.add(store.open_run("r", "folder:/x"), [{"file": "/x/a.cbf", "frame": 0, "hit": True,
                                                  "n_spots": 30, "resolution_A": 2.1}])
    args = ["runs", "export", "r", "--out", str(out), "--store", url]
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom xray_platform.cli import app\n"
            f"r = CliRunner().invoke(app, {args!r})\n"
            "assert r.exit_code == 0, r.output\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"xrp runs export imported {r.stdout.strip()[:300]}"
    assert "a.cbf" in out.read_text() and "2.1" in out.read_text()


#: MlflowClient methods xrp uses: called anywhere but tracking/, a client leaked out of it
_MLFLOW_CALLS = {"MlflowClient", "create_experiment", "get_experiment_by_name", "create_run",
                 "update_run", "get_run", "search_runs", "set_terminated", "log_param",
                 "log_metric", "log_artifact", "set_tag", "get_metric_history",
                 "create_registered_model", "create_model_version", "get_model_version",
                 "get_model_version_by_alias", "set_registered_model_alias",
                 "search_registered_models", "search_model_versions", "download_artifacts"}


def _mlflow_uses(tree: ast.AST) -> list[str]:
    """``import mlflow``s and MLflow client calls in a module (line: what)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            names = [node.func.attr] if node.func.attr in _MLFLOW_CALLS else []
        else:
            continue
        found += [f"{node.lineno}: {n}" for n in names
                  if n.split(".")[0] == "mlflow" or n in _MLFLOW_CALLS]
    return found


def test_only_tracking_speaks_to_mlflow() -> None:
    root = Path(xray_platform.__file__).parent
    bad = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] != "tracking":
            uses = _mlflow_uses(ast.parse(path.read_text(encoding="utf-8")))
            if uses:
                bad[str(rel)] = uses
    assert not bad, f"MLflow outside tracking/ (go through tracking.runs.Tracker): {bad}"
    assert _mlflow_uses(ast.parse("import mlflow\nc.log_metric(r, 'k', 1.0)\n")) == [
        "1: mlflow", "2: log_metric"]  # the check itself sees both kinds
