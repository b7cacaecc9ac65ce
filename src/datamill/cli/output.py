"""What the CLI prints: Rich for people, plain JSON for scripts (`--json`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from datamill.client import Details
from datamill.domain.status import JobStatus

JsonOption = Annotated[
    bool, typer.Option("--json", help="print JSON for scripts (and nothing else on stdout)")
]

# Piped into a file or grep, tables keep one line per row instead of wrapping at 80.
_PIPED_WIDTH = 240
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else _PIPED_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATUS_STYLES = {
    JobStatus.COMPLETED: "green",
    JobStatus.COMPLETED_WITH_WARNINGS: "yellow",
    JobStatus.ERROR: "bold red",
    JobStatus.CANCELED: "magenta",
    JobStatus.RUNNING: "cyan",
}


def emit_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def styled(status: JobStatus | None) -> str:
    """A status in its colour, for Rich markup."""
    if status is None:
        return "[dim]never ran[/dim]"
    style = STATUS_STYLES.get(status, "white")
    return f"[{style}]{status.value}[/{style}]"


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table on stdout."""
    grid = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(grid)


def details_json(details: Details) -> dict[str, Any]:
    """Job details as scripts get them: the server's members plus the execution id."""
    return {"jobExecutionId": details.execution_id, **details.raw}


def print_outcome(label: str, details: Details) -> None:
    """The final status, counters, warnings and failure reason of a run."""
    took = ""
    if details.start_time is not None and details.stop_time is not None:
        took = f" in {(details.stop_time - details.start_time).total_seconds():.0f}s"
    out.print(
        f"{label}: execution {details.execution_id} {styled(details.status)}{took}, "
        f"{details.success_count} records written, {details.failure_count} dropped"
    )
    if details.counters:
        counters = ", ".join(f"{k}={v}" for k, v in sorted(details.counters.items()))
        out.print(f"  counters: {counters}")
    for warning in details.warnings:
        count = warning.get("count")
        suffix = f" ({count} records)" if count is not None else ""
        out.print(f"  [yellow]warning:[/yellow] {warning.get('message')}{suffix}")
    reason = details.failure_reason
    if reason:
        out.print(f"  [red]reason:[/red] {reason}")
