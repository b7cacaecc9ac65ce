"""The metadata schema (SQLAlchemy Core). Alembic migrations must produce exactly this."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Each runnable artifact has four ids from four independent sequences: the
# autoincrement keys of files, job_configurations, executions and data.
# No id is ever handed out twice, whatever was deleted (clients and workbooks
# refer to jobs and runs by id): every integer key is a PostgreSQL sequence,
# and on SQLite an AUTOINCREMENT key (sqlite_autoincrement=True on the table),
# which never goes below the highest id it handed out. Migration 0004.

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("files.id"), nullable=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("path", sa.String(4096), nullable=False, unique=True),
    sa.Column("is_folder", sa.Boolean, nullable=False),
    sa.Column("kind", sa.String(16), nullable=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("others_readable", sa.Boolean, nullable=False, default=False),
    sa.Column("others_writable", sa.Boolean, nullable=False, default=False),
    sa.Column("others_executable", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sqlite_autoincrement=True,
)

file_group_permissions = sa.Table(
    "file_group_permissions",
    metadata,
    sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id"), primary_key=True),
    sa.Column("group_name", sa.String(128), primary_key=True),
    sa.Column("readable", sa.Boolean, nullable=False),
    sa.Column("writable", sa.Boolean, nullable=False),
    sa.Column("executable", sa.Boolean, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    # '' means no password yet: a user created without one cannot log in until
    # one is set (an empty string, not NULL, so that no SQLite table is rebuilt).
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("email", sa.String(255), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # Raised by a logout: every session cookie signed with a lower epoch is void
    # (services/sessions.py). Migration 0006.
    sa.Column("session_epoch", sa.Integer, nullable=False, server_default=sa.text("0")),
    sqlite_autoincrement=True,
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sqlite_autoincrement=True,
)

roles = sa.Table(
    "roles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("capabilities", sa.JSON, nullable=False),
    sqlite_autoincrement=True,
)

user_groups = sa.Table(
    "user_groups",
    metadata,
    sa.Column("user_name", sa.String(128), primary_key=True),
    sa.Column("group_name", sa.String(128), primary_key=True),
)

user_roles = sa.Table(
    "user_roles",
    metadata,
    sa.Column("user_name", sa.String(128), primary_key=True),
    sa.Column("role_name", sa.String(128), primary_key=True),
)

job_configurations = sa.Table(
    "job_configurations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id"), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("trigger_mode", sa.String(16), nullable=False),
    sa.Column("cron", sa.String(128), nullable=True),
    # When a SCHEDULED job fires next (UTC); NULL for other jobs.
    sa.Column("next_fire_at", sa.DateTime, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_job_configurations_next_fire_at", "next_fire_at"),
    sqlite_autoincrement=True,
)

# Which configuration reads the data of which, resolved from the definitions.
job_dependencies = sa.Table(
    "job_dependencies",
    metadata,
    sa.Column(
        "job_configuration_id",
        sa.Integer,
        sa.ForeignKey("job_configurations.id"),
        primary_key=True,
    ),
    sa.Column(
        "upstream_configuration_id",
        sa.Integer,
        sa.ForeignKey("job_configurations.id"),
        primary_key=True,
    ),
    sa.Index("ix_job_dependencies_upstream", "upstream_configuration_id"),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "job_configuration_id",
        sa.Integer,
        sa.ForeignKey("job_configurations.id"),
        nullable=False,
    ),
    sa.Column("file_id", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("trigger_type", sa.String(16), nullable=False),
    sa.Column("triggered_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=True),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    sa.Column("progress", sa.Float, nullable=True),
    sa.Column("success_count", sa.BigInteger, nullable=False, default=0),
    sa.Column("failure_count", sa.BigInteger, nullable=False, default=0),
    sa.Column("counters", sa.JSON, nullable=False),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime, nullable=True),
    sa.Column("variables", sa.JSON, nullable=False),
    sa.Column("stop_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("bytes_read", sa.BigInteger, nullable=False, default=0),
    # How often a worker claimed this execution: 1 unless it was handed back.
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # A QUEUED run to be started again (its worker died, or it failed passingly):
    # not claimed before this time (its job's retryDelay). NULL for every other run.
    sa.Column("retry_at", sa.DateTime, nullable=True),
    # 1, 2, 3, ... per configuration in the order of ids, never reused. Deleted
    # runs leave holes, recorded in execution_gaps, so a history page at any
    # offset is found without counting rows (see execution_history). On SQLite
    # migration 0002 had to add it with DEFAULT 0; inserts always set it.
    sa.Column("run_number", sa.Integer, nullable=False),
    # A job's newest runs by id (status, stop, estimates).
    sa.Index("ix_executions_config_id", "job_configuration_id", "id", "status"),
    sa.Index("uq_executions_run_number", "job_configuration_id", "run_number", unique=True),
    sa.Index("ix_executions_status_id", "status", "id"),
    # Slot shares: whether anyone but the claimed run's user waits, by two seeks.
    sa.Index("ix_executions_status_user", "status", "triggered_by"),
    # The database itself guarantees that one configuration never has two
    # RUNNING executions, whatever the workers race to do.
    sa.Index(
        "uq_executions_one_running_per_config",
        "job_configuration_id",
        unique=True,
        sqlite_where=sa.text("status = 'RUNNING'"),
        postgresql_where=sa.text("status = 'RUNNING'"),
    ),
    sqlite_autoincrement=True,
)

# Runs of a configuration that were deleted, as merged ranges [first_run, last_run]
# of run numbers: two rows never touch or overlap. kept_before is how many runs
# of the configuration still exist below first_run; it grows with first_run.
execution_gaps = sa.Table(
    "execution_gaps",
    metadata,
    sa.Column(
        "job_configuration_id",
        sa.Integer,
        sa.ForeignKey("job_configurations.id"),
        primary_key=True,
    ),
    sa.Column("first_run", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_run", sa.Integer, nullable=False),
    sa.Column("kept_before", sa.Integer, nullable=False),
    sa.Index("ix_execution_gaps_kept_before", "job_configuration_id", "kept_before"),
)

# Edges of a sequential plan: an execution waits until all its upstreams succeed.
execution_dependencies = sa.Table(
    "execution_dependencies",
    metadata,
    sa.Column("execution_id", sa.Integer, sa.ForeignKey("executions.id"), primary_key=True),
    sa.Column(
        "upstream_execution_id", sa.Integer, sa.ForeignKey("executions.id"), primary_key=True
    ),
    sa.Index("ix_execution_dependencies_upstream", "upstream_execution_id"),
)

execution_inputs = sa.Table(
    "execution_inputs",
    metadata,
    sa.Column("execution_id", sa.Integer, sa.ForeignKey("executions.id"), primary_key=True),
    sa.Column("data_id", sa.Integer, sa.ForeignKey("data.id"), primary_key=True),
)

# The run log: what happened during a run, one row per event, in id order.
# Bounded per run (store/runlog.py) and deleted with the run. Migration 0007.
run_log = sa.Table(
    "run_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("execution_id", sa.Integer, sa.ForeignKey("executions.id"), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    # A run's events in order, and `since` for tailing, by one seek.
    sa.Index("ix_run_log_execution_id", "execution_id", "id"),
    sqlite_autoincrement=True,
)

data = sa.Table(
    "data",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "job_configuration_id",
        sa.Integer,
        sa.ForeignKey("job_configurations.id"),
        nullable=False,
    ),
    sa.Column("execution_id", sa.Integer, sa.ForeignKey("executions.id"), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("record_count", sa.BigInteger, nullable=False),
    sa.Column("sheets", sa.JSON, nullable=False),
    sa.Column("location", sa.String(4096), nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("deleted_at", sa.DateTime, nullable=True),
    sa.Index("ix_data_config_id", "job_configuration_id", "id"),
    # Dropping history deletes data rows by execution.
    sa.Index("ix_data_execution_id", "execution_id"),
    # Data ids name folders. AUTOINCREMENT keeps ids of deleted rows from
    # coming back (as for every id); an id whose insert was rolled back can
    # still be reused on SQLite, which is why publishing clears a leftover
    # folder at its target first.
    sqlite_autoincrement=True,
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
)

# Locations (a folder on disk) and connections (a database URL) are entries of
# the file tree (files.kind 'location' / 'connection'), so the tree's owner,
# group and others flags say who may read from and write to them.
locations = sa.Table(
    "locations",
    metadata,
    sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id"), primary_key=True),
    sa.Column("folder", sa.String(4096), nullable=False),
    # The ids of the locations that were around the folder when it was given
    # (comma-separated): a run's re-check asks its definer's right on these
    # only, not on one made or re-pointed around it later (services/locations.py).
    sa.Column("bases", sa.Text, nullable=False, server_default=""),
)

connections = sa.Table(
    "connections",
    metadata,
    sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id"), primary_key=True),
    # The URL without its password; the password is kept apart so that nothing
    # that renders the URL can show it.
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("password", sa.Text, nullable=True),
    # As for locations: the locations around a SQLite file when it was given.
    sa.Column("bases", sa.Text, nullable=False, server_default=""),
)

# A trigger's Idempotency-Key and the answer it got, per user (the key's scope):
# a retried request with the same key gets that answer again and starts nothing.
# Inserted in the trigger's own transaction before its runs, so a key never
# exists without its runs nor runs without their key (store/idempotency.py).
# Migration 0008.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("user_name", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    # sha256 (hex) of what was asked: route, job reference(s), body.
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    # The answer's bytes (UTF-8 JSON), replayed as they were sent.
    sa.Column("body", sa.Text, nullable=False),
    # Housekeeping deletes expired keys by one range scan.
    sa.Index("ix_idempotency_keys_created_at", "created_at"),
)
