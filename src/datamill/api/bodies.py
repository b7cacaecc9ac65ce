"""Reading request bodies the way Datameer clients send them.

Strict JSON is read first with `json.loads` (C, fast); only a body that is
not strict JSON goes to the lenient reader, which is pure Python and so
about fifty times slower. A body larger than `OFF_LOOP_BYTES` is decoded and
parsed in a worker thread, so a large body never holds up the event loop and
every other request with it. A body past the operator's limit is a 413.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from datamill.api.lenient_json import MAX_DEPTH, loads_lenient
from datamill.errors import DatamillError, InvalidInput

MAX_BODY_BYTES = 1_048_576  # the default of Settings.max_body_bytes
OFF_LOOP_BYTES = 16_384
# A lone UTF-16 surrogate (from a "\ud800" escape) is no text: no database
# column, file name or UTF-8 encoder takes it.
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyTooLarge(DatamillError):
    """The request body is too large."""

    http_status = 413


def body_limit(request: Request) -> int:
    """The operator's body size limit (DATAMILL_MAX_BODY_BYTES)."""
    limit = getattr(request.app.state, "max_body_bytes", MAX_BODY_BYTES)
    return int(limit)


async def raw_bytes(request: Request, *, max_bytes: int | None = None) -> bytes:
    """The body as bytes; BodyTooLarge past `max_bytes` (default: the operator's limit)."""
    limit = body_limit(request) if max_bytes is None else max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_text(raw: bytes) -> str:
    """The body as UTF-8 text; InvalidInput says which byte is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"the request body is not UTF-8 text (byte {error.start + 1})") from None


async def raw_text(request: Request, *, max_bytes: int | None = None) -> str:
    """The body as UTF-8 text, whatever the Content-Type; refused past `max_bytes`."""
    raw = await raw_bytes(request, max_bytes=max_bytes)
    if len(raw) > OFF_LOOP_BYTES:
        return await run_in_threadpool(decode_text, raw)
    return decode_text(raw)


async def lenient_json_body(request: Request) -> Any:
    """The body parsed as (lenient) JSON, whatever the Content-Type."""
    raw = await raw_bytes(request)
    if len(raw) > OFF_LOOP_BYTES:
        return await run_in_threadpool(parse_body, raw)
    return parse_body(raw)


async def json_object_body(request: Request, what: str) -> dict[str, Any]:
    """The body as a (lenient) JSON object; InvalidInput names `what` it should hold."""
    body = await lenient_json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object: {what}")
    return body


def parse_body(raw: bytes) -> Any:
    """Decode and parse a JSON body: strict first, the lenient reader when that fails."""
    text = decode_text(raw)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        # Not strict JSON (or a form strict JSON reads otherwise than the
        # lenient reader: NaN, 1e400, a BOM): the lenient reader decides.
        value = loads_lenient(text)
    _check(value)
    return value


def _no_constant(name: str) -> Any:
    # NaN and Infinity are bare words to the lenient reader, not numbers.
    raise ValueError(name)


def _finite_float(text: str) -> float:
    number = float(text)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(text)
    return number


def _check(value: Any) -> None:
    """Refuse what the lenient reader refuses: nesting past MAX_DEPTH; and lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
            for key in item:
                _check_text(key)
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, str):
                _check_text(item)
            continue
        if depth >= MAX_DEPTH and children:
            raise InvalidInput(f"malformed JSON body: nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    if _SURROGATE.search(text):
        raise InvalidInput("the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
