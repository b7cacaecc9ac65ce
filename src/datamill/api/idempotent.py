"""Triggers that honour an Idempotency-Key: the first answer, replayed for a retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from datamill.api.wire import PrettyJSONResponse
from datamill.domain.records import User
from datamill.services.idempotency import Answer, Once, Replayed, fingerprint, parse_key

T = TypeVar("T")

HEADER = "idempotency-key"
# Tells a client the answer is the stored one (as Stripe names it).
REPLAYED_HEADER = "Idempotent-Replayed"


def answer_once(
    request: Request,
    user: User,
    asked: tuple[Any, ...],
    render: Callable[[T], dict[str, Any]],
    act: Callable[[Once[T] | None], T],
) -> Response:
    """Run `act` once per key: `asked` (JSON-able) names the request, `render` its answer.

    Without the header this is `act(None)` rendered, nothing more: no query.
    """
    key = parse_key(request.headers.getlist(HEADER))
    if key is None:
        return PrettyJSONResponse(render(act(None)))

    def document(result: T) -> Answer:
        return Answer(200, bytes(PrettyJSONResponse(render(result)).body))

    once = Once(user.name, key, fingerprint(*asked), document)
    try:
        act(once)
    except Replayed as replay:
        return _sent(replay.answer, {REPLAYED_HEADER: "true"})
    assert once.answer is not None
    return _sent(once.answer, {})


def _sent(answer: Answer, headers: dict[str, str]) -> Response:
    return Response(
        answer.body,
        status_code=answer.status_code,
        media_type=PrettyJSONResponse.media_type,
        headers=headers,
    )
