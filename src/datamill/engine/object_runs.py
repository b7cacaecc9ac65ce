"""Runs whose source or sink is an object-store location: local files for the engine.

Before the engine starts, the objects an import's source names are copied
into the run's staging folder (`_objects/<n>/<name>`, in key order) and the
request names those copies, so the engine (DuckDB or Spark) reads local
files with every usual check and the held-file defence (engine/held.py).
An export's sink becomes a file in staging; once the engine has written it,
it is uploaded to a hidden object next to the sink, and the worker makes it
the sink's object when it publishes the run (engine/objects.py, `publish`).
Messages name the objects, never the copies.

A source's objects are added up from the listing before anything is copied:
a run whose objects exceed the operator's `source_max_bytes` or the staging
disk's free space less `FREE_MARGIN` fails at once, copying nothing (the
disk also holds the data root and, on SQLite, the metadata database).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from typing import Any

from datamill.domain.runlog import PendingEvent
from datamill.domain.status import JobKind
from datamill.engine.base import EventCallback, PathRoots, RunRequest, RunResult
from datamill.engine.objects import (
    COPIES,
    ObjectStore,
    copy_in,
    inside_any,
    is_uri,
    match_objects,
    parse,
    temporary_uri,
    upload,
)
from datamill.errors import DatamillError, InvalidInput, JobFailed, PathNotAllowed

Run = Callable[[RunRequest, EventCallback], RunResult]
# What a run's copies must leave free on the staging disk: room for the run's
# own output, other runs', the data root and the metadata database beside them.
FREE_MARGIN = 1 << 30


def _member(request: RunRequest) -> tuple[str, dict[str, Any]] | None:
    """("source" or "sink", its document) when the request's file names an object."""
    part = {JobKind.IMPORT: "source", JobKind.EXPORT: "sink"}.get(request.kind)
    member = request.definition.get(part) if part else None
    if part and isinstance(member, dict) and is_uri(str(member.get("path", ""))):
        return part, member
    return None


def _store(request: RunRequest) -> ObjectStore:
    if request.object_store is None:
        raise PathNotAllowed("no object store is configured on this server")
    return request.object_store


def run_with_objects(request: RunRequest, run: Run, events: EventCallback) -> RunResult:
    """Run `request`, copying object-store sources in and uploading object-store sinks."""
    found = _member(request)
    if found is None:
        return run(request, events)
    part, member = found
    folder = os.path.join(os.path.realpath(request.staging_dir), COPIES)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    names: dict[str, str] = {}
    try:
        if part == "source":
            local = _copy_source(request, member, folder, names)
        else:
            local = _local_sink(request, member, folder, names)
        result = run(local, lambda event: events(_named_event(event, names)))
        if part == "sink":
            result = _upload_sink(request, member, result, names)
        return result
    except DatamillError as error:
        error.args = (_named(error.message, names),)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _named_event(event: PendingEvent, names: dict[str, str]) -> PendingEvent:
    return dataclasses.replace(event, detail=_named_value(event.detail, names))


def _named_value(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _named(value, names)
    if isinstance(value, dict):
        return {k: _named_value(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_named_value(v, names) for v in value]
    return value


def _named(text: str, names: dict[str, str]) -> str:
    # Longest first: a copy's folder is a prefix of its file's path.
    for local in sorted(names, key=len, reverse=True):
        text = text.replace(local, names[local])
    return text


def _copy_source(
    request: RunRequest, member: dict[str, Any], folder: str, names: dict[str, str]
) -> RunRequest:
    store = _store(request)
    pattern = str(member["path"])
    roots = request.roots
    listed = match_objects(
        store, pattern, roots.source_roots, roots.excluded, request.max_source_files
    )
    objects = [path for path, _ in listed]
    total = sum(size for _, size in listed)
    budget = copy_budget(pattern, total, request.max_source_bytes, _free_bytes(folder))
    copies = copy_in(store, objects, folder, budget)
    names.update({c: o.uri for c, o in zip(copies, objects, strict=True)})
    wanted = parse(pattern, "source path", glob=True)
    # A glob: every copy, in key order (the folders are numbered in that order).
    glob = any(c in "*?[" for c in wanted.key)
    path = os.path.join(folder, "*", "*") if glob else copies[0]
    # The glob the engine got reads, in messages, as the one the user wrote.
    names[os.path.join(folder, "*", "*")] = names[folder] = pattern
    source = {**member, "path": path}
    return dataclasses.replace(
        request,
        definition={**request.definition, "source": source},
        roots=PathRoots((folder,), ()),
    )


def _free_bytes(folder: str) -> int:
    # What an unprivileged process may still write there (not the blocks kept for root).
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def copy_budget(pattern: str, total: int, cap: int | None, free: int) -> int:
    """The bytes a run may copy for `pattern`, whose objects add up to `total`; fails when over.

    `cap` is the operator's source_max_bytes (None: none), `free` the staging
    disk's free bytes, of which the copies leave FREE_MARGIN.
    """
    if cap is not None and total > cap:
        raise JobFailed(
            f"source {pattern!r} is {total} bytes, more than the {cap} bytes"
            " a run may copy from the object store; nothing was copied"
        )
    room = max(free - FREE_MARGIN, 0)
    if total > room:
        raise JobFailed(
            f"source {pattern!r} is {total} bytes, more than the {room} bytes"
            " the worker's disk has room for (its free space less 1 GiB); nothing was copied"
        )
    return room if cap is None else min(cap, room)


def _local_sink(
    request: RunRequest, member: dict[str, Any], folder: str, names: dict[str, str]
) -> RunRequest:
    uri = str(member["path"])
    target = parse(uri, "sink path")
    if not target.key:
        raise InvalidInput(f"sink path {uri!r} must name a file, not a bucket")
    if not any(is_uri(r) for r in request.roots.sink_roots) or not _inside_roots(request, uri):
        raise PathNotAllowed(f"sink path {uri!r} is outside the allowed folders")
    local = os.path.join(folder, target.key.rsplit("/", 1)[-1])
    names[local] = uri
    sink = {**member, "path": local}
    return dataclasses.replace(
        request,
        definition={**request.definition, "sink": sink},
        roots=PathRoots((), (folder,)),
    )


def _inside_roots(request: RunRequest, uri: str) -> bool:
    path = parse(uri, "sink path")
    roots = request.roots
    return inside_any(path, roots.sink_roots) and not inside_any(path, roots.excluded)


def _upload_sink(
    request: RunRequest, member: dict[str, Any], result: RunResult, names: dict[str, str]
) -> RunResult:
    uri = str(member["path"])
    moves = []
    for staged, final in result.moves:
        if final not in names:
            moves.append((staged, final))
            continue
        hidden = temporary_uri(uri, request.attempt_id)
        # A failed upload is named as the sink the user wrote, not the hidden object.
        names[hidden] = uri
        # The staged file stays: the worker measures it against the run's output limit.
        upload(_store(request), staged, hidden)
        moves.append((hidden, uri))
    return dataclasses.replace(result, moves=tuple(moves))
