"""Job definitions: validation messages and round-trips."""

from __future__ import annotations

import pytest

from datamill.domain.definitions import dump_definition, upstream_references
from datamill.domain.status import JobKind
from datamill.errors import InvalidDefinition, InvalidInput
from datamill.services.jobs import parse_definition

WORKBOOK = {
    "variables": {"min": {"type": "BIGINT", "default": 3}},
    "sheets": [
        {"kind": "data", "name": "orders", "source": {"importJob": "/Data/ImportJobs/o.imp"}},
        {"kind": "sql", "name": "big", "sql": "SELECT * FROM orders", "keep": True},
    ],
}


def test_a_dumped_definition_parses_back_to_the_same_definition() -> None:
    for kind, raw in (
        (JobKind.WORKBOOK, WORKBOOK),
        (
            JobKind.IMPORT,
            {
                "source": {"kind": "csv", "path": "/x.csv"},
                "schema": [{"name": "a", "type": "BIGINT"}],
            },
        ),
        (
            JobKind.EXPORT,
            {
                "source": {"workbook": "/w.wbk", "sheet": "big"},
                "sink": {"kind": "database", "url": "sqlite:///x.db", "table": "t"},
            },
        ),
    ):
        definition = parse_definition(kind, raw)
        dumped = dump_definition(definition)
        assert parse_definition(kind, dumped) == definition
        assert dump_definition(parse_definition(kind, dumped)) == dumped


def test_errors_name_the_member() -> None:
    bad = dict(WORKBOOK, sheets=[{"kind": "sql", "name": "x", "sql": ""}])
    with pytest.raises(InvalidDefinition, match=r"sheets\[0\]\.sql\.sql"):
        parse_definition(JobKind.WORKBOOK, bad)
    with pytest.raises(InvalidDefinition, match="at least one sheet needs 'keep'"):
        parse_definition(
            JobKind.WORKBOOK, dict(WORKBOOK, sheets=[{"kind": "sql", "name": "x", "sql": "1"}])
        )
    with pytest.raises(InvalidDefinition, match="unknownMember"):
        parse_definition(
            JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x"}, "unknownMember": 1}
        )
    with pytest.raises(InvalidDefinition, match="duplicate sheet name"):
        parse_definition(
            JobKind.WORKBOOK,
            dict(WORKBOOK, sheets=[WORKBOOK["sheets"][1], WORKBOOK["sheets"][1]]),  # type: ignore[index]
        )


def test_upstream_references_are_the_data_sheets_and_export_sources() -> None:
    assert upstream_references(parse_definition(JobKind.WORKBOOK, WORKBOOK)) == [
        "/Data/ImportJobs/o.imp"
    ]


def test_workbook_sql_is_checked_when_defined() -> None:
    bad = dict(
        WORKBOOK,
        sheets=[
            WORKBOOK["sheets"][0],  # type: ignore[index]
            {"kind": "sql", "name": "big", "sql": "SELECT * FROM ordrs", "keep": True},
        ],
    )
    with pytest.raises(InvalidInput, match=r'sheets\[1\]\.sql: unknown sheet "ordrs"'):
        parse_definition(JobKind.WORKBOOK, bad)
