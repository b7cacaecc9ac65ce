"""Queue estimate: how right the expected start of queued runs is, on a mixed workload.

One `datamill serve` per backend (SQLite, then PostgreSQL if it answers), the
default 2 slots. Three workbooks of different lengths (about 0.5 s, 1.5 s and
4 s of DuckDB work alone; the real durations are whatever the loaded machine
makes of them) each run three times first, all queued at once, so each has a
history made under the same load to estimate from. Then N runs of the
three, in a shuffled order (fixed seed), are triggered at once, and
list-running is read once right after: each queued run's `queuePosition` and
`expectedStartTime` are the predictions. When all
have ended, the store's started_at of each run is its actual start.

Judged: the error of the expected start (actual - predicted, seconds), median
and p90 of its absolute value, and the same relative to how long the run
actually waited. Information: how many runs started in the predicted order
(position i was the i-th to start).

Baseline: the naive guess a client could make without Datamill, "every run
ahead takes the mean of all jobs", whose error is printed beside.
"""

from __future__ import annotations

import random
import sys
import time

from common import (
    Result,
    Server,
    StoreReader,
    define,
    header,
    median,
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

# Rows of sum(hash(x)): about 0.5 s, 1.5 s and 4 s on the 2-core bench machine.
JOBS = {"short": 100_000_000, "medium": 300_000_000, "long": 800_000_000}
SLOTS = 2


def _path(name: str) -> str:
    return f"/Analytics/Workbooks/queue_{name}.wbk"


def measure(server: Server, runs: int, backend: str) -> list[Result]:
    """Queue `runs` mixed runs at once; compare predicted and actual starts."""
    wait_warm(server)
    reader = StoreReader(server.database_url)
    with server.client() as client:
        for name, rows in JOBS.items():
            sql = f"SELECT sum(hash(x)) AS h FROM range({rows}) AS t(x)"
            define(client, "workbook", trivial_workbook(_path(name), sql))
        # The history the estimate averages, made under the same load as the
        # measured round: each job three times, all queued at once.
        history = {name: [trigger(client, _path(name)) for _ in range(3)] for name in JOBS}
        for ids in history.values():
            for execution_id in ids:
                reader.wait_terminal(execution_id, timeout=1800)
        means = {name: _mean(reader, ids) for name, ids in history.items()}
        order = [name for name in JOBS for _ in range(runs // len(JOBS) + 1)][:runs]
        random.Random(15).shuffle(order)
        asked = time.time()
        ids = [trigger(client, _path(name)) for name in order]
        listed = {
            item["jobExecutionId"]: item
            for item in client.get("/api/job-execution/list-running").json()
        }
        for execution_id in ids:
            reader.wait_terminal(execution_id, timeout=1800)
    times = reader.times(ids)
    reader.close()
    predicted = {
        i: (listed[i]["queuePosition"], listed[i]["expectedStartTime"] / 1000)
        for i in ids
        if "queuePosition" in listed.get(i, {}) and listed[i]["expectedStartTime"] is not None
    }
    naive_each = sum(means.values()) / len(means)
    errors, signed, relative, naive = [], [], [], []
    for execution_id, (position, expected) in predicted.items():
        started = times[execution_id].started
        assert started is not None
        errors.append(abs(started - expected))
        signed.append(started - expected)
        waited = started - asked
        naive_guess = asked + (position - 1) // SLOTS * naive_each
        naive.append(abs(started - naive_guess))
        if waited > 1.0:
            relative.append(abs(started - expected) / waited)
    by_start = sorted(predicted, key=lambda i: times[i].started or 0.0)
    in_place = sum(1 for rank, i in enumerate(by_start, 1) if predicted[i][0] == rank)
    print(f"[{backend}] {runs} runs queued, {len(predicted)} with a prediction")
    print("  job means (s): " + ", ".join(f"{n} {m:.2f}" for n, m in means.items()))
    print(f"  |actual - expected start|  median {median(errors):.2f} s  p90 {_p90(errors):.2f} s")
    print(f"  actual - expected (bias)   median {median(signed):+.2f} s")
    print(f"  relative to the wait       median {median(relative):.0%}  p90 {_p90(relative):.0%}")
    print(f"  naive guess                median {median(naive):.2f} s  p90 {_p90(naive):.2f} s")
    print(f"  started in predicted order {in_place} of {len(predicted)}")
    sys.stdout.flush()
    return [
        Result(
            f"{backend}: start error median",
            median(errors),
            "s",
            median(naive),
            "naive median",
            "-",
            None,
        ),
        Result(
            f"{backend}: start error p90", _p90(errors), "s", _p90(naive), "naive p90", "-", None
        ),
        Result(
            f"{backend}: error / wait median",
            median(relative) * 100,
            "%",
            None,
            "-",
            "<= 25 %",
            median(relative) <= 0.25,
        ),
    ]


def _mean(reader: StoreReader, ids: list[int]) -> float:
    spans = [(t.finished or 0.0) - (t.started or 0.0) for t in reader.times(ids).values()]
    return sum(spans) / len(spans)


def _p90(values: list[float]) -> float:
    return percentile(values, 0.9)


def main() -> int:
    """Run on SQLite, then on PostgreSQL if it answers."""
    args = parse_args(__doc__.splitlines()[0])
    header("queue_estimate", args.quick)
    runs = 12 if args.quick else 40
    results: list[Result] = []
    with scratch("queue") as folder:
        with serve(folder / "sqlite") as server:
            results += measure(server, runs, "sqlite")
        if postgres_available():
            with postgres_database("queue") as url, serve(folder / "pg", url) as server:
                results += measure(server, runs, "postgres")
        else:
            print("PostgreSQL does not answer: skipped")
    summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
