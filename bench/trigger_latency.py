"""Trigger latency: from the trigger request being sent to RUNNING and to COMPLETED.

One `datamill serve` per backend (embedded SQLite, then PostgreSQL), a trivial
workbook (one kept SQL sheet `SELECT 1 AS one`), triggered N times one after
another: each run is triggered only once the previous one has ended, so every
figure is the latency of an idle server, not a queue.

Judged (what a user experiences): from the moment the client sends the
trigger request to RUNNING and to COMPLETED. The client notes time.time()
just before it sends; RUNNING and COMPLETED are the store's started_at and
finished_at of that execution, written by the server with datetime.now(UTC):
the same host and the same clock (CLOCK_REALTIME, microseconds).

Information (the favourable figure): from the trigger's response to RUNNING,
which leaves out the request itself; negative differences (the worker had
claimed the run before the response reached the client: the trigger wakes
the worker before it answers) count as 0. Between runs the client polls the
execution's status straight from the database (read-only, every 1 ms) to know
when to trigger the next; that poll is a second, independent observation of
COMPLETED and is printed as a cross-check.

With --keys every trigger carries a fresh Idempotency-Key (the cost of the
key's insert and answer in the trigger's transaction).

Baseline: GET /health round trips to the same server in the same run.
Target: request sent -> RUNNING p50 <= 10 ms and p99 <= 50 ms.
"""

from __future__ import annotations

import sys
import time
import uuid

from common import (
    Result,
    Server,
    StoreReader,
    define,
    header,
    median,
    ms,
    parse_args,
    percentile,
    postgres_available,
    postgres_database,
    scratch,
    serve,
    summary,
    trigger,
    trivial_workbook,
    wait_warm,
)

JOB = "/Analytics/Workbooks/trivial.wbk"


def health_round_trips(server: Server, count: int) -> list[float]:
    """Seconds of `count` GET /health round trips on one keep-alive connection."""
    samples = []
    with server.client() as client:
        for _ in range(count):
            start = time.perf_counter()
            client.get("/health").raise_for_status()
            samples.append(time.perf_counter() - start)
    return samples


def measure(server: Server, runs: int, backend: str, keys: bool = False) -> list[Result]:
    """Trigger the trivial job `runs` times, one after another; the summary lines."""
    wait_warm(server)
    reader = StoreReader(server.database_url)
    with server.client() as client:
        define(client, "workbook", trivial_workbook(JOB))
        for _ in range(5):  # warm-up: first login (argon2), first runs in the children
            reader.wait_terminal(trigger(client, JOB))
        health = health_round_trips(server, runs)
        request: list[float] = []
        sent: dict[int, float] = {}
        responded: dict[int, float] = {}
        polled: dict[int, float] = {}
        for _ in range(runs):
            start, wall = time.perf_counter(), time.time()
            execution_id = trigger(client, JOB, uuid.uuid4().hex if keys else None)
            responded[execution_id] = time.time()
            sent[execution_id] = wall
            request.append(time.perf_counter() - start)
            status = reader.wait_terminal(execution_id)
            polled[execution_id] = time.time()
            if status != "COMPLETED":
                raise RuntimeError(f"execution {execution_id} ended {status}")
    times = reader.times(list(responded))
    reader.close()
    sent_running, sent_completed, to_running, by_poll = [], [], [], []
    early = 0
    for execution_id, at in responded.items():
        row = times[execution_id]
        assert row.started is not None and row.finished is not None
        if row.started < at:
            early += 1
        sent_running.append(row.started - sent[execution_id])
        sent_completed.append(row.finished - sent[execution_id])
        to_running.append(max(0.0, row.started - at))
        by_poll.append(polled[execution_id] - at)

    def line(label: str, values: list[float], tail: str = "") -> None:
        print(f"  {label:<28} p50 {ms(median(values))}  p99 {ms(percentile(values, 0.99))}{tail}")

    print(f"[{backend}] {runs} runs")
    line("GET /health round trip", health)
    line("trigger request", request)
    line("request sent -> RUNNING", sent_running)
    line("request sent -> COMPLETED", sent_completed)
    line("(info) response -> RUNNING", to_running, f"  ({early} of {runs} RUNNING at the response)")
    line("(info) COMPLETED by poll", by_poll)
    sys.stdout.flush()
    base50, base99 = median(health) * 1000, percentile(health, 0.99) * 1000
    r50, r99 = median(sent_running) * 1000, percentile(sent_running, 0.99) * 1000
    c50, c99 = median(sent_completed) * 1000, percentile(sent_completed, 0.99) * 1000
    return [
        Result(
            f"{backend}: sent -> RUNNING p50",
            r50,
            "ms",
            base50,
            "health p50",
            "<= 10 ms",
            r50 <= 10,
        ),
        Result(
            f"{backend}: sent -> RUNNING p99",
            r99,
            "ms",
            base99,
            "health p99",
            "<= 50 ms",
            r99 <= 50,
        ),
        Result(f"{backend}: sent -> COMPLETED p50", c50, "ms", base50, "health p50", "-", None),
        Result(f"{backend}: sent -> COMPLETED p99", c99, "ms", base99, "health p99", "-", None),
        Result(
            f"{backend}: (info) response -> RUNNING p50",
            median(to_running) * 1000,
            "ms",
            base50,
            "health p50",
            "-",
            None,
        ),
        Result(
            f"{backend}: trigger request p50",
            median(request) * 1000,
            "ms",
            base50,
            "health p50",
            "-",
            None,
        ),
    ]


def main() -> int:
    """Run on SQLite, then on PostgreSQL if it answers."""
    keys = ("--keys", {"action": "store_true", "help": "send a fresh Idempotency-Key each time"})
    args = parse_args(__doc__.splitlines()[0], [keys])
    header("trigger_latency", args.quick)
    runs = 100 if args.quick else 1000
    results: list[Result] = []
    with scratch("latency") as folder:
        with serve(folder / "sqlite") as server:
            results += measure(server, runs, "sqlite", args.keys)
        if postgres_available():
            with postgres_database("latency") as url, serve(folder / "pg", url) as server:
                results += measure(server, runs, "postgres", args.keys)
        else:
            print("PostgreSQL does not answer: skipped")
    summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
