"""slot shares: index executions by (status, triggered_by)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:00:00.000000

A claim asks, for the oldest startable run, whether any other user has a
queued run (store/queue.py, slot shares). With this index the answer is two
index seeks; without it, a scan of every queued run on each claim.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index("ix_executions_status_user", ["status", "triggered_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_status_user")
