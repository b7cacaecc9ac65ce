"""Data results: listing and deleting them."""

from __future__ import annotations

from datamill.domain.records import User
from datamill.errors import NotFound
from datamill.services.permissions import Access, require_access
from datamill.store import data as data_store
from datamill.store.db import utcnow
from datamill.store.store import Store


def delete_data(store: Store, data_id: int, user: User) -> bool:
    """Mark a data result for deletion; False if it was already marked.

    It disappears from listings at once; housekeeping removes the files once
    no active execution reads them.
    """
    missing = NotFound(f"Entity of type 'Data' with id '{data_id}' not found.")
    with store.db.write() as conn:
        result = data_store.get_data(conn, data_id)
        if result is None:
            raise missing
        config = store.jobs.get(conn, result.job_configuration_id)
        entry = store.files.get(conn, config.file_id)
        try:
            require_access(conn, user, entry, Access.READ)
        except NotFound:
            raise missing from None
        require_access(conn, user, entry, Access.WRITE)
        return data_store.mark_deleted(conn, data_id, utcnow())
