"""Reading request bodies the way Datameer clients send them."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from datamill.api.lenient_json import loads_lenient
from datamill.errors import DatamillError, InvalidInput

MAX_BODY_BYTES = 1_048_576


class BodyTooLarge(DatamillError):
    """The request body is too large."""

    http_status = 413


async def raw_text(request: Request, *, max_bytes: int = MAX_BODY_BYTES) -> str:
    """The body as UTF-8 text, whatever the Content-Type; refused past `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"the request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"the request body is not UTF-8 text (byte {error.start + 1})") from None


async def lenient_json_body(request: Request) -> Any:
    """The body parsed as lenient JSON, whatever the Content-Type."""
    return loads_lenient(await raw_text(request))
