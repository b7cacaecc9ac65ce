"""Source files handed to Spark by names the engine chose, never by the user's.

Spark reads paths through Hadoop, which treats `* ? [ ] { }` and `\\` as a
glob and `scheme:` as another filesystem. A source file, already resolved and
confined by engine/paths.py, is therefore linked into the run's staging
folder as `input/00000`, `input/00001`, ... and Spark gets that link: no name
a user chose (nor a character of it) reaches Hadoop, so it can never widen
what Spark reads. The links are removed before the run is published.
"""

from __future__ import annotations

import os
import shutil

from datamill.errors import JobFailed

FOLDER = "input"
# Hadoop's glob characters; escaped in the (operator-chosen) staging path.
_GLOB = frozenset("\\*?[]{}")


def hadoop_path(path: str) -> str:
    """`path` as Hadoop reads exactly that local file: glob characters escaped."""
    if ":" in path:
        # Hadoop would read `x:` as a URI scheme; the staging folder is the operator's.
        raise JobFailed(f"Spark cannot read below {path!r}: the path holds ':'")
    return "".join("\\" + c if c in _GLOB else c for c in path)


def link_inputs(staging_dir: str, files: list[str]) -> list[str]:
    """Link each (checked, real) file into the staging folder; the Hadoop paths of the links."""
    folder = os.path.join(staging_dir, FOLDER)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    paths = []
    for index, real in enumerate(files):
        link = os.path.join(folder, f"{index:05d}")
        os.symlink(real, link)
        paths.append(hadoop_path(link))
    return paths


def unlink_inputs(staging_dir: str) -> None:
    """Remove the links: staging must hold only the run's output."""
    shutil.rmtree(os.path.join(staging_dir, FOLDER), ignore_errors=True)
