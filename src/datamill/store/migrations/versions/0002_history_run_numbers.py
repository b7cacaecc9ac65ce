"""history run numbers: executions.run_number and execution_gaps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 17:00:00.000000

Job history pages no longer skip OFFSET rows: each execution gets a dense
per-configuration run number (1, 2, 3, ... in the order of ids), and runs
deleted later are recorded as ranges in execution_gaps. Existing executions
are numbered here with ROW_NUMBER() in id order; holes that housekeeping left
before this migration are simply not numbered, so execution_gaps starts empty.

SQLite cannot add a NOT NULL column without a default, and rebuilding the
executions table is not possible inside the migration's transaction while
foreign keys point at it, so there the column is added NOT NULL DEFAULT 0.
Datamill always inserts an explicit run number; the unique index would refuse
a second run numbered 0 of one job.

Also indexes data.execution_id: dropping history deletes data rows by
execution, which scanned the whole data table once per deleted execution.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BACKFILL = """
UPDATE executions SET run_number = numbered.n
FROM (
    SELECT id, ROW_NUMBER() OVER (PARTITION BY job_configuration_id ORDER BY id) AS n
    FROM executions
) AS numbered
WHERE executions.id = numbered.id
"""


def upgrade() -> None:
    op.create_table(
        "execution_gaps",
        sa.Column("job_configuration_id", sa.Integer(), nullable=False),
        sa.Column("first_run", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_run", sa.Integer(), nullable=False),
        sa.Column("kept_before", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_configuration_id"],
            ["job_configurations.id"],
            name=op.f("fk_execution_gaps_job_configuration_id_job_configurations"),
        ),
        sa.PrimaryKeyConstraint(
            "job_configuration_id", "first_run", name=op.f("pk_execution_gaps")
        ),
    )
    with op.batch_alter_table("execution_gaps", schema=None) as batch_op:
        batch_op.create_index(
            "ix_execution_gaps_kept_before", ["job_configuration_id", "kept_before"], unique=False
        )

    if op.get_bind().dialect.name == "sqlite":
        op.add_column(
            "executions",
            sa.Column("run_number", sa.Integer(), nullable=False, server_default=sa.text("0")),
        )
        op.execute(BACKFILL)
    else:
        op.add_column("executions", sa.Column("run_number", sa.Integer(), nullable=True))
        op.execute(BACKFILL)
        op.alter_column("executions", "run_number", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_executions_run_number", ["job_configuration_id", "run_number"], unique=True
        )

    with op.batch_alter_table("data", schema=None) as batch_op:
        batch_op.create_index("ix_data_execution_id", ["execution_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("data", schema=None) as batch_op:
        batch_op.drop_index("ix_data_execution_id")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("uq_executions_run_number")
    # SQLite (3.35+) drops a column in place; its DEFAULT 0 goes with it.
    op.drop_column("executions", "run_number")
    with op.batch_alter_table("execution_gaps", schema=None) as batch_op:
        batch_op.drop_index("ix_execution_gaps_kept_before")
    op.drop_table("execution_gaps")
