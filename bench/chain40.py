"""A chain of 40 trivial jobs, strictly one after another, through one sequential trigger.

wb_00 is a workbook with one kept SQL sheet (`SELECT 1 AS one`); wb_01 .. wb_39
are DATA_DRIVEN workbooks, each reading the previous one's kept sheet through
a data sheet and keeping `SELECT one + 1 AS one FROM prev`. One
`POST /api/job-execution/sequential-trigger {fileIds: [wb_00]}` plans all 40;
each starts only after the one before it has completed.

Judged (what a user experiences): wall time from the moment the client sends
the sequential-trigger request to the last COMPLETED (the last execution's
finished_at in the store, same host and clock as the client's time.time()).
Information: the same from the trigger's response, which leaves out the
planning of the 40 runs inside the request. The hand-off (previous
finished_at -> next started_at) and the run time (started_at -> finished_at)
per link are printed to show where the time goes.

Baseline: 40 x the median time from trigger request sent to COMPLETED of one
trivial workbook on its own, measured on the same server in the same run.
Target: <= 2 s (published figures for such a chain: Airflow ~116 s, Prefect ~4.9 s).
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
    postgres_available,
    postgres_database,
    scratch,
    serve,
    summary,
    trigger,
    trivial_workbook,
    wait_warm,
)

LINKS = 40
SINGLE = "/Analytics/Workbooks/single.wbk"


def link_path(index: int) -> str:
    """The path of the chain's `index`th workbook."""
    return f"/Analytics/Workbooks/chain/wb_{index:02d}.wbk"


def define_chain(server: Server) -> None:
    """wb_00 (manual) and 39 data-driven workbooks, each reading the one before."""
    with server.client() as client:
        define(client, "workbook", trivial_workbook(link_path(0)))
        for index in range(1, LINKS):
            define(
                client,
                "workbook",
                {
                    "path": link_path(index),
                    "triggering": {"mode": "DATA_DRIVEN"},
                    "sheets": [
                        {
                            "kind": "data",
                            "name": "prev",
                            "source": {"workbook": link_path(index - 1), "sheet": "out"},
                        },
                        {
                            "kind": "sql",
                            "name": "out",
                            "keep": True,
                            "sql": "SELECT one + 1 AS one FROM prev",
                        },
                    ],
                },
            )
        define(client, "workbook", trivial_workbook(SINGLE))


def run_chain(server: Server, reader: StoreReader) -> tuple[float, float, list[float], list[float]]:
    """One chain: seconds from request sent and from response to last COMPLETED, hand-offs, runs."""
    with server.client() as client:
        sent = time.time()
        response = client.post(
            "/api/job-execution/sequential-trigger", json={"fileIds": [link_path(0)]}
        )
        responded = time.time()
        response.raise_for_status()
    plan = [m["job-execution-id"] for m in response.json()["execution-plan"]]
    if len(plan) != LINKS:
        raise RuntimeError(f"the plan has {len(plan)} members, not {LINKS}")
    status = reader.wait_terminal(plan[-1], timeout=300, pause=0.002)
    if status != "COMPLETED":
        raise RuntimeError(f"the last link ended {status}")
    times = reader.times(plan)
    rows = [times[i] for i in plan]
    if any(r.status != "COMPLETED" for r in rows):
        raise RuntimeError(f"links did not complete: {[r.status for r in rows]}")
    starts = [r.started or 0.0 for r in rows]
    ends = [r.finished or 0.0 for r in rows]
    handoffs = [starts[i] - ends[i - 1] for i in range(1, LINKS)]
    runs = [ends[i] - starts[i] for i in range(LINKS)]
    return ends[-1] - sent, ends[-1] - responded, handoffs, runs


def single_runs(server: Server, reader: StoreReader, count: int) -> list[float]:
    """Seconds from trigger request sent to COMPLETED of the standalone trivial workbook."""
    durations = []
    with server.client() as client:
        for _ in range(count):
            sent = time.time()
            execution_id = trigger(client, SINGLE)
            reader.wait_terminal(execution_id, pause=0.002)
            finished = reader.times([execution_id])[execution_id].finished
            assert finished is not None
            durations.append(finished - sent)
    return durations


def measure(server: Server, repeats: int, singles: int, backend: str) -> list[Result]:
    """Baseline runs and `repeats` chains; the summary lines."""
    wait_warm(server)
    define_chain(server)
    reader = StoreReader(server.database_url)
    single_runs(server, reader, 3)  # warm-up: first login, first runs in the children
    run_chain(server, reader)
    one_runs = single_runs(server, reader, singles)
    totals, from_response, handoffs, runs = [], [], [], []
    for _ in range(repeats):
        total, after_response, handoff, run = run_chain(server, reader)
        totals.append(total)
        from_response.append(after_response)
        handoffs += handoff
        runs += run
    reader.close()
    baseline = LINKS * median(one_runs)
    print(f"[{backend}] {repeats} chains of {LINKS}")
    print(f"  one trivial run (sent -> COMPLETED)  median {ms(median(one_runs))}")
    print(
        f"  chain totals, request sent -> last COMPLETED  {', '.join(f'{t:.2f}s' for t in totals)}"
    )
    print(f"  (info) from the response  {', '.join(f'{t:.2f}s' for t in from_response)}")
    print(
        f"  per link: hand-off median {ms(median(handoffs))}, run median {ms(median(runs))}",
        flush=True,
    )
    total = median(totals)
    return [
        Result(
            f"{backend}: chain of 40 from sent, median",
            total,
            "s",
            baseline,
            "40 x one run",
            "<= 2 s",
            total <= 2.0,
        ),
        Result(
            f"{backend}: chain of 40, best",
            min(totals),
            "s",
            baseline,
            "40 x one run",
            "<= 2 s",
            None,
        ),
        Result(
            f"{backend}: (info) response -> last, median",
            median(from_response),
            "s",
            baseline,
            "40 x one run",
            "-",
            None,
        ),
    ]


def main() -> int:
    """Run on SQLite, then on PostgreSQL if it answers."""
    args = parse_args(__doc__.splitlines()[0])
    header("chain40", args.quick)
    repeats, singles = (2, 20) if args.quick else (10, 40)
    results: list[Result] = []
    with scratch("chain") as folder:
        with serve(folder / "sqlite") as server:
            results += measure(server, repeats, singles, "sqlite")
        if postgres_available():
            with postgres_database("chain") as url, serve(folder / "pg", url) as server:
                results += measure(server, repeats, singles, "postgres")
        else:
            print("PostgreSQL does not answer: skipped")
    summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
