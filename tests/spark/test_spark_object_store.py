"""Object-store (s3a://) locations against a real S3 server (moto on loopback).

Imports read objects, exports publish one; the same location rules as for
folders hold (tests/security/test_locations.py): what eve may not read
answers as what does not exist, and no spelling of a key leaves its prefix.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from datamill.domain.status import JobStatus
from datamill.settings import Settings
from datamill.store.runlog import read_log
from tests.helpers import wait_terminal
from tests.security.conftest import Actors
from tests.security.conftest import actors as actors  # fixtures of this module's node
from tests.security.conftest import running as running
from tests.spark.conftest import BUCKET, ENABLED

pytestmark = pytest.mark.spark
ORDERS = "order_id,region,amount\n" + "".join(
    f"{i},{('north', 'south', 'east')[i % 3]},{i * 10}\n" for i in range(1, 31)
)
SCHEMA = [
    {"name": "order_id", "type": "BIGINT"},
    {"name": "region", "type": "VARCHAR"},
    {"name": "amount", "type": "DOUBLE"},
]


@pytest.fixture
def prefix() -> str:
    """A prefix of the bucket of this test alone."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(tmp_path: Path, s3_endpoint: str, spark_remote: str, prefix: str) -> Settings:
    """A node whose source and sink roots include the test's S3 prefixes."""
    home = tmp_path / "home"
    return Settings(
        home=home,
        database_url=f"sqlite:///{tmp_path / 'meta.db'}",
        heartbeat_seconds=0.2,
        worker_lost_seconds=30.0,
        poll_seconds=0.2,
        shutdown_grace_seconds=5.0,
        stop_wait_seconds=20.0,
        engine_memory_limit="512MB",
        concurrency=1,
        spark_remote=spark_remote,
        engines=ENABLED,
        source_roots=[home / "files", f"s3a://{BUCKET}/{prefix}/in"],
        sink_roots=[home / "files", f"s3a://{BUCKET}/{prefix}/out"],
        s3_endpoint=s3_endpoint,
        s3_access_key_id="test-key",
        s3_secret_access_key="test-secret",
    )


@pytest.fixture
def s3(settings: Settings) -> Iterator[pafs.S3FileSystem]:
    """The test's view of the bucket (the operator's credentials)."""
    store = settings.object_store
    assert store is not None
    yield store.filesystem()


def _put(fs: pafs.S3FileSystem, key: str, text: str) -> None:
    with fs.open_output_stream(f"{BUCKET}/{key}") as out:
        out.write(text.encode())


def _keys(fs: pafs.S3FileSystem, prefix: str) -> list[str]:
    selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    return sorted(
        i.path.partition("/")[2] for i in fs.get_file_info(selector) if i.type == pafs.FileType.File
    )


def _log(actors: Actors, execution_id: int) -> list[Any]:
    with actors.node.store.db.read() as conn:
        return [(e.event, e.detail) for e in read_log(conn, execution_id)]


def _reason(response: Any) -> str:
    return str(response.json()["reason"])


def _run(actors: Actors, user: str, path: str) -> Any:
    started = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert started.status_code == 200, started.text
    return wait_terminal(actors.node, started.json()["job-execution-id"], timeout=300)


def _location(actors: Actors, name: str, folder: str) -> int:
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": f"/Connections/{name}", "folder": folder}
    )
    assert made.status_code == 200, made.text
    return int(made.json()["id"])


def _import(path: str, location: str | None, name: str, **extra: Any) -> dict[str, Any]:
    source: dict[str, Any] = {"kind": "csv", "path": path}
    if location is not None:
        source["location"] = location
    return {"path": name, "source": source, "schema": SCHEMA} | extra


def test_import_from_s3_read_by_a_workbook_and_exported_to_s3(
    running: Actors, s3: pafs.S3FileSystem, prefix: str
) -> None:
    _put(s3, f"{prefix}/in/sales/orders.csv", ORDERS + "31,west,not-a-number\n")
    source = f"s3a://{BUCKET}/{prefix}/in/sales/orders.csv"
    imp = "/Data/ImportJobs/s3.imp"
    made = running.call(
        "admin",
        "POST",
        "/rest/import-job",
        _import(source, None, imp, engine="spark", errorMode="DROP_RECORD"),
    )
    assert made.status_code == 200, made.text
    imported = _run(running, "admin", imp)
    assert imported.status is JobStatus.COMPLETED_WITH_WARNINGS, imported.error_message
    assert (imported.counters["IMPORT_RECORDS"], imported.counters["IMPORT_DROPPED_RECORDS"]) == (
        30,
        1,
    )
    # The run's log names the object it read, never the copy the engine read.
    shown = str(_log(running, imported.id))
    assert source in shown and "_objects" not in shown
    wbk = "/Analytics/Workbooks/s3.wbk"
    workbook = {
        "path": wbk,
        "engine": "spark",
        "sheets": [
            {"kind": "data", "name": "orders", "source": {"importJob": imp}},
            {
                "kind": "sql",
                "name": "totals",
                "keep": True,
                "sql": "SELECT region, count(*) AS n FROM orders GROUP BY region ORDER BY region",
            },
        ],
    }
    assert running.call("admin", "POST", "/rest/workbook", workbook).status_code == 200
    read_back = _run(running, "admin", wbk)
    assert read_back.status is JobStatus.COMPLETED, read_back.error_message
    sink = f"s3a://{BUCKET}/{prefix}/out/reports/totals.csv"
    exp = {
        "path": "/Data/ExportJobs/s3.exp",
        "engine": "spark",
        "source": {"workbook": wbk, "sheet": "totals"},
        "sink": {"kind": "csv", "path": sink},
    }
    assert running.call("admin", "POST", "/rest/export-job", exp).status_code == 200
    exported = _run(running, "admin", "/Data/ExportJobs/s3.exp")
    assert exported.status is JobStatus.COMPLETED, exported.error_message
    # The one object published, no temporary object left next to it.
    assert _keys(s3, f"{prefix}/out") == [f"{prefix}/out/reports/totals.csv"]
    with s3.open_input_stream(f"{BUCKET}/{prefix}/out/reports/totals.csv") as handle:
        rows = list(csv.DictReader(io.TextIOWrapper(handle, "utf-8")))
    assert {r["region"]: int(r["n"]) for r in rows} == {"east": 10, "north": 10, "south": 10}
