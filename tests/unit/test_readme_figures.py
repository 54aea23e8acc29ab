"""README figures come from scripts that exist (issue 29): every `python benchmarks/X.py` command
the README and docs/ name (the figures moved to docs/ in issue 31; and any other benchmarks/X.py
they mention) is a file in benchmarks/, and each
such script's --help exits 0 (its imports and its argument parser work). The figures themselves
are not rerun here: that takes minutes to hours per script. The --help runs are marked slow (a
subprocess per script, each importing torch or Ray): CI runs them, the inner loop does not."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: `python benchmarks/x.py`, `python3 ...`, `.venv/bin/python ...`, also wrapped over a line
COMMAND = re.compile(r"python3?\s+(benchmarks/[\w./-]+?\.py)\b")
#: any mention of a script, command or not
MENTION = re.compile(r"\b(benchmarks/[\w./-]+?\.py)\b")


def readme() -> str:
    """The README and every markdown file under docs/, as one text."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in docs)


def readme_scripts() -> list[str]:
    return sorted(set(MENTION.findall(readme())))


def test_readme_names_benchmark_commands() -> None:
    commands = set(COMMAND.findall(readme()))
    assert len(commands) >= 5, "the docs' figures should name their scripts' commands"
    assert commands <= set(readme_scripts())


@pytest.mark.parametrize("script", readme_scripts())
def test_named_script_exists(script: str) -> None:
    assert (ROOT / script).is_file(), f"README.md or docs/ runs {script}, which is not there"


@pytest.mark.slow  # a subprocess each, importing torch or Ray: ~30-50 s for all on 2 cores
@pytest.mark.parametrize("script", [s for s in readme_scripts() if (ROOT / s).is_file()])
def test_named_script_help(script: str, tmp_path: Path) -> None:
    # its own working directory: nothing a script writes on start-up meets another test's
    r = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{script} --help: rc {r.returncode}\n{r.stderr[-2000:]}"
    assert "usage" in r.stdout.lower()
