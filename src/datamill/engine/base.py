"""The Engine protocol and the records that cross the worker/engine boundary.

A request names its inputs as dataset locations and a staging folder for its
outputs, so an engine can run in a child process, on another node, or on a
cluster without reaching into the store. Everything here pickles.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol

from datamill.domain.runlog import PendingEvent
from datamill.domain.status import JobKind, JobStatus
from datamill.engine.objects import ObjectStore

ProgressCallback = Callable[[float], None]
"""Called with the fraction done (0.0 to 1.0) while a run goes on."""

EventCallback = Callable[[PendingEvent], None]
"""Called with each event of the run's log as it happens (sources read, sheets, drops)."""


def ignore_event(event: PendingEvent) -> None:
    """An EventCallback for callers that keep no log."""
    del event


@dataclasses.dataclass(frozen=True, slots=True)
class PathRoots:
    """Folders that sources may read from and sinks may write to.

    Per run: only the folders of the locations this run's owner may read
    (sources) or write (sinks), resolved by the worker (worker/inputs.py).
    """

    source_roots: tuple[str, ...]
    sink_roots: tuple[str, ...]
    # Folders of more specific locations inside those roots that this run's
    # owner may not use (N6): never read or written, globs skip them.
    excluded: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything an engine needs to run one execution."""

    execution_id: int
    kind: JobKind
    definition: dict[str, Any]
    # Workbooks: data-sheet name -> Parquet file. Exports: "source" -> Parquet file.
    inputs: dict[str, str]
    # Values given for this run; defaults of the workbook fill the rest.
    variables: dict[str, Any]
    # The engine writes outputs only below this folder; the worker publishes them.
    staging_dir: str
    roots: PathRoots
    memory_limit: str = "2GB"
    threads: int = 2
    temp_dir: str | None = None
    # Database URLs that user sources and sinks must never point at (the metadata store).
    forbidden_database_urls: tuple[str, ...] = ()
    # Run in a connection of a database the engine keeps for its process, locked
    # down to data_root, the spill folder and the source roots, instead of a
    # fresh database locked down to this run's own files (see docs/decisions.md).
    shared_database: bool = False
    # The folder of published data and staging; only read with shared_database.
    data_root: str | None = None
    # Every configured source and sink root (operator-wide, the same for every
    # run): what the shared database of imports and exports may open. Empty:
    # the run's own `roots.source_roots`.
    file_roots: tuple[str, ...] = ()
    # At most this many files may a source glob match.
    max_source_files: int = 10_000
    # At most this many bytes may the objects of an s3a:// source add up to
    # (settings.source_max_bytes; None: only the staging disk's free space).
    max_source_bytes: int | None = None
    # Which start of the execution this is (1 unless retried or handed back), and
    # the run's name in marker tables of database sinks: unique per installation
    # and execution, the same across its attempts (engine/duckdb/exports.py).
    attempt: int = 1
    run_key: str = ""
    # The engine of a definition that names none (settings.engine), and where
    # Spark is (settings.spark_remote; None: local mode). See engine/registry.py.
    engine: str = "duckdb"
    spark_remote: str | None = None
    # 'paths': the Spark server cannot open the worker's /proc/<pid>/fd even on
    # this machine (settings.spark_file_access; engine/held.py).
    spark_file_access: Literal["auto", "paths"] = "auto"
    # A random id of this attempt, the same in the worker and its work horse:
    # an engine names the work it leaves elsewhere by it (Spark's session id),
    # so the worker can cancel that work after killing the run's process.
    attempt_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    # The id of the work horse that runs the request, set by the worker when it
    # hands the request over: an engine may keep one session elsewhere for all
    # the runs of its horse (Spark's session), which the worker, after killing
    # the horse, cancels by this id. None: the engine's own choice.
    horse_session: str | None = None
    # How to reach the object store of s3a:// locations (the operator's
    # settings, credentials included; engine/object_runs.py). None: none configured.
    object_store: ObjectStore | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """What a successful run produced, still staged and invisible to users."""

    status: JobStatus
    success_count: int
    failure_count: int
    counters: dict[str, int]
    # Kept sheet name -> record count; each is staged as <staging_dir>/<name>.parquet.
    sheets: dict[str, int]
    # Export files to move into place when the run is published: (staged, final).
    moves: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()


class Engine(Protocol):
    """Runs one job definition and stages its output.

    Every engine is a package laid out the same way (engine/duckdb, engine/spark):
    imports, workbooks and exports, one module each, the run's session, and
    dispatch, which holds the class that implements this protocol.
    """

    def run(
        self, request: RunRequest, progress: ProgressCallback, events: EventCallback = ...
    ) -> RunResult:
        """Run the request, telling `events` what happens; raise a DatamillError on failure."""
        ...

    def between_runs(self) -> None:
        """Tidy up after a run, off the critical path (the answer was sent already)."""
        ...

    def close(self) -> None:
        """Release everything the engine holds."""
        ...
