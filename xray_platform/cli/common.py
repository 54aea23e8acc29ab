"""What every `xrp` command shares: the consoles, failing with a clear message, comma lists,
progress bars and summary tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err = Console(stderr=True)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` on stderr and exit with status ``code`` (2: a bad argument or a
    missing input; 1: the work itself came to nothing)."""
    err.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)  # msg: plain text
    raise typer.Exit(code=code)


def positive(value: float | None, option: str) -> float | None:
    """``value`` if it is None or a finite number > 0; fail otherwise."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        fail(f"{option} must be a number > 0, got {value}")
    return value


def csv(text: str | None, kind: type, what: str) -> tuple | None:
    """'a,b,c' -> (kind(a), kind(b), kind(c)); None stays None."""
    if text is None:
        return None
    try:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"{what}: expected a comma-separated list, got {text!r}")


@contextmanager
def progress(what: str, total: int | None = None, unit: str = ""
             ) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar; yields update(done, total)."""
    cols = [TextColumn("[progress.description]{task.description}"), BarColumn(),
            MofNCompleteColumn()] + ([TextColumn(unit)] if unit else []) + [TimeElapsedColumn()]
    with Progress(*cols, console=console) as prog:
        task = prog.add_task(what, total=total)

        def update(done: int, tot: int | None = None) -> None:
            prog.update(task, completed=done, total=tot if tot is not None else total)

        yield update


def summary(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column summary table (label, value)."""
    t = Table(show_header=False, title=title)
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
