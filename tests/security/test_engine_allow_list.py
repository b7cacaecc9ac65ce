"""Engines the operator enables (DATAMILL_ENGINES): a job cannot pick one never set up.

With the default settings only DuckDB is enabled: a document naming Spark
would otherwise make every worker process start a local Spark, where the SQL
check is the only wall (docs/security.md, "Engines").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node, open_node
from datamill.domain.status import JobStatus
from datamill.errors import InvalidDefinition
from datamill.settings import Settings
from datamill.worker.worker import Worker
from tests.helpers import (
    admin,
    define,
    orders_import,
    password_hash,
    totals_workbook,
    wait_terminal,
)
from tests.security.conftest import Actors, auth

NOT_ENABLED = (
    "engine: the engine 'spark' is not enabled on this server"
    " (its operator enables engines with DATAMILL_ENGINES)"
)
IMP = "/Data/ImportJobs/orders.imp"
WBK = "/Data/Workbooks/totals.wbk"


def _workbook(path: str, **extra: Any) -> dict[str, Any]:
    sheets = [{"kind": "sql", "name": "x", "sql": "SELECT 1 AS one", "keep": True}]
    return {"path": path, "sheets": sheets, **extra}


def _with_spark(settings: Settings) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "engines": "duckdb,spark"})


@pytest.fixture
def spark_enabled(settings: Settings) -> Iterator[Node]:
    """A second node on the same store whose operator enabled Spark as well."""
    made = open_node(_with_spark(settings))
    yield made
    made.store.close()


def test_saving_a_workbook_naming_spark_is_a_400_under_the_default_settings(
    actors: Actors,
) -> None:
    for user in ("eve", "admin"):  # an operator's setting, not a permission: ADMIN too
        path = f"/Users/{user}/s.wbk" if user == "eve" else "/Data/s.wbk"
        response = actors.call(user, "POST", "/rest/workbook", _workbook(path, engine="spark"))
        assert response.status_code == 400, response.text
        assert NOT_ENABLED in response.json()["reason"]
        listed = actors.call(user, "GET", "/rest/workbook").json()
        assert path not in str(listed)
    # Naming the enabled engine (or none) is fine.
    saved = actors.call(
        "eve", "POST", "/rest/workbook", _workbook("/Users/eve/d.wbk", engine="duckdb")
    )
    assert saved.status_code == 200, saved.text


def test_changing_a_workbook_to_spark_is_a_400_and_keeps_the_stored_document(
    actors: Actors,
) -> None:
    created = actors.call("eve", "POST", "/rest/workbook", _workbook("/Users/eve/u.wbk"))
    assert created.status_code == 200, created.text
    config_id = created.json()["configuration-id"]
    changed = _workbook("/Users/eve/u.wbk", engine="spark")
    response = actors.call("eve", "PUT", f"/rest/workbook/{config_id}", changed)
    assert response.status_code == 400, response.text
    assert NOT_ENABLED in response.json()["reason"]
    stored = actors.call("eve", "GET", f"/rest/workbook/{config_id}").json()
    assert "engine" not in stored


def test_every_job_kind_naming_spark_is_refused_when_saved(node: Node, files_root: Path) -> None:
    definitions = {
        IMP: orders_import(files_root / "orders.csv"),
        WBK: totals_workbook(IMP),
        "/Data/ExportJobs/t.exp": {
            "source": {"workbook": WBK, "sheet": "totals"},
            "sink": {"kind": "csv", "path": str(files_root / "t.csv")},
        },
    }
    for path, definition in definitions.items():
        with pytest.raises(InvalidDefinition) as refused:
            define(node, path, definition | {"engine": "spark"})
        assert refused.value.message == NOT_ENABLED
        define(node, path, definition)  # the same document without it is saved


def test_a_workbook_naming_spark_is_saved_where_spark_is_enabled(spark_enabled: Node) -> None:
    spark_enabled.store.users.create("eve", password_hash("pw"))
    app = create_app(spark_enabled.settings, spark_enabled.jobs)
    with TestClient(app) as client:
        document = _workbook("/Users/eve/s.wbk", engine="spark")
        response = client.post("/rest/workbook", json=document, headers=auth("eve"))
        assert response.status_code == 200, response.text
        config_id = response.json()["configuration-id"]
        stored = client.get(f"/rest/workbook/{config_id}", headers=auth("eve")).json()
    assert stored["engine"] == "spark"


def test_a_job_saved_while_spark_was_enabled_ends_in_error_once_it_is_not(
    node: Node, spark_enabled: Node, worker: Worker, files_root: Path
) -> None:
    # Saved where the operator had enabled Spark; `node` and its worker run under
    # the default settings, as after the operator took Spark out of DATAMILL_ENGINES.
    document = _workbook(WBK, engine="spark")
    del document["path"]
    define(spark_enabled, WBK, document)
    run = wait_terminal(node, node.jobs.trigger(WBK, admin(node)).id)
    assert run.status is JobStatus.ERROR
    assert run.error_message == NOT_ENABLED.removeprefix("engine: ")
    assert run.success_count == 0


def test_the_default_engine_must_be_enabled_and_every_name_known(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).enabled_engines == {"duckdb"}
    assert Settings(home=tmp_path, engine="spark").enabled_engines == {"spark"}
    both = Settings(home=tmp_path, engines=" duckdb , spark")
    assert both.enabled_engines == {"duckdb", "spark"}
    with pytest.raises(pydantic.ValidationError, match=r"does not hold engine \(duckdb\)"):
        Settings(home=tmp_path, engines="spark")
    with pytest.raises(pydantic.ValidationError, match="unknown engines 'hive'"):
        Settings(home=tmp_path, engines="duckdb,hive")


def test_the_setting_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAMILL_ENGINES", "duckdb,spark")
    assert Settings(home=tmp_path).enabled_engines == {"duckdb", "spark"}
