"""DuckDB SQL literals and identifiers, quoted so no text can break out of them."""

from __future__ import annotations

from collections.abc import Sequence


def lit(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A DuckDB quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


# DuckDB expands `*`, `?` and `[...]` in every file name it is given, even in a
# list of names: a file literally named `a?.csv` would also read `ab.csv`, and
# `c[1].csv` would read `c1.csv` instead. Each wildcard in brackets matches
# only itself (`{` is not a wildcard to DuckDB).
_GLOB_ESCAPES = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})


def literal_file(path: str) -> str:
    """A file name DuckDB reads as that one file, never as a glob."""
    return path.translate(_GLOB_ESCAPES)


def file_list(paths: Sequence[str]) -> str:
    """A DuckDB list literal of files, each read as itself and never expanded."""
    return lit_list([literal_file(p) for p in paths])


def lit_list(items: Sequence[str]) -> str:
    """A DuckDB list literal of strings (typed, so an empty list works too)."""
    return "[" + ", ".join(lit(i) for i in items) + "]::VARCHAR[]"
