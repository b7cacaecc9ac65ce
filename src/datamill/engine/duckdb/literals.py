"""DuckDB SQL literals and identifiers, quoted so no text can break out of them."""

from __future__ import annotations

from collections.abc import Sequence


def lit(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A DuckDB quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit_list(items: Sequence[str]) -> str:
    """A DuckDB list literal of strings (typed, so an empty list works too)."""
    return "[" + ", ".join(lit(i) for i in items) + "]::VARCHAR[]"
