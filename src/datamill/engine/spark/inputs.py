"""Source files handed to Spark by names the engine chose, never by the user's.

Spark reads paths through Hadoop, which treats `* ? [ ] { }` and `\\` as a
glob and `scheme:` as another filesystem. A source file, already resolved and
confined by engine/paths.py, is therefore linked into the run's staging
folder as `input/00000`, `input/00001`, ... and Spark gets that link: no name
a user chose (nor a character of it) reaches Hadoop, so it can never widen
what Spark reads. The links are removed before the run is published.
"""

from __future__ import annotations

import functools
import os
import shutil
import urllib.parse

from datamill.engine.paths import is_local, resolve_host
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


@functools.lru_cache(maxsize=16)
def on_this_machine(remote: str) -> bool:
    """Whether the Spark Connect server at `remote` runs on this machine (every address local).

    Such a server reads the files a run holds open through /proc/<pid>/fd
    (engine/held.py); a cluster's executors cannot.
    """
    host = urllib.parse.urlsplit(remote).hostname
    addresses = resolve_host(host) if host else set()
    return bool(addresses) and all(is_local(ip) for ip in addresses)


def link_inputs(staging_dir: str, files: list[str]) -> list[str]:
    """Link each file (a held file's /proc path, or a checked real path) into the staging folder.

    The Hadoop paths of the links are returned.
    """
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
