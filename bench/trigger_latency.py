"""Trigger latency: from the trigger's HTTP response to RUNNING and to COMPLETED.

One `datamill serve` per backend (embedded SQLite, then PostgreSQL), a trivial
workbook (one kept SQL sheet `SELECT 1 AS one`), triggered N times one after
another: each run is triggered only once the previous one has ended, so every
figure is the latency of an idle server, not a queue.

Method. The client notes time.time() when the trigger response has arrived.
RUNNING and COMPLETED are the store's started_at and finished_at of that
execution, written by the server with datetime.now(UTC): the same host and the
same clock (CLOCK_REALTIME, microseconds). A negative difference means the
worker had already claimed the run before the response reached the client
(the trigger wakes the worker before it answers); it counts as 0. Between runs
the client polls the execution's status straight from the database (read-only,
every 1 ms) to know when to trigger the next; that poll is a second,
independent observation of COMPLETED and is printed as a cross-check.

Baseline: GET /health round trips to the same server in the same run.
Target: to RUNNING p50 <= 10 ms and p99 <= 50 ms.
"""

from __future__ import annotations

import time

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


def measure(server: Server, runs: int, backend: str) -> list[Result]:
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
            execution_id = trigger(client, JOB)
            responded[execution_id] = time.time()
            sent[execution_id] = wall
            request.append(time.perf_counter() - start)
            status = reader.wait_terminal(execution_id)
            polled[execution_id] = time.time()
            if status != "COMPLETED":
                raise RuntimeError(f"execution {execution_id} ended {status}")
    times = reader.times(list(responded))
    reader.close()
    to_running, to_completed, by_poll, from_sent = [], [], [], []
    early = 0
    for execution_id, at in responded.items():
        row = times[execution_id]
        assert row.started is not None and row.finished is not None
        if row.started < at:
            early += 1
        to_running.append(max(0.0, row.started - at))
        to_completed.append(max(0.0, row.finished - at))
        by_poll.append(polled[execution_id] - at)
        from_sent.append(row.started - sent[execution_id])
    print(f"[{backend}] {runs} runs")
    print(
        f"  GET /health round trip   p50 {ms(median(health))}  p99 {ms(percentile(health, 0.99))}"
    )
    print(
        f"  trigger request          p50 {ms(median(request))}  p99 {ms(percentile(request, 0.99))}"
    )
    print(
        f"  response -> RUNNING      p50 {ms(median(to_running))}  "
        f"p99 {ms(percentile(to_running, 0.99))}  "
        f"({early} of {runs} already RUNNING at the response)"
    )
    print(
        f"  request sent -> RUNNING  p50 {ms(median(from_sent))}  "
        f"p99 {ms(percentile(from_sent, 0.99))}"
    )
    print(
        f"  response -> COMPLETED    p50 {ms(median(to_completed))}  "
        f"p99 {ms(percentile(to_completed, 0.99))}"
    )
    print(
        f"  COMPLETED seen by poll   p50 {ms(median(by_poll))}  "
        f"p99 {ms(percentile(by_poll, 0.99))}",
        flush=True,
    )
    base50, base99 = median(health) * 1000, percentile(health, 0.99) * 1000
    r50, r99 = median(to_running) * 1000, percentile(to_running, 0.99) * 1000
    c50, c99 = median(to_completed) * 1000, percentile(to_completed, 0.99) * 1000
    return [
        Result(
            f"{backend}: to RUNNING p50", r50, "ms", base50, "health p50", "<= 10 ms", r50 <= 10
        ),
        Result(
            f"{backend}: to RUNNING p99", r99, "ms", base99, "health p99", "<= 50 ms", r99 <= 50
        ),
        Result(f"{backend}: to COMPLETED p50", c50, "ms", base50, "health p50", "-", None),
        Result(f"{backend}: to COMPLETED p99", c99, "ms", base99, "health p99", "-", None),
        Result(
            f"{backend}: request sent -> RUNNING p50",
            median(from_sent) * 1000,
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
    args = parse_args(__doc__.splitlines()[0])
    header("trigger_latency", args.quick)
    runs = 100 if args.quick else 1000
    results: list[Result] = []
    with scratch("latency") as folder:
        with serve(folder / "sqlite") as server:
            results += measure(server, runs, "sqlite")
        if postgres_available():
            with postgres_database("latency") as url, serve(folder / "pg", url) as server:
                results += measure(server, runs, "postgres")
        else:
            print("PostgreSQL does not answer: skipped")
    summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
