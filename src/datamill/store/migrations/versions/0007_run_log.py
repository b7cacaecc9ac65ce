"""run log: the events of each run (queued, claimed, sources read, sheets, failures)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 14:00:00.000000

One row per event of a run, bounded per run by the writer (store/runlog.py)
and deleted with the run's history and with its job.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("execution_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_run_log_execution_id_executions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_log")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("run_log", schema=None) as batch_op:
        batch_op.create_index("ix_run_log_execution_id", ["execution_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_log", schema=None) as batch_op:
        batch_op.drop_index("ix_run_log_execution_id")
    op.drop_table("run_log")
