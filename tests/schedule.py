"""The order test files are handed to pytest-xdist workers: the longest first.

scripts/test runs `--dist loadfile --no-loadscope-reorder`: each file goes
whole to the next free worker, in collection order. xdist's own order
(most tests first) hands out last the files with few but long tests (the
thousand triggers, the crash and retry rounds, TPC-H on Spark: one or two
tests of a minute or more each), so one worker ran them alone at the end
while the other had finished. Longest first, the short files fill the end.

A file's cost is estimated from what its tests start, so a new test is
weighed without editing this file; FILE_SECONDS corrects the few files whose
cost their fixtures do not show. Only the order changes: every file's tests
still run together, in their own order, on one worker.

The Spark files are one unit (`scope_of`): all of them go to one worker
(tests/conftest.py's scheduler), which starts the session's one Spark.
Handed out file by file, both workers started a Spark of their own (a JVM
and a Spark Connect server each, warmed up twice).
"""

from __future__ import annotations

import pytest

# Seconds of one test, by the costliest thing it starts (measured on the
# 2-core machine, roughly; only the order depends on them).
_FIXTURE_SECONDS = (
    ("cluster", 30.0),  # real `datamill serve`/`worker` processes, killed and restarted
    ("start_server", 4.0),  # a real uvicorn server
    ("worker", 2.0),  # an embedded worker and its two work horses
    ("running", 2.0),
    ("node", 0.5),  # a migrated store (a PostgreSQL clone)
    ("settings", 0.5),
    # A cell of the permission matrix on its module's world (tests/security/matrix.py):
    # the fixture is shared, but each cell builds its own target and sends its requests.
    ("world", 0.15),
)
_SPARK_SECONDS = 8.0
_OTHER_SECONDS = 0.05

# Files measured far above their fixtures' estimate (`--durations=0`, seconds
# of one worker on a quiet machine).
FILE_SECONDS = {
    "tests/hostile/test_crash.py": 90.0,
    "tests/hostile/test_load.py": 60.0,
    "tests/hostile/test_retries.py": 80.0,
    "tests/hostile/test_fuzz.py": 70.0,
    "tests/spark/test_spark_import_attacks.py": 60.0,
    "tests/security/test_logins.py": 55.0,
    "tests/spark/test_spark_tpch.py": 55.0,
}


# Directories whose files go to one worker together: what their session
# fixtures start is then started once (tests/spark: a Spark Connect server).
SHARED_SCOPES = ("tests/spark/",)


def scope_of(nodeid: str) -> str:
    """The unit a test goes to an xdist worker with: its file, or its shared directory."""
    path = nodeid.split("::", 1)[0]
    for folder in SHARED_SCOPES:
        if path.startswith(folder):
            return folder
    return path


def _test_seconds(item: pytest.Item) -> float:
    names = set(getattr(item, "fixturenames", ()))
    for name, seconds in _FIXTURE_SECONDS:
        if name in names:
            return seconds
    if item.get_closest_marker("spark") is not None:
        return _SPARK_SECONDS
    return _OTHER_SECONDS


def longest_files_first(items: list[pytest.Item]) -> None:
    """Reorder `items` unit by unit (`scope_of`), the costliest first; keep each file's order.

    Within a shared directory, its files go longest first as well.
    """
    cost: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        cost[path] = cost.get(path, 0.0) + _test_seconds(item)
    for path, seconds in FILE_SECONDS.items():
        if path in cost:
            cost[path] = max(cost[path], seconds)
    for path, seconds in list(cost.items()):
        scope = scope_of(path)
        if scope != path:
            cost[scope] = cost.get(scope, 0.0) + seconds
    position = {path: index for index, path in enumerate(cost)}
    items.sort(key=lambda item: _sort_key(item, cost, position))


def _sort_key(
    item: pytest.Item, cost: dict[str, float], position: dict[str, int]
) -> tuple[float, int, float, int]:
    path = item.nodeid.split("::", 1)[0]
    scope = scope_of(path)
    return (-cost[scope], position[scope], -cost[path], position[path])
