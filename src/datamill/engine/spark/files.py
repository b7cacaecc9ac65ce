"""Writing one Spark result as one file, the way every Datamill dataset is stored.

Spark writes a folder of part files; a run's result is one file, so the
result is written into a hidden folder next to the target and its single
part file moved into place. The target is in the run's staging folder, which
the worker publishes atomically (or removes when the run fails).
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from datamill.errors import JobFailed

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

FORMATS = ("parquet", "csv", "json")


def write_one_file(
    frame: DataFrame, target: str, kind: str = "parquet", options: dict[str, Any] | None = None
) -> None:
    """Write `frame` as the single file `target` (parquet, csv or json lines)."""
    assert kind in FORMATS
    folder = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.spark")
    shutil.rmtree(folder, ignore_errors=True)
    # One partition keeps the rows in the frame's order (ORDER BY) in one file.
    writer = frame.coalesce(1).write.mode("overwrite").options(**(options or {}))
    getattr(writer, kind)(folder)
    parts = [n for n in os.listdir(folder) if n.startswith("part-") and not n.endswith(".crc")]
    if len(parts) != 1:
        shutil.rmtree(folder, ignore_errors=True)
        raise JobFailed(f"Spark wrote {len(parts)} files where one was expected")
    os.replace(os.path.join(folder, parts[0]), target)
    shutil.rmtree(folder, ignore_errors=True)
