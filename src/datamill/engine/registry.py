"""Which engine runs a request: the definition's `engine`, else the worker's setting.

The worker and its work horses know engines only by name through this module;
each engine package is imported the first time a run needs it, so a worker
that never runs Spark never imports PySpark.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection

from datamill.engine.base import Engine, EventCallback, ProgressCallback, RunRequest, RunResult
from datamill.engine.object_runs import run_with_objects
from datamill.errors import InvalidInput

# Engine name -> "module:class" of its Engine; the class takes `keep_warm`.
ENGINES = {
    "duckdb": "datamill.engine.duckdb.dispatch:DuckDBEngine",
    "spark": "datamill.engine.spark.dispatch:SparkEngine",
}


def engine_name(request: RunRequest) -> str:
    """The engine that runs `request`: the one its definition names, else the worker's."""
    named = request.definition.get("engine")
    return named if isinstance(named, str) else request.engine


def not_enabled(name: str, enabled: Collection[str]) -> str | None:
    """Why a job naming engine `name` may not run where `enabled` are; None: it may.

    Checked when a job is saved and again when it runs (the operator may have
    narrowed DATAMILL_ENGINES since): a job cannot make a worker start an
    engine its operator never set up (docs/security.md, "Engines").
    """
    if name in enabled:
        return None
    return (
        f"the engine {name!r} is not enabled on this server"
        " (its operator enables engines with DATAMILL_ENGINES)"
    )


def make_engine(name: str, *, keep_warm: bool = False) -> Engine:
    """A new engine of the given name."""
    target = ENGINES.get(name)
    if target is None:
        raise InvalidInput(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}")
    module, _, cls = target.partition(":")
    made: Engine = getattr(importlib.import_module(module), cls)(keep_warm=keep_warm)
    return made


def interrupt(request: RunRequest) -> None:
    """Cancel what `request` left running outside this machine (a Spark cluster's jobs).

    Called by the worker after it killed the run's process; an engine whose work
    dies with that process has nothing to do.
    """
    if engine_name(request) == "spark" and request.spark_remote:
        from datamill.engine.spark.session import interrupt_run

        interrupt_run(request)


class Engines:
    """Runs each request on its engine, making each engine once, on first use."""

    def __init__(self, default: str = "duckdb", *, keep_warm: bool = False) -> None:
        self._keep_warm = keep_warm
        self._engines: dict[str, Engine] = {}
        # The default engine is made at once: its imports are paid before work arrives.
        self._get(default)

    def _get(self, name: str) -> Engine:
        engine = self._engines.get(name)
        if engine is None:
            engine = self._engines[name] = make_engine(name, keep_warm=self._keep_warm)
        return engine

    def run(
        self, request: RunRequest, progress: ProgressCallback, events: EventCallback
    ) -> RunResult:
        """Run `request` on its engine."""
        engine = self._get(engine_name(request))
        # Object-store sources and sinks become local files for either engine.
        return run_with_objects(
            request, lambda local, named: engine.run(local, progress, named), events
        )

    def between_runs(self) -> None:
        """Let every engine tidy up after a run."""
        for engine in self._engines.values():
            engine.between_runs()

    def close(self) -> None:
        """Close every engine made."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
