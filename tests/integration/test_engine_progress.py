"""Progress of running statements: one long-lived poller thread per process serves every run."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from datamill.domain.status import JobKind
from datamill.engine.base import RunResult
from datamill.engine.duckdb import DuckDBEngine
from tests.integration.engine_fixtures import make_area

SLOW = "SELECT i % 1000 AS k, sum(i) AS s FROM range(100000000) t(i) GROUP BY ALL"
TRIVIAL = "SELECT 1 AS one"


def _workbook(sql: str) -> dict[str, object]:
    sheet = {"kind": "sql", "name": "out", "sql": sql, "keep": True}
    return {"kind": "workbook", "sheets": [sheet]}


def _progress_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "duckdb-progress"]


def test_two_runs_at_once_each_report_their_own_progress(tmp_path: Path) -> None:
    seen: dict[int, list[float]] = {0: [], 1: []}
    results: dict[int, RunResult] = {}
    errors: list[BaseException] = []

    def run_one(index: int) -> None:
        area = make_area(tmp_path / str(index), shared=index == 1)
        try:
            request = area.request(JobKind.WORKBOOK, _workbook(SLOW))
            results[index] = DuckDBEngine().run(request, seen[index].append)
        except BaseException as error:  # reported by the assertions below
            errors.append(error)

    for index in seen:
        (tmp_path / str(index)).mkdir()
    runs = [threading.Thread(target=run_one, args=(i,)) for i in seen]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(300)
    assert errors == []
    assert {i: r.sheets for i, r in results.items()} == {0: {"out": 1000}, 1: {"out": 1000}}
    for values in seen.values():
        assert values[-1] == 1.0 and values == sorted(values)
        assert len([p for p in values if 0.0 < p < 0.99]) >= 3, values
    # Both runs were served by one thread, which outlives them.
    assert len(_progress_threads()) == 1


def test_many_short_runs_share_the_poller(tmp_path: Path) -> None:
    area = make_area(tmp_path, shared=True)
    engine = DuckDBEngine(keep_warm=True)
    try:
        engine.run(area.request(JobKind.WORKBOOK, _workbook(SLOW)), lambda _: None)
        (poller,) = _progress_threads()
        for index in range(20):
            staging = area.data / ".staging" / f"short{index}"
            request = dataclasses.replace(
                area.request(JobKind.WORKBOOK, _workbook(TRIVIAL)), staging_dir=str(staging)
            )
            seen: list[float] = []
            result = engine.run(request, seen.append)
            assert result.sheets == {"out": 1}
            assert seen[-1] == 1.0
            engine.between_runs()
        assert _progress_threads() == [poller]
    finally:
        engine.close()
