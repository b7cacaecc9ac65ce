"""History scale: service-call latency as the executions table grows.

A store is created through Datamill itself (migrations, admin, 10 trivial
workbooks); then executions are bulk-loaded straight into its table, spread
round-robin over the 10 jobs (so the measured job holds a tenth of them):
SQLite with executemany in large transactions, PostgreSQL with COPY followed
by ANALYZE. Five executions stay active (3 RUNNING, 2 QUEUED) at every size.
Every row gets the run number Datamill would give it (1, 2, 3, ... per job in
id order); nothing is deleted, so execution_gaps stays empty and the history
pages take the run-number path with no holes to skip.
At each size the calls behind these endpoints are timed in-process, as the
admin user (no HTTP, no authentication):
- status      JobService.status(<file id>)            GET /api/job-execution/<id>/status
- history p1  JobService.history(cfg, start=0)        GET /rest/job-configuration/job-history/<cfg>
- history deep  JobService.history(cfg, start=last page)  (the oldest page of the job)
- list-running  the route function itself             GET /api/job-execution/list-running

Sizes: 10 thousand, 1 million and 10 million executions (quick: 10 thousand
and 100 thousand). Each call runs at least 20 times and then until 500 samples
or 5 s. Baseline: the same call at the smallest size, in the same run;
ratio = p95 at this size / p95 at the smallest. Target: p95 <= 5 ms, flat
across sizes.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from common import (
    Result,
    header,
    libpq,
    median,
    parse_args,
    percentile,
    postgres_available,
    postgres_database,
    scratch,
    summary,
    trivial_workbook,
)

from datamill.api import job_routes
from datamill.bootstrap import Node, ensure_admin, open_node
from datamill.domain.records import User
from datamill.domain.status import JobKind, JobStatus
from datamill.settings import Settings
from datamill.store import tables

JOBS = 10
BATCH = 100_000
COLUMNS = (
    "job_configuration_id, file_id, status, trigger_type, triggered_by, created_at, "
    "started_at, finished_at, progress, success_count, failure_count, counters, "
    "error_message, worker_id, heartbeat_at, variables, stop_requested, bytes_read, attempts, "
    "run_number"
)
ACTIVE = ["RUNNING", "RUNNING", "RUNNING", "QUEUED", "QUEUED"]  # on jobs[-1], jobs[-2], ...
Job = tuple[int, int]  # (configuration id, file id)


# ---------------------------------------------------------------- set-up


def open_store(home: Path, database_url: str | None) -> tuple[Node, User, list[Job]]:
    """A migrated store with an admin and JOBS trivial workbooks."""
    node = open_node(Settings(home=home, database_url=database_url, admin_password="admin"))
    ensure_admin(node)
    jobs = []
    for index in range(JOBS):
        document = trivial_workbook(f"/Analytics/Workbooks/h/wb_{index}.wbk")
        del document["path"]
        entry, config = node.jobs.define_job(
            f"/Analytics/Workbooks/h/wb_{index}.wbk", JobKind.WORKBOOK, document, "admin"
        )
        jobs.append((config.id, entry.id))
    with node.store.db.read() as conn:
        admin = node.store.users.get(conn, "admin")
    assert admin is not None
    return node, admin, jobs


def row(job: Job, status: str, created: dt.datetime) -> tuple[Any, ...]:
    """One execution row without its run number (values in COLUMNS order)."""
    config_id, file_id = job
    active = status in ("RUNNING", "QUEUED")
    return (
        config_id,
        file_id,
        status,
        "RESTAPI",
        "admin",
        created,
        None if status == "QUEUED" else created,
        None if active else created + dt.timedelta(seconds=1),
        0.5 if status == "RUNNING" else (None if active else 1.0),
        1,
        0,
        "{}",
        None,
        "bench-worker" if status == "RUNNING" else None,
        created if status == "RUNNING" else None,
        "{}",
        False,
        0,
        1,
    )


def run_number(n: int) -> int:
    """The run number of bulk row n: its job's active row (if any) was run 1."""
    job = n % JOBS
    return n // JOBS + (2 if job >= JOBS - len(ACTIVE) else 1)


def blocks(
    jobs: list[Job], first: int, count: int
) -> Iterator[tuple[list[tuple[Any, ...]], int, int]]:
    """Rows in blocks of up to 1,000 that share one timestamp: (templates, first row, how many).

    The block's k-th row is templates[k % len(templates)] + (run_number(first row + k),).

    Row n belongs to job n % JOBS and is an ERROR when n % 50 == 0, else
    COMPLETED; a block's rows differ only in that, so each block needs 50
    distinct tuples, and generating 10 million rows costs little.
    """
    base = dt.datetime(2026, 1, 1)
    number = first
    while number < first + count:
        size = min(1000 - number % 1000, first + count - number)
        created = base + dt.timedelta(seconds=number // 1000)
        # Job and status repeat every lcm(JOBS, 50) = 50 rows.
        templates = [
            row(jobs[n % JOBS], "ERROR" if n % 50 == 0 else "COMPLETED", created)
            for n in range(number, number + min(size, 50))
        ]
        yield templates, number, size
        number += size


def _sqlite_value(value: Any) -> Any:
    # SQLAlchemy keeps DateTime as ISO text on SQLite.
    return value.isoformat(" ") if isinstance(value, dt.datetime) else value


def _copy_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    return str(value)


def bulk_load(database_url: str, jobs: list[Job], first: int, count: int) -> None:
    """Insert `count` ended executions (executemany on SQLite, COPY on PostgreSQL).

    SQLite gets no ANALYZE, since Datamill never runs one; PostgreSQL gets the
    ANALYZE that autovacuum would run soon after such a load.
    """
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
        marks = ",".join("?" * len(COLUMNS.split(",")))
        insert = f"INSERT INTO executions ({COLUMNS}) VALUES ({marks})"
        conn.execute("BEGIN")
        for done, (templates, number, size) in enumerate(blocks(jobs, first, count), start=1):
            converted = [tuple(map(_sqlite_value, r)) for r in templates]
            width = len(converted)
            conn.executemany(
                insert,
                (converted[k % width] + (run_number(number + k),) for k in range(size)),
            )
            if done % 100 == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        conn.execute("COMMIT")
        conn.close()
        return
    with psycopg.connect(libpq(database_url)) as pg:
        with (
            pg.cursor() as cursor,
            cursor.copy(f"COPY executions ({COLUMNS}) FROM STDIN") as copy,
        ):
            for templates, number, size in blocks(jobs, first, count):
                prefixes = ["\t".join(map(_copy_value, r)) + "\t" for r in templates]
                width = len(prefixes)
                copy.write(
                    "".join(f"{prefixes[k % width]}{run_number(number + k)}\n" for k in range(size))
                )
        pg.commit()
        pg.autocommit = True
        pg.execute("ANALYZE executions")


def add_active(node: Node, jobs: list[Job]) -> None:
    """Three RUNNING and two QUEUED executions, on different jobs."""
    url = node.store.db.url
    now = dt.datetime(2026, 1, 1)
    active = [(*row(jobs[JOBS - 1 - index], status, now), 1) for index, status in enumerate(ACTIVE)]
    marks = ",".join("?" * len(COLUMNS.split(",")))
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split(":///", 1)[1])
        conn.executemany(
            f"INSERT INTO executions ({COLUMNS}) VALUES ({marks})",
            [tuple(map(_sqlite_value, r)) for r in active],
        )
        conn.commit()
        conn.close()
        return
    with psycopg.connect(libpq(url)) as pg, pg.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO executions ({COLUMNS}) VALUES ({marks.replace('?', '%s')})", active
        )


# ---------------------------------------------------------------- timing


def timed(
    call: Callable[[], Any], least: int = 20, most: int = 500, budget: float = 5.0
) -> list[float]:
    """Seconds per call: after 3 warm-ups, at least `least`, then up to `most` or `budget` s."""
    for _ in range(3):
        call()
    samples: list[float] = []
    deadline = time.monotonic() + budget
    while len(samples) < least or (len(samples) < most and time.monotonic() < deadline):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def calls(node: Node, admin: User, job: Job, per_job: int) -> dict[str, Callable[[], Any]]:
    """The service calls to time, by name."""
    config_id, file_id = job
    request = types.SimpleNamespace(
        app=types.SimpleNamespace(state=types.SimpleNamespace(jobs=node.jobs))
    )
    deep = max(0, per_job - 10)
    return {
        "status": lambda: node.jobs.status(str(file_id), admin),
        "history first page": lambda: node.jobs.history(config_id, admin, 0, 10),
        "history deep page": lambda: node.jobs.history(config_id, admin, deep, 10),
        "list-running": lambda: job_routes.list_running(request, admin),  # type: ignore[arg-type]
    }


def check_pages(node: Node, admin: User, job: Job, per_job: int) -> None:
    """The timed pages must be the ones plain OFFSET paging over ids gives."""
    executions = tables.executions
    config_id = job[0]
    for start in (0, max(0, per_job - 10), per_job // 2):
        with node.store.db.read() as conn:
            expected = [
                (r.id, JobStatus(r.status))
                for r in conn.execute(
                    sa.select(executions.c.id, executions.c.status)
                    .where(executions.c.job_configuration_id == config_id)
                    .order_by(executions.c.id.desc())
                    .offset(start)
                    .limit(10)
                )
            ]
        assert node.jobs.history(config_id, admin, start, 10) == expected, start


def run_backend(name: str, home: Path, database_url: str | None, sizes: list[int]) -> list[Result]:
    """Grow the table through `sizes`, timing the calls at each."""
    node, admin, jobs = open_store(home, database_url)
    add_active(node, jobs)
    url = node.store.db.url
    loaded = 0
    first_p95: dict[str, float] = {}
    results = []
    print(f"[{name}]")
    for size in sizes:
        start = time.monotonic()
        bulk_load(url, jobs, loaded, size - loaded)
        took = time.monotonic() - start
        print(
            f"  loaded {size - loaded:,} executions in {took:.1f}s "
            f"({(size - loaded) / took:,.0f}/s); total {size:,}",
            flush=True,
        )
        loaded = size
        check_pages(node, admin, jobs[0], size // JOBS)
        for call_name, call in calls(node, admin, jobs[0], size // JOBS).items():
            samples = timed(call)
            p95 = percentile(samples, 0.95) * 1000
            first_p95.setdefault(call_name, p95)
            print(
                f"    {call_name:<20} p50 {median(samples) * 1000:8.2f} ms  "
                f"p95 {p95:8.2f} ms  ({len(samples)} samples)",
                flush=True,
            )
            results.append(
                Result(
                    f"{name} {size:>10,}: {call_name} p95",
                    p95,
                    "ms",
                    first_p95[call_name],
                    f"{sizes[0]:,} rows",
                    "<= 5 ms",
                    p95 <= 5.0,
                )
            )
    node.store.close()
    return results


def main() -> int:
    """SQLite, then PostgreSQL if it answers."""
    args = parse_args(__doc__.splitlines()[0])
    header("history_scale", args.quick)
    sizes = [10_000, 100_000] if args.quick else [10_000, 1_000_000, 10_000_000]
    results: list[Result] = []
    with scratch("history") as folder:
        results += run_backend("sqlite", folder / "sqlite", None, sizes)
        if postgres_available():
            with postgres_database("history") as url:
                results += run_backend("postgres", folder / "pg", url, sizes)
        else:
            print("PostgreSQL does not answer: skipped")
    summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
