"""Housekeeping: remove deleted and expired data files, stale staging folders, old keys."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from pathlib import Path

from datamill.domain.records import JobConfiguration
from datamill.domain.status import JobKind
from datamill.engine.windows import remove_dead_windows
from datamill.services.idempotency import KEY_LIFETIME
from datamill.store import data as data_store
from datamill.store.db import utcnow
from datamill.store.history import drop_history_before
from datamill.store.idempotency import forget_keys_before
from datamill.store.store import Store

log = logging.getLogger(__name__)


def expire_old_results(store: Store) -> int:
    """Mark results beyond each job's minKeepCount for deletion; returns how many.

    Each job is done alone in a savepoint: a definition stored before its
    bounds were checked (a huge minKeepCount, say) is logged and skipped, and
    never stops the expiry of the other jobs.
    """
    expired = 0
    with store.db.write() as conn:
        now = utcnow()
        for config in store.jobs.list_all(conn):
            try:
                keep = keep_count(config)
                if keep is None:
                    continue
                with conn.begin_nested():
                    expired += data_store.expire_beyond_keep_count(conn, config.id, keep, now)
            except Exception:
                log.exception("expiring the results of configuration %d failed", config.id)
    return expired


def keep_count(config: JobConfiguration) -> int | None:
    """The stored minKeepCount of a job, or None for kinds without one."""
    if config.kind is JobKind.EXPORT:
        return None
    # Read raw rather than through the model: a definition stored before a
    # bound was added would no longer validate, and must still expire.
    raw = config.definition.get("minKeepCount", 1)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"minKeepCount {raw!r} is not a whole number")
    return raw


def remove_deleted_files(store: Store) -> list[int]:
    """Delete the files of marked data that no active execution reads; returns their ids."""
    with store.db.read() as conn:
        removable = data_store.removable_data(conn)
    removed = []
    for result in removable:
        shutil.rmtree(result.location, ignore_errors=True)
        with store.db.write() as conn:
            data_store.forget_location(conn, result.id)
        removed.append(result.id)
    return removed


def remove_stale_staging(staging_root: Path, active_execution_ids: set[int]) -> None:
    """Remove staging folders of executions that are no longer running."""
    if not staging_root.is_dir():
        return
    for entry in os.scandir(staging_root):
        if entry.name.isdigit() and int(entry.name) not in active_execution_ids:
            shutil.rmtree(entry.path, ignore_errors=True)
    remove_dead_windows(str(staging_root))


def drop_old_history(store: Store, days: float) -> int:
    """Drop ended executions older than `days`; returns how many."""
    with store.db.write() as conn:
        return drop_history_before(conn, utcnow() - dt.timedelta(days=days))


def forget_expired_keys(store: Store) -> int:
    """Delete Idempotency-Keys past their lifetime (24 hours); returns how many."""
    with store.db.write() as conn:
        return forget_keys_before(conn, utcnow() - KEY_LIFETIME)


def remove_orphaned_data_folders(store: Store, min_age_seconds: float = 300.0) -> list[str]:
    """Remove data folders no data row names: leftovers of publishes that never committed.

    Only folders older than `min_age_seconds`, so a publish whose transaction
    is committing right now keeps its folder.
    """
    root = Path(store.data_root)
    if not root.is_dir():
        return []
    with store.db.read() as conn:
        named = data_store.stored_locations(conn)
    removed = []
    now = time.time()
    for entry in os.scandir(root):
        if not entry.name.isdigit() or entry.path in named:
            continue
        if now - entry.stat(follow_symlinks=False).st_mtime < min_age_seconds:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    if removed:
        log.warning("removed data folders no data row names: %s", removed)
    return removed
