"""locations.bases, connections.bases: the locations around an entry when it was given

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 21:30:00.000000

A run checks again that a location's (or SQLite connection's) definer may
still give it out, against the locations around it. Until now "around it"
meant those with a smaller entry id, which a location re-pointed after it
was made gets wrong both ways (docs/security.md, "Re-pointed entries"). Each
entry now records the ids of the locations around its folder (or SQLite
file) when its folder was given. Existing entries get what the old rule
counted: the locations with a smaller id whose folder encloses theirs.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import ArgumentError

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _sqlite_file(url: str) -> str | None:
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return os.path.realpath(str(parsed.database))


def upgrade() -> None:
    """Add the two columns, filled for existing entries as the old rule counted."""
    # Plain ADD COLUMNs (no batch rebuild on SQLite), as in 0009.
    op.add_column("locations", sa.Column("bases", sa.Text(), nullable=False, server_default=""))
    op.add_column("connections", sa.Column("bases", sa.Text(), nullable=False, server_default=""))
    bind = op.get_bind()
    folders = {
        file_id: os.path.realpath(folder)
        for file_id, folder in bind.execute(sa.text("SELECT file_id, folder FROM locations"))
        if "://" not in folder
    }

    def bases(entry_id: int, real: str) -> str:
        return ",".join(
            str(other)
            for other, folder in sorted(folders.items())
            if other < entry_id and _inside(real, folder)
        )

    for file_id, real in folders.items():
        bind.execute(
            sa.text("UPDATE locations SET bases = :bases WHERE file_id = :id"),
            {"bases": bases(file_id, real), "id": file_id},
        )
    for file_id, url in list(bind.execute(sa.text("SELECT file_id, url FROM connections"))):
        database = _sqlite_file(url)
        if database is not None:
            bind.execute(
                sa.text("UPDATE connections SET bases = :bases WHERE file_id = :id"),
                {"bases": bases(file_id, database), "id": file_id},
            )


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("connections") as batch_op:
        batch_op.drop_column("bases")
    with op.batch_alter_table("locations") as batch_op:
        batch_op.drop_column("bases")
