"""`--wait`: a live Rich progress bar per run while it is queued and running."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from datamill.cli import exits
from datamill.cli.output import err, print_outcome
from datamill.client import Client, Details, WaitTimeout
from datamill.client.waiting import Progress as RunProgress


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[state]}"),
        TextColumn("{task.fields[remaining]}"),
        console=err,
        transient=True,
    )


def wait_runs(
    client: Client,
    runs: Sequence[tuple[str, int]],
    timeout: float | None,
    show: bool,
) -> tuple[int, list[Details | None]]:
    """Wait for (label, execution id) runs in order; the exit code and each run's details.

    A run the time ran out on has None as details; the runs after it are not waited for.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    results: list[Details | None] = []
    codes: list[int] = []
    with _bar() if show else _NoBar() as bar:
        tasks = {eid: bar.add_task(label, total=100, state="", remaining="") for label, eid in runs}
        for label, execution_id in runs:
            task = tasks[execution_id]

            def update(p: RunProgress, task: TaskID = task) -> None:
                remaining = f"{p.remaining} left" if p.remaining else ""
                state = p.status.value
                bar.update(task, completed=p.percent or 0, state=state, remaining=remaining)

            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                details = client.wait(execution_id, left, on_progress=update)
            except WaitTimeout as timed_out:
                if show:
                    err.print(
                        f"{escape(label)}: execution {execution_id} did not end within"
                        f" {timeout:g}s (last status {timed_out.last_status}); it goes on running"
                    )
                results.append(None)
                codes.append(exits.TIMEOUT)
                break
            bar.update(task, completed=100, state=details.status.value, remaining="")
            results.append(details)
            codes.append(exits.for_status(details.status))
    if show:
        for (label, _), result in zip(runs, results, strict=False):
            if result is not None:
                print_outcome(label, result)
    return exits.worst(codes), results


class _NoBar:
    """Stands in for the progress bar under --json."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def add_task(self, *_: object, **__: object) -> TaskID:
        return TaskID(0)

    def update(self, *_: object, **__: object) -> None:
        return None
