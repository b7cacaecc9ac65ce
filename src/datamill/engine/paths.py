"""Keep local source and sink paths inside the roots the operator allowed."""

from __future__ import annotations

import glob
import os

from datamill.errors import PathNotAllowed

_GLOB_CHARS = frozenset("*?[")


def is_glob(path: str) -> bool:
    """Whether a path holds glob wildcards."""
    return any(c in _GLOB_CHARS for c in path)


def _inside(real_path: str, roots: tuple[str, ...]) -> bool:
    for root in roots:
        real_root = os.path.realpath(root)
        if real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep):
            return True
    return False


def check_path(path: str, roots: tuple[str, ...], what: str = "path") -> str:
    """The real path of `path` if it lies inside one of `roots`, else PathNotAllowed.

    Symbolic links are resolved first, so a link inside a root that points
    outside it is refused as well.
    """
    if not os.path.isabs(path):
        raise PathNotAllowed(f"{what} {path!r} must be an absolute path")
    real = os.path.realpath(path)
    if not _inside(real, roots):
        raise PathNotAllowed(
            f"{what} {path!r} is outside the allowed folders ({', '.join(roots) or 'none'})"
        )
    return real


def expand_source_paths(path: str, roots: tuple[str, ...]) -> list[str]:
    """The files a source path or glob names, each checked against the roots.

    The glob is expanded here rather than by the engine, so the engine only
    ever sees explicit files that passed the check.
    """
    if not is_glob(path):
        real = check_path(path, roots, "source path")
        if not os.path.isfile(real):
            raise PathNotAllowed(f"source file {path!r} does not exist")
        return [real]
    check_path(
        os.path.dirname(path.split("*")[0].split("?")[0].split("[")[0]) or "/", roots, "source path"
    )
    matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
    if not matches:
        raise PathNotAllowed(f"source glob {path!r} matches no file")
    return [check_path(m, roots, "source file") for m in matches]
