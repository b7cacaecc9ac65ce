"""Time one import of a single wide JSON line or CSV row, statement by statement (N3).

python -m bench.wide_imports jsonl 1000            # no schema
python -m bench.wide_imports csv 1000 declared     # every column declared BIGINT
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.engine_fixtures import make_area, run_import

from datamill.engine.duckdb import session as engine

_original = engine.Session.execute
_log: list[tuple[float, str, int]] = []


def _timed(self: engine.Session, sql: str, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    try:
        return _original(self, sql, *args, **kwargs)
    finally:
        _log.append((time.perf_counter() - start, str(kwargs.get("context")), len(sql)))


def main() -> None:
    """Run one import and print its time and each statement's."""
    engine.Session.execute = _timed  # type: ignore[method-assign]
    kind, width = sys.argv[1], int(sys.argv[2])
    prefix = "k" if kind == "jsonl" else "c"
    with tempfile.TemporaryDirectory() as tmp:
        area = make_area(Path(tmp))
        path = area.sources / f"wide.{kind}"
        if kind == "jsonl":
            path.write_text(json.dumps({f"k{i}": i for i in range(width)}) + "\n")
        else:
            header = ",".join(f"c{i}" for i in range(width))
            path.write_text(header + "\n" + ",".join(str(i) for i in range(width)) + "\n")
        extra: dict[str, Any] = {}
        if len(sys.argv) > 3:
            extra["schema"] = [{"name": f"{prefix}{i}", "type": "BIGINT"} for i in range(width)]
        start = time.perf_counter()
        try:
            outcome: object = run_import(area, {"kind": kind, "path": str(path)}, **extra).status
        except Exception as error:  # the bound: a clear failure
            outcome = f"{type(error).__name__}: {error}"
        total = time.perf_counter() - start
    print(f"{kind} width={width}: {total:.2f} s -> {outcome}")
    for seconds, context, length in _log:
        print(f"  {seconds:8.3f} s  {context}  ({length} characters of SQL)")


if __name__ == "__main__":
    main()
