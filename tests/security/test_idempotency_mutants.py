"""Idempotency keys (services/idempotency.py): the cases its mutants showed untested."""

from __future__ import annotations

import json

from tests.security.conftest import Actors, auth
from tests.security.test_idempotency import KEY, _runs, _workbook


def _plan(actors: Actors, path: str, variables: str) -> tuple[int, bytes, str]:
    headers = auth("eve") | {"Idempotency-Key": KEY}
    body = '{"fileIds": [' + json.dumps(path) + '], "variables": ' + variables + "}"
    sent = actors.client.post(
        "/api/job-execution/sequential-trigger", headers=headers, content=body
    )
    return sent.status_code, sent.content, sent.headers.get("idempotent-replayed", "")


def test_a_retry_naming_the_same_variables_in_another_order_is_the_same_request(
    actors: Actors,
) -> None:
    # A client's JSON library may order an object's keys differently on a retry.
    path = _workbook(actors, "eve", "ordered")
    first = _plan(actors, path, '{"region": "north", "size": "big"}')
    assert first[0] == 200, first
    runs = _runs(actors)
    again = _plan(actors, path, '{"size": "big", "region": "north"}')
    assert again == (200, first[1], "true")
    assert _runs(actors) == runs


def test_a_key_reused_for_other_variables_says_what_to_do(actors: Actors) -> None:
    path = _workbook(actors, "eve", "reused")
    assert _plan(actors, path, '{"region": "north"}')[0] == 200
    runs = _runs(actors)
    headers = auth("eve") | {"Idempotency-Key": KEY}
    body = '{"fileIds": [' + json.dumps(path) + '], "variables": {"region": "south"}}'
    reused = actors.client.post(
        "/api/job-execution/sequential-trigger", headers=headers, content=body
    )
    assert reused.status_code == 422, reused.text
    assert reused.json() == {
        "status": "failure",
        "reason": "this Idempotency-Key was already used for a different request (another job,"
        " route, body or variables) in the last 24 hours; use a new key for a new request",
    }
    assert _runs(actors) == runs
