"""locations.bases of object-store locations: what the old rule counted

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 01:20:00.000000

0010 recorded around each local location the locations enclosing it, but
left `s3a://` locations without any: their folders were never checked as
given (docs/security.md, "Twelfth attack"). Now they are, and a run
re-checks them against their bases; existing ones get what 0010 gave local
ones: the object-store locations with a smaller id whose prefix holds theirs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _inside(prefix: str, folder: str) -> bool:
    # Stored prefixes are canonical (`s3a://bucket/key`, no trailing slash).
    return prefix == folder or prefix.startswith(folder + "/")


def upgrade() -> None:
    """Fill the bases of every object-store location as the old rule counted."""
    bind = op.get_bind()
    folders = {
        file_id: folder
        for file_id, folder in bind.execute(sa.text("SELECT file_id, folder FROM locations"))
        if "://" in folder
    }
    for file_id, prefix in folders.items():
        bases = ",".join(
            str(other)
            for other, folder in sorted(folders.items())
            if other < file_id and _inside(prefix, folder)
        )
        bind.execute(
            sa.text("UPDATE locations SET bases = :bases WHERE file_id = :id"),
            {"bases": bases, "id": file_id},
        )


def downgrade() -> None:
    """Nothing to undo: 0010's columns stay, and their values are valid for it."""
