"""Log lines for operators: readable text by default, one JSON object per line on request.

Fields known where a line is written (request id, execution id, job path,
worker id) are bound in context variables and added to every line written
meanwhile, in either format. Context variables follow a request into the
thread pool and stay with the worker slot thread that runs an execution.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

FIELDS = ("request_id", "execution_id", "job_path", "worker_id")

_bound: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "datamill_log_fields", default=None
)

BindToken = contextvars.Token[dict[str, Any] | None]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(bound_text)s"


def bound_fields() -> dict[str, Any]:
    """The fields bound in the current context."""
    return dict(_bound.get() or {})


def bind(**fields: Any) -> BindToken:
    """Add fields to every log line of the current context; None removes one."""
    merged = {**(_bound.get() or {}), **fields}
    return _bound.set({k: v for k, v in merged.items() if v is not None})


def unbind(token: BindToken) -> None:
    """Restore the fields as they were before `bind` returned `token`."""
    _bound.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind fields for the duration of a block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


class _BoundFields(logging.Filter):
    """Copies the bound fields onto each record as it is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _bound.get() or {}
        record.bound = fields
        record.bound_text = "".join(f" {k}={fields[k]}" for k in FIELDS if k in fields)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, bound fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "bound", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Datamill's own handler, so configuring again replaces it and nothing else."""


def configure_logging(
    log_format: str, level: str | int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send log lines to `stream` (standard error) in `log_format` ('text' or 'json')."""
    handler = _Handler(stream or sys.stderr)
    handler.addFilter(_BoundFields())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
