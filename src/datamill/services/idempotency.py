"""Safe retried triggers: the Idempotency-Key of a request, claimed and answered once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from datamill.errors import InvalidInput, KeyReused
from datamill.store.db import utcnow
from datamill.store.idempotency import claim_key, record_answer

T = TypeVar("T")

KEY_LIFETIME = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255
# A UUID, a ULID, a hash, a base64 token: letters, digits and a few marks, so
# a key is never a place to smuggle control characters or quotes into logs.
_KEY = re.compile(r"[A-Za-z0-9._:~+/=-]+")
_ALLOWED = "letters, digits and . _ : ~ + / = -"


def parse_key(values: list[str]) -> str | None:
    """The Idempotency-Key of a request (None without one); a bad key is a 400.

    The header of the IETF draft is a structured-field string, so a quoted
    key ("abc") means the same as the bare one (abc).
    """
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInput("send at most one Idempotency-Key header")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise InvalidInput("the Idempotency-Key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"the Idempotency-Key is longer than {MAX_KEY_LENGTH} characters")
    if not _KEY.fullmatch(key):
        raise InvalidInput(f"the Idempotency-Key may hold only {_ALLOWED}")
    return key


def fingerprint(*parts: Any) -> str:
    """What a request asks for, as a hash: route, references, body (JSON-able parts)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """An answer as sent: its status code and body bytes."""

    status_code: int
    body: bytes


class Replayed(Exception):
    """The key was used for this very request before: its answer, to send again."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("replayed")
        self.answer = answer


@dataclasses.dataclass(slots=True)
class Once(Generic[T]):
    """One keyed request: claimed at the start of its transaction, answered at its end.

    A service calls `begin` first thing in the transaction that creates the
    runs (after the caller's role check: a replay needs the role, not the
    file's flags) and `end` last, with what it created: the key, the runs and the
    answer commit together or not at all. An answer is stored only for a
    request that succeeded (an error rolls the key back with everything
    else), so a retry after an error is tried afresh.
    """

    user: str
    key: str
    fingerprint: str
    render: Callable[[T], Answer]
    answer: Answer | None = None

    def begin(self, conn: Connection) -> None:
        """Claim the key; raise Replayed (its first answer) or KeyReused (another request)."""
        now = utcnow()
        stored = claim_key(conn, self.user, self.key, self.fingerprint, now, now - KEY_LIFETIME)
        if stored is None:
            return
        if stored.fingerprint != self.fingerprint:
            raise KeyReused(
                "this Idempotency-Key was already used for a different request (another job,"
                " route, body or variables) in the last 24 hours; use a new key for a new request"
            )
        raise Replayed(Answer(stored.status_code, stored.body.encode("utf-8")))

    def end(self, conn: Connection, result: T) -> None:
        """Render the answer and store it with the key."""
        self.answer = self.render(result)
        record_answer(
            conn, self.user, self.key, self.answer.status_code, self.answer.body.decode("utf-8")
        )
