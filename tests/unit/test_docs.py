"""Docs that cannot go stale (issue 31 item 2): every path the docs name exists, every link
and anchor resolves, and every code block marked runnable runs.

Which files: README.md, every .md under docs/, jobs/README.md, infra/README.md and the zoo's
model cards (xray_platform/zoo/*.md).

Paths (the rule, also in docs/README.md):
- Links, `[text](target)` and images: a target without a scheme (not http:, https:, mailto:)
  is resolved from the linking file's folder and must exist; a `#anchor` must be a heading of
  the target markdown file (GitHub's slugs: lower case, punctuation dropped, spaces to
  hyphens, -1, -2 for repeats). Targets that resolve outside the repository (the shared data
  beside the checkout) are not checked.
- Paths in backticks and in code blocks: a token that starts with a top-level folder of the
  repository (`xray_platform/`, `tests/`, `benchmarks/`, `jobs/`, `docs/`, `serve_configs/`,
  `infra/`, `.ci/`) is read from the repository root; one that starts with a package folder
  of xray_platform (`core/schema.py`, `io/formats/`) is read as `xray_platform/<token>`.
  Either must exist; a module with an attribute (`io/imgcif.write_imgcif`) counts when the
  module's .py file does. A token preceded by `/`, `.`, `~`, `$`, `-` or a word character is
  part of something else and is not a repository path (`../shared/...`, `/data/...`,
  `runs/zoo-lattice/...`). Not checked: outputs written at run time (`data/...`, `runs/...`:
  not among the folders above), and patterns: a token holding `*`, `?`, `<`, `>`, `{`, `}`,
  `$`, `@` or `...`.

Runnable blocks: a fence whose info string is `bash runnable` runs with `bash -euo pipefail` in
a fresh temporary folder laid out like a checkout (the repository's sources and `.venv` linked
in, `../shared` linked to the shared data), so the block's `.venv/bin/xrp ...` and
`../shared/data/...` work as written and its outputs land in the temporary folder. Each must
exit 0 within BLOCK_TIMEOUT_S; blocks naming `../shared/` skip without the shared data. They
start processes (one starts Ray), so they are marked slow and ray: the inner loop skips them,
CI runs them (all together ~30-60 s on 2 cores)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, SHARED

#: top-level folders a doc's repository path may start with (read from the repository root)
ROOT_FOLDERS = ("xray_platform", "tests", "benchmarks", "jobs", "docs", "serve_configs",
                "infra", ".ci")
#: package folders of xray_platform a doc may name without the `xray_platform/` prefix
PACKAGE_FOLDERS = tuple(sorted(
    {p.name for p in (ROOT / "xray_platform").iterdir() if (p / "__init__.py").is_file()}
    | {"physics", "io", "core", "reports", "tracking", "orchestration", "serve", "cli",
       "live", "zoo"}))
#: what the runnable blocks' temporary checkout links in besides ROOT_FOLDERS
ROOT_FILES = ("README.md", "pyproject.toml")
BLOCK_TIMEOUT_S = 180
PATTERN_MARKS = ("*", "?", "<", ">", "{", "}", "$", "@", "...")

PATH_TOKEN = re.compile(
    r"(?<![\w./~$-])((?:" + "|".join(re.escape(f) for f in ROOT_FOLDERS + PACKAGE_FOLDERS)
    + r")/[\w./*?<>{}$@%+-]*)")
LINK = re.compile(r"\[[^\]\n]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`([^`]+)`")
FENCE = re.compile(r"^\s*```(.*)$")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
             ROOT / "jobs" / "README.md", ROOT / "infra" / "README.md",
             *sorted((ROOT / "xray_platform" / "zoo").glob("*.md"))]
    return [f for f in files if f.is_file()]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # of the opening fence, from 1
    info: str
    code: str

    @property
    def runnable(self) -> bool:
        return self.info.split() == ["bash", "runnable"]

    def __str__(self) -> str:
        return f"{rel(self.file)}:{self.line}"


def split_doc(path: Path) -> tuple[str, list[Block]]:
    """The prose of a markdown file (fenced blocks blanked, so line numbers hold) and its
    fenced code blocks."""
    prose, blocks = [], []
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append(Block(path, start + 1, m.group(1).strip(), "\n".join(body) + "\n"))
        prose.extend([""] * (len(body) + 2))
        i += 1
    return "\n".join(prose), blocks


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # links: their text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_doc(path)
    seen: dict[str, int] = {}
    out = set()
    for line in prose.split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def is_pattern(token: str) -> bool:
    return any(mark in token for mark in PATTERN_MARKS)


def repo_path_exists(token: str) -> bool:
    token = token.rstrip(".,:;'\"")
    first = token.split("/", 1)[0]
    base = ROOT if first in ROOT_FOLDERS else ROOT / "xray_platform"
    path = base / token
    if path.exists():
        return True
    # a module with an attribute: io/imgcif.write_imgcif -> io/imgcif.py (or a package's
    # io/formats/__init__.py for io/formats.read_frame)
    head, dot, _ = token.rpartition(".")
    return bool(dot) and "/" in head and ((base / f"{head}.py").is_file()
                                          or (base / head / "__init__.py").is_file())


def named_paths(path: Path) -> list[str]:
    """Repository paths a doc names in backticks or code blocks (the module docstring's rule)."""
    prose, blocks = split_doc(path)
    texts = CODE_SPAN.findall(prose) + [b.code for b in blocks]
    tokens = {t.rstrip(".,:;'\"") for text in texts for t in PATH_TOKEN.findall(text)}
    return sorted(t for t in tokens if not is_pattern(t))


def broken_links(path: Path) -> list[str]:
    prose, _ = split_doc(path)
    prose = CODE_SPAN.sub("", prose)  # a link inside backticks is code, not a link
    bad = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if ROOT.resolve() not in (dest, *dest.parents):
            continue  # beside the checkout (the shared data): not this repository's to check
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {rel(dest)})")
    return bad


DOCS = doc_files()
RUNNABLE = [b for f in DOCS for b in split_doc(f)[1] if b.runnable]


def test_the_docs_are_found() -> None:
    names = {rel(f) for f in DOCS}
    assert {"README.md", "docs/README.md", "docs/lattice-verdict.md"} <= names
    assert any(n.startswith("docs/guide/") for n in names)


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_named_paths_exist(doc: Path) -> None:
    missing = [t for t in named_paths(doc) if not repo_path_exists(t)]
    assert not missing, f"{rel(doc)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_links_resolve(doc: Path) -> None:
    bad = broken_links(doc)
    assert not bad, f"{rel(doc)} has broken links: {bad}"


def test_the_rule_sees_paths() -> None:
    """The path rule on examples, so a regex change that stops seeing paths cannot pass."""
    text = ("`xray_platform/core/schema.py`, `core/dmin.py`, `io/imgcif.write_imgcif`; "
            "`../shared/data/real/x.cbf`, `runs/res/model.pt`, `data/quick-resolution`, "
            "`physics/layouts/*.json`, `xray_platform/zoo/xrp-zoo-<task>.pt`, "
            "http://127.0.0.1:8000/docs")
    tokens = [t for t in PATH_TOKEN.findall(text) if not is_pattern(t)]
    assert tokens == ["xray_platform/core/schema.py", "core/dmin.py", "io/imgcif.write_imgcif"]
    assert all(repo_path_exists(t) for t in tokens)
    assert not repo_path_exists("tests/test_infra.py")  # it is tests/unit/test_infra.py


def test_readme_and_docs_have_runnable_blocks() -> None:
    where = {rel(b.file) for b in RUNNABLE}
    assert "README.md" in where, "the README's quick start should run in the test"
    assert len(RUNNABLE) >= 4


def checkout_like(tmp: Path) -> Path:
    """A folder that looks like a checkout to the docs' commands: sources and .venv linked in,
    ../shared beside it; what a command writes lands here, not in the repository."""
    work = tmp / "work"
    work.mkdir()
    for name in (*ROOT_FOLDERS, *ROOT_FILES):
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    (work / ".venv").symlink_to(Path(sys.prefix))  # the environment running the tests
    if SHARED.parent.is_dir():
        (tmp / "shared").symlink_to(SHARED.parent)
    return work


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("block", RUNNABLE, ids=str)
def test_runnable_block(block: Block, tmp_path: Path) -> None:
    if "../shared/" in block.code and not SHARED.is_dir():
        pytest.skip("the block reads ../shared/data, which is not beside the checkout")
    if not (Path(sys.prefix) / "bin" / "xrp").exists():
        pytest.skip("xrp is not installed in the environment running the tests")
    work = checkout_like(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "XRP_API_KEY")}  # as on a fresh machine
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=work, env=env,
                       capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert r.returncode == 0, (f"{block} exited {r.returncode}:\n{block.code}\n"
                               f"stdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-3000:]}")
