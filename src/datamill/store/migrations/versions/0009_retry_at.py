"""executions.retry_at: a run waiting to be started again is not claimed before it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:00:00.000000

A run whose worker died (or that failed passingly) goes back to QUEUED with
the time its job's retryDelay ends; the claim skips it until then
(store/queue.py). NULL for every run never retried, so existing rows need no value.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add executions.retry_at, NULL for every existing run."""
    # A plain ADD COLUMN on SQLite too: no batch rebuild, which would drop the
    # table's AUTOINCREMENT (ids never reused, migration 0004).
    op.add_column("executions", sa.Column("retry_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    """Drop executions.retry_at."""
    with op.batch_alter_table(
        "executions", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("retry_at")
