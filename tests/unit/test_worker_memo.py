"""The worker's per-configuration memo: reused only while the job is unchanged."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from datamill.domain.records import JobConfiguration
from datamill.domain.status import JobKind
from datamill.worker.inputs import _definitions
from datamill.worker.memo import PerConfiguration
from datamill.worker.runlog import configuration_version

SAVED = dt.datetime(2026, 12, 1, 12, 0, 0)


def _config(
    definition: dict[str, Any], *, saved: dt.datetime = SAVED, kind: JobKind = JobKind.WORKBOOK
) -> JobConfiguration:
    return JobConfiguration(7, 70, kind, "wb.wbk", definition, "MANUAL", saved)


class _Counting:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, config: JobConfiguration) -> str:
        self.seen.append(config.definition)
        if config.definition.get("bad"):
            raise ValueError("invalid definition")
        return repr(sorted(config.definition.items()))


def test_an_unchanged_job_is_derived_once() -> None:
    derive = _Counting()
    memo = PerConfiguration(derive)
    assert memo(_config({"a": 1})) == memo(_config({"a": 1})) == "[('a', 1)]"
    assert derive.seen == [{"a": 1}]


@pytest.mark.parametrize(
    "changed",
    [
        _config({"a": 2}),  # edited, same save time (another process's clock)
        _config({"a": 1}, saved=SAVED + dt.timedelta(microseconds=1)),  # saved again
        _config({"a": 1.0}, saved=SAVED + dt.timedelta(seconds=1)),  # 1.0 == 1 in Python
        _config({"a": 1}, kind=JobKind.IMPORT),
    ],
)
def test_any_change_is_derived_anew(changed: JobConfiguration) -> None:
    derive = _Counting()
    memo = PerConfiguration(derive)
    memo(_config({"a": 1}))
    assert memo(changed) == repr(sorted(changed.definition.items()))
    assert len(derive.seen) == 2


def test_the_callers_dict_changed_in_place_is_not_mistaken_for_the_old_one() -> None:
    derive = _Counting()
    memo = PerConfiguration(derive)
    definition: dict[str, Any] = {"a": 1}
    memo(_config(definition))
    definition["a"] = 2
    assert memo(_config(definition)) == "[('a', 2)]"


def test_a_failure_is_not_kept_and_a_full_memo_starts_over() -> None:
    derive = _Counting()
    memo = PerConfiguration(derive, size=2)
    for _ in range(2):
        with pytest.raises(ValueError, match="invalid definition"):
            memo(_config({"bad": True}))
    assert len(derive.seen) == 2
    for config_id in (1, 2, 3, 1):
        memo(JobConfiguration(config_id, 1, JobKind.WORKBOOK, "x", {"n": 1}, "MANUAL", SAVED))
    # 1 and 2 fill it, 3 empties it, so 1 is derived again.
    assert len(derive.seen) == 2 + 4


def test_the_digest_and_the_model_follow_an_edit() -> None:
    sheet = {"kind": "sql", "name": "s", "sql": "SELECT 1 AS one", "keep": True}
    first = _config({"sheets": [sheet]})
    edited = _config({"sheets": [{**sheet, "sql": "SELECT 2 AS two"}]}, saved=SAVED)
    assert configuration_version(first)["sha256"] != configuration_version(edited)["sha256"]
    assert configuration_version(first) == configuration_version(_config({"sheets": [sheet]}))
    assert _definitions(edited).sheets[0].sql == "SELECT 2 AS two"  # type: ignore[union-attr]
    assert _definitions(first).sheets[0].sql == "SELECT 1 AS one"  # type: ignore[union-attr]
