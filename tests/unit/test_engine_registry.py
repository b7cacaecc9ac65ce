"""Engine selection: a definition's `engine`, else the worker's DATAMILL_ENGINE."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from datamill.domain.definitions import dump_definition
from datamill.domain.status import JobKind
from datamill.engine.base import PathRoots, RunRequest
from datamill.engine.registry import Engines, engine_name, make_engine
from datamill.errors import InvalidDefinition, InvalidInput
from datamill.services.jobs import parse_definition
from datamill.settings import Settings

WORKBOOK = {"sheets": [{"kind": "sql", "name": "one", "sql": "SELECT 1 AS x", "keep": True}]}


def _request(tmp_path: Path, definition: dict[str, object], engine: str = "duckdb") -> RunRequest:
    return RunRequest(
        execution_id=1,
        kind=JobKind.WORKBOOK,
        definition=definition,
        inputs={},
        variables={},
        staging_dir=str(tmp_path / "staging"),
        roots=PathRoots((), ()),
        engine=engine,
    )


def test_the_definition_names_the_engine_else_the_workers_setting_does(tmp_path: Path) -> None:
    assert engine_name(_request(tmp_path, WORKBOOK)) == "duckdb"
    assert engine_name(_request(tmp_path, WORKBOOK, engine="spark")) == "spark"
    named = WORKBOOK | {"engine": "duckdb"}
    assert engine_name(_request(tmp_path, named, engine="spark")) == "duckdb"
    assert engine_name(_request(tmp_path, WORKBOOK | {"engine": "spark"})) == "spark"


def test_settings_default_to_duckdb_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().engine == "duckdb"
    assert Settings().spark_remote is None
    monkeypatch.setenv("DATAMILL_ENGINE", "spark")
    monkeypatch.setenv("DATAMILL_SPARK_REMOTE", "sc://spark.example:15002")
    assert Settings().engine == "spark"
    assert Settings().spark_remote == "sc://spark.example:15002"


def test_how_spark_reads_source_files_is_auto_unless_the_operator_says_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().spark_file_access == "auto"
    monkeypatch.setenv("DATAMILL_SPARK_FILE_ACCESS", "paths")
    assert Settings().spark_file_access == "paths"
    # Nothing forces /proc reading: a misspelt value is refused, not guessed.
    monkeypatch.setenv("DATAMILL_SPARK_FILE_ACCESS", "held")
    with pytest.raises(ValidationError, match="spark_file_access"):
        Settings()


def test_a_definition_may_name_a_known_engine_only() -> None:
    parsed = parse_definition(JobKind.WORKBOOK, WORKBOOK | {"engine": "spark"})
    assert dump_definition(parsed)["engine"] == "spark"
    # Absent stays absent: stored documents of version 1 are unchanged.
    assert "engine" not in dump_definition(parse_definition(JobKind.WORKBOOK, WORKBOOK))
    with pytest.raises(InvalidDefinition, match="engine"):
        parse_definition(JobKind.WORKBOOK, WORKBOOK | {"engine": "hive"})


def test_an_unknown_engine_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown engine 'hive'"):
        make_engine("hive")


def test_engines_run_a_request_on_the_engine_it_names(tmp_path: Path) -> None:
    engines = Engines("duckdb")
    try:
        result = engines.run(_request(tmp_path, WORKBOOK), lambda _: None, lambda _: None)
    finally:
        engines.close()
    assert result.sheets == {"one": 1}
    assert (tmp_path / "staging" / "one.parquet").is_file()
