"""users.session_epoch: a logout voids the user's session cookies

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:00:00.000000

A browser-style login (GET /browser) hands out a signed session cookie that
carries the user's session epoch; logging out raises the epoch, so every
cookie signed before no longer authenticates (services/sessions.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add users.session_epoch, 0 for every existing user."""
    # A plain ADD COLUMN on SQLite too: no batch rebuild, which would drop the
    # table's AUTOINCREMENT (ids never reused, migration 0004).
    op.add_column(
        "users",
        sa.Column("session_epoch", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    """Drop users.session_epoch."""
    with op.batch_alter_table(
        "users", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("session_epoch")
