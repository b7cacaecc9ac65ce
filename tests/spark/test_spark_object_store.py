"""Object-store (s3a://) locations against a real S3 server (moto on loopback).

Imports read objects, exports publish one; the same location rules as for
folders hold (tests/security/test_locations.py): what eve may not read
answers as what does not exist, and no spelling of a key leaves its prefix.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.engine.base import PathRoots, ignore_event
from datamill.engine.object_publish import publish
from datamill.engine.registry import Engines
from datamill.errors import JobFailed
from datamill.settings import Settings
from datamill.store.runlog import read_log
from tests.helpers import wait_terminal
from tests.integration.engine_fixtures import make_area
from tests.security.conftest import Actors
from tests.security.conftest import actors as actors  # fixtures of this module's node
from tests.security.conftest import running as running
from tests.spark.conftest import BUCKET, worker_settings

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
    return worker_settings(
        tmp_path,
        spark_remote,
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


def _grant_others(actors: Actors, entry_id: int, **flags: bool) -> None:
    url = f"/api/filesystem/files/{entry_id}/permission/others"
    assert actors.call("admin", "PUT", url, flags).status_code == 200


@pytest.fixture
def lake(actors: Actors, prefix: str) -> str:
    """`/Connections/lake.loc` (everyone reads) on `<prefix>/in`, bob's private `bob.loc` inside."""
    shared = _location(actors, "lake.loc", f"s3a://{BUCKET}/{prefix}/in")
    _grant_others(actors, shared, readable=True)
    _location(actors, "bob.loc", f"s3a://{BUCKET}/{prefix}/in/bob")
    return f"s3a://{BUCKET}/{prefix}/in"


def test_an_s3_location_eve_may_not_read_answers_as_a_missing_one(
    actors: Actors, lake: str
) -> None:
    def save(path: str, location: str | None) -> Any:
        body = _import(path, location, "/Users/eve/x.imp")
        return actors.call("eve", "POST", "/rest/import-job", body)

    hidden, missing = save("x.csv", "/Connections/bob.loc"), save("x.csv", "/Connections/no.loc")
    assert hidden.status_code == missing.status_code == 400
    assert _reason(hidden).replace("bob.loc", "X") == _reason(missing).replace("no.loc", "X")
    # Named by URI: bob's prefix, the operator's root, another bucket - all alike.
    for uri in (f"{lake}/bob/x.csv", f"{lake}/../out/x.csv", "s3a://other-bucket/in/x.csv"):
        refused = save(uri, None)
        assert refused.status_code == 400, uri
        assert "not inside a location you may read from" in _reason(refused) or "'..'" in _reason(
            refused
        )
    # Inside the shared location, bob's more specific one still decides (N6).
    inner = save("bob/x.csv", "/Connections/lake.loc")
    assert inner.status_code == 400
    assert "not inside a location you may read from" in _reason(inner)
    # A root the operator dropped since: its locations are as if they did not exist.
    policy = actors.node.store.file_policy
    assert policy is not None
    local = tuple(r for r in policy.source_roots if "://" not in r)
    actors.node.store.file_policy = dataclasses.replace(policy, source_roots=local)
    try:
        dropped = save("x.csv", "/Connections/lake.loc")
        assert dropped.status_code == 400
        assert _reason(dropped) == _reason(missing).replace("no.loc", "lake.loc")
    finally:
        actors.node.store.file_policy = policy
    assert save("x.csv", "/Connections/lake.loc").status_code == 200
    # ADMIN may: the same definitions save.
    made = actors.call(
        "admin",
        "POST",
        "/rest/import-job",
        _import("x.csv", "/Connections/bob.loc", "/Data/ImportJobs/b.imp"),
    )
    assert made.status_code == 200, made.text


@pytest.mark.parametrize(
    "path",
    [
        "../x.csv",
        "a/../../x.csv",
        "a//x.csv",
        "./x.csv",
        "a/%2e%2e/x.csv",
        "%2e%2e%2fx.csv",
        "a\\..\\x.csv",
        "/x.csv",
        "x.csv%3FversionId=1",
        "x.csv#y",
    ],
)
def test_no_spelling_of_a_key_leaves_the_locations_prefix(
    actors: Actors, lake: str, path: str
) -> None:
    refused = actors.call(
        "eve",
        "POST",
        "/rest/import-job",
        _import(path, "/Connections/lake.loc", "/Users/eve/x.imp"),
    )
    assert refused.status_code == 400, refused.text
    assert "lake.loc" not in _reason(refused) or "must" in _reason(refused)


def test_a_definition_cannot_bring_its_own_endpoint_or_credentials(
    actors: Actors, lake: str
) -> None:
    for extra in ({"endpoint": "http://127.0.0.1:1"}, {"accessKey": "k", "secretKey": "s"}):
        body = _import("x.csv", "/Connections/lake.loc", "/Users/eve/x.imp")
        body["source"] |= extra
        refused = actors.call("eve", "POST", "/rest/import-job", body)
        assert refused.status_code == 400, refused.text


def test_location_folders_must_be_s3a_prefixes_inside_an_object_store_root(
    actors: Actors, prefix: str
) -> None:
    for folder in (
        f"s3a://{BUCKET}/elsewhere",
        f"s3a://{BUCKET}/{prefix}/in/../../elsewhere",
        f"s3a://{BUCKET}/{prefix}/in%2f..%2f..",
        f"s3a://other-bucket/{prefix}/in",
        f"s3://{BUCKET}/{prefix}/in",
        f"hdfs://namenode/{prefix}/in",
    ):
        body = {"path": "/Connections/bad.loc", "folder": folder}
        refused = actors.call("admin", "POST", "/rest/location", body)
        assert refused.status_code == 400, (folder, refused.text)
    good = f"s3a://{BUCKET}/{prefix}/in/team/"
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": "/Connections/t.loc", "folder": good}
    )
    assert made.status_code == 200, made.text
    shown = actors.call("admin", "GET", f"/rest/location/{made.json()['id']}").json()
    assert shown["folder"] == good.rstrip("/")


def test_eve_imports_a_glob_and_exports_where_she_may_and_loses_it_when_revoked(
    running: Actors, s3: pafs.S3FileSystem, lake: str, prefix: str
) -> None:
    for key, rows in (("data/a.csv", ORDERS), ("data/b.csv", ORDERS), ("data/.c.csv", ORDERS)):
        _put(s3, f"{prefix}/in/{key}", rows)
    # bob's private prefix lies inside the shared one: the glob skips it (N6).
    _put(s3, f"{prefix}/in/bob/secret.csv", ORDERS)
    imp = _import("*/*.csv", "/Connections/lake.loc", "/Users/eve/glob.imp")
    assert running.call("eve", "POST", "/rest/import-job", imp).status_code == 200
    first = _run(running, "eve", "/Users/eve/glob.imp")
    # a.csv and b.csv: not the hidden one, nothing from bob's location.
    assert first.status is JobStatus.COMPLETED, first.error_message
    assert first.counters["IMPORT_RECORDS"] == 60
    drop = _location(running, "drop.loc", f"s3a://{BUCKET}/{prefix}/out/eve")
    mine = {"kind": "csv", "path": "all.csv", "location": "/Connections/drop.loc"}
    export = {"path": "/Users/eve/all.exp", "source": {"importJob": "/Users/eve/glob.imp"}}
    refused = running.call("eve", "POST", "/rest/export-job", export | {"sink": mine})
    assert refused.status_code == 400 and "does not exist or you may not write" in _reason(refused)
    _grant_others(running, drop, readable=True, writable=True)
    assert (
        running.call("eve", "POST", "/rest/export-job", export | {"sink": mine}).status_code == 200
    )
    exported = _run(running, "eve", "/Users/eve/all.exp")
    assert exported.status is JobStatus.COMPLETED, exported.error_message
    assert _keys(s3, f"{prefix}/out") == [f"{prefix}/out/eve/all.csv"]
    # READ revoked after saving: the next run fails as for a missing location.
    lake_id = next(
        i["id"]
        for i in running.call("admin", "GET", "/rest/location").json()
        if i["path"] == "/Connections/lake.loc"
    )
    _grant_others(running, int(lake_id), readable=False)
    again = _run(running, "eve", "/Users/eve/glob.imp")
    assert again.status is JobStatus.ERROR
    assert "location '/Connections/lake.loc' does not exist or you may not read from it" in str(
        again.error_message
    )


def test_an_export_is_invisible_until_published_and_a_failed_import_leaves_nothing(
    tmp_path: Path, settings: Settings, s3: pafs.S3FileSystem, prefix: str
) -> None:
    (tmp_path / "area").mkdir()
    area = make_area(tmp_path / "area")
    source = area.sources / "orders.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3]}), source)
    sink = f"s3a://{BUCKET}/{prefix}/out/n.csv"
    request = dataclasses.replace(
        area.request(
            JobKind.EXPORT,
            {"source": {"importJob": "/x.imp"}, "sink": {"kind": "csv", "path": sink}},
            inputs={"source": str(source)},
            object_store=settings.object_store,
        ),
        roots=PathRoots((), (f"s3a://{BUCKET}/{prefix}/out",)),
    )
    engines = Engines("duckdb")
    try:
        result = engines.run(request, lambda _: None, ignore_event)
        # The run is over but not published (a worker that dies now publishes nothing):
        # only a hidden temporary object exists, never a part of the sink's.
        ((hidden, final),) = result.moves
        assert final == sink
        assert _keys(s3, f"{prefix}/out") == [hidden.removeprefix(f"s3a://{BUCKET}/")]
        assert hidden.rsplit("/", 1)[1].startswith(".datamill-")
        assert settings.object_store is not None
        publish(settings.object_store, hidden, final)
        assert _keys(s3, f"{prefix}/out") == [f"{prefix}/out/n.csv"]
        with s3.open_input_stream(f"{BUCKET}/{prefix}/out/n.csv") as handle:
            assert handle.read().decode().split() == ["n", "1", "2", "3"]
        # An import that fails (FAIL mode, a bad record): no copy stays in staging.
        _put(s3, f"{prefix}/in/bad.csv", "n\n1\nx\n")
        failing = dataclasses.replace(
            area.request(
                JobKind.IMPORT,
                {
                    "source": {"kind": "csv", "path": f"s3a://{BUCKET}/{prefix}/in/bad.csv"},
                    "schema": [{"name": "n", "type": "BIGINT"}],
                    "errorMode": "FAIL",
                },
                object_store=settings.object_store,
            ),
            roots=PathRoots((f"s3a://{BUCKET}/{prefix}/in",), ()),
        )
        with pytest.raises(JobFailed) as failed:
            engines.run(failing, lambda _: None, ignore_event)
        assert f"s3a://{BUCKET}/{prefix}/in/bad.csv" in failed.value.message or "'x'" in (
            failed.value.message
        )
        assert "_objects" not in failed.value.message
        assert not (area.staging / "_objects").exists()
    finally:
        engines.close()
