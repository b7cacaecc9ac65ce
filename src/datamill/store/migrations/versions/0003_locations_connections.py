"""locations and connections: file-tree entries for folders and databases

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00.000000

Import sources and export sinks reach files and databases only through
locations and connections, entries of the file tree (files.kind 'location'
or 'connection') whose permission flags say who may read from (READ) and
write to (WRITE) them. These tables hold what each entry points at.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the locations and connections tables."""
    op.create_table(
        "locations",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(length=4096), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name="fk_locations_file_id_files"),
        sa.PrimaryKeyConstraint("file_id", name="pk_locations"),
    )
    op.create_table(
        "connections",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("password", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name="fk_connections_file_id_files"),
        sa.PrimaryKeyConstraint("file_id", name="pk_connections"),
    )


def downgrade() -> None:
    """Drop the locations and connections tables."""
    op.drop_table("connections")
    op.drop_table("locations")
