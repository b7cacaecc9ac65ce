"""A real Spark for the Spark engine's tests: one local Spark Connect server per session.

Started from the jars in the PySpark wheel (engine/spark/server.py), the same
server the engine starts when DATAMILL_SPARK_REMOTE is unset; the tests talk to
it through `spark_remote`, as to a cluster. Skipped without PySpark or Java,
except under CI=true, which must never pass by skipping.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamill.domain.status import JobKind
from datamill.engine.base import RunRequest
from datamill.settings import Settings
from tests.conftest import IN_CI
from tests.integration.engine_fixtures import Area, make_area

ENABLED = "duckdb,spark"
"""DATAMILL_ENGINES of every node here: only DuckDB is enabled unless the operator says so."""


def _missing() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "PySpark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None:
        return "no Java (apt-get install openjdk-17-jre-headless)"
    return None


@pytest.fixture(scope="session")
def spark_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a local Spark Connect server that lives for the test session."""
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"the Spark tests cannot run: {reason}")
        pytest.skip(reason)
    from datamill.engine.spark.server import LocalServer

    server = LocalServer(threads=2, memory="1g", temp_dir=str(tmp_path_factory.mktemp("spark")))
    try:
        server.wait(timeout=600)
        yield server.remote
    finally:
        server.close()


@pytest.fixture(scope="session")
def spark_engine(spark_remote: str) -> Iterator[Any]:
    """One Spark engine for the session (it keeps nothing between runs)."""
    from datamill.engine.spark.dispatch import SparkEngine

    engine = SparkEngine()
    try:
        yield engine
    finally:
        engine.close()


def worker_settings(tmp_path: Path, spark_remote: str, **extra: Any) -> Settings:
    """Settings of a node with one worker slot that knows where Spark is (SQLite metadata)."""
    return Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'meta.db'}",
        heartbeat_seconds=0.2,
        worker_lost_seconds=30.0,
        poll_seconds=0.2,
        shutdown_grace_seconds=5.0,
        stop_wait_seconds=20.0,
        engine_memory_limit="512MB",
        concurrency=1,
        spark_remote=spark_remote,
        # Jobs here name Spark (and DuckDB): the operator enabled both.
        engines=ENABLED,
        **extra,
    )


def spark_request(
    area: Area, remote: str, kind: JobKind, definition: dict[str, Any], **extra: Any
) -> RunRequest:
    """A request of `area` that runs on Spark at `remote`."""
    return area.request(kind, definition, engine="spark", spark_remote=remote, **extra)


def fresh_staging(area: Area) -> Path:
    """Empty the area's staging folder for the next run."""
    shutil.rmtree(area.staging, ignore_errors=True)
    return area.staging


@pytest.fixture
def area(tmp_path: Path) -> Area:
    """Fresh folders for one test."""
    return make_area(tmp_path)


BUCKET = "dm-lake"
"""The bucket of the object-store tests (tests/spark/test_spark_object_store.py)."""


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) on loopback, holding the bucket BUCKET."""
    import moto.server

    server = moto.server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        import pyarrow.fs as pafs

        pafs.S3FileSystem(
            access_key="test-key",
            secret_key="test-secret",
            endpoint_override=endpoint,
            region="us-east-1",
            allow_bucket_creation=True,
        ).create_dir(BUCKET)
        yield endpoint
    finally:
        server.stop()
