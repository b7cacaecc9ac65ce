"""All configuration, read once at start-up from DATAMILL_* environment variables.

Nothing creates a Settings object at import time: the CLI builds one and passes
it down, so tests can run many differently configured servers in one process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from datamill.domain.definitions import ENGINE_NAMES, EngineName
from datamill.domain.retry import MAX_RETRIES, MAX_RETRY_DELAY_SECONDS, RetryPolicy
from datamill.engine.objects import ObjectStore, is_uri, parse


class Settings(BaseSettings):
    """Datamill's settings; each field is documented once, here."""

    model_config = SettingsConfigDict(env_prefix="DATAMILL_", extra="ignore")

    home: Path = Field(
        default=Path(".datamill"),
        description="Folder for the embedded metadata database, data results and temp files.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata store; default SQLite under home.",
    )
    data_root: Path | None = Field(
        default=None, description="Where data results live; default <home>/data."
    )
    source_roots: list[Path | str] | None = Field(
        default=None,
        description=(
            "Folders import sources may read, or object-store prefixes (s3a://bucket/prefix,"
            " docs/scale-out.md); default <home>/files."
        ),
    )
    sink_roots: list[Path | str] | None = Field(
        default=None,
        description=(
            "Folders export sinks may write, or object-store prefixes (s3a://bucket/prefix);"
            " default <home>/files."
        ),
    )
    # ---- the object store of s3a:// roots (docs/scale-out.md, "Object stores")
    s3_endpoint: str | None = Field(
        default=None,
        description=(
            "The S3 endpoint of s3a:// roots (https://host:port, or http:// for a store on"
            " a private network); default AWS's own for s3_region."
        ),
    )
    s3_region: str = Field(default="us-east-1", description="The S3 region of s3a:// roots.")
    s3_access_key_id: str | None = Field(
        default=None,
        description="The access key of s3a:// roots; default the AWS chain (environment, profile).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="The secret key that goes with s3_access_key_id."
    )
    # ---- locations and connections (docs/security.md)
    database_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts (or host:port) a database URL written inline in a definition may name,"
            ' as JSON, e.g. ["warehouse.example"]; default none: use connections.'
        ),
    )
    source_max_files: int = Field(
        default=10_000, ge=1, description="At most this many files may one source glob match."
    )
    source_max_bytes: int | None = Field(
        default=None,
        ge=1,
        description=(
            "At most this many bytes may one run copy from the object store (the sum of the"
            " objects an s3a:// source names); default none: only the staging disk's free"
            " space (less 1 GiB) bounds it."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8080, description="Port of the HTTP server.")
    timezone: str | None = Field(
        default=None, description="IANA zone for timestamps on the wire; default the host's."
    )
    concurrency: int = Field(
        default=2, ge=1, description="Executions one worker runs at once (warm child processes)."
    )
    embedded_worker: bool = Field(
        default=True,
        description=(
            "Whether `datamill serve` runs a worker (in a child process it supervises). False (or"
            " `serve --no-worker`): an API-only node that queues executions and runs none;"
            " `datamill worker` processes on the same database run them (on SQLite they"
            " notice new work within poll_seconds; PostgreSQL wakes them at once)."
        ),
    )
    max_running: int = Field(
        default=0,
        ge=0,
        description="Executions running at once across all workers; 0 for no global limit.",
    )
    engine: EngineName = Field(
        default="duckdb",
        description=(
            "The engine of jobs whose definition names none (docs/engines.md): 'duckdb' runs"
            " in the worker's machine, 'spark' on Apache Spark through Spark Connect."
        ),
    )
    engines: str | None = Field(
        default=None,
        description=(
            "Comma-separated engines jobs may name in their `engine` member, such as"
            " 'duckdb,spark'; default: engine alone. A job naming another is refused when"
            " saved, and its runs end in ERROR if the list shrank since. It must hold engine."
            " Enable Spark deliberately: on it, the SQL check is the only wall"
            " (docs/security.md)."
        ),
    )
    spark_remote: str | None = Field(
        default=None,
        description=(
            "Spark Connect address of a cluster, such as sc://host:15002. Unset: Spark runs"
            " in local mode on the worker's machine (needs Java and the `spark` extra)."
        ),
    )
    spark_file_access: Literal["auto", "paths"] = Field(
        default="auto",
        description=(
            "How a Spark server reads import source files (docs/engines.md). 'auto': a server"
            " whose every address is this machine's reads the files the worker holds open,"
            " through /proc/<worker pid>/fd; any other reads the checked paths, each checked"
            " again after the read. 'paths' for a server on this machine that cannot open the"
            " worker's /proc: under another user, or in a container."
        ),
    )
    engine_memory_limit: str = Field(
        default="2GB", description="DuckDB memory limit per execution; beyond it, it spills."
    )
    engine_threads: int = Field(default=2, ge=1, description="DuckDB threads per execution.")
    engine_isolation: Literal["worker", "run"] = Field(
        default="worker",
        description=(
            "'worker': each warm child keeps one DuckDB database, locked down to the data,"
            " spill and source folders, and gives every run a fresh connection in it."
            " 'run': every run gets a fresh database locked down to its own files"
            " (stricter, ~20 ms more CPU per run)."
        ),
    )
    heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a worker proves it is alive."
    )
    worker_lost_seconds: float = Field(
        default=15.0,
        gt=0,
        description="A worker silent this long is lost; its running executions end in ERROR.",
    )
    # Retries (docs/jobs.md, "Retries"; docs/decisions.md, "Crashed runs finish anyway").
    run_retries: int = Field(
        default=2,
        ge=0,
        le=MAX_RETRIES,
        description=(
            "How often a run is started again after its worker died (kill -9, a lost"
            " machine) or after a failure its job declares passing (a database that refused"
            " the connection), unless the job sets its own `retries`; then it ends in ERROR."
            " 2: a run survives a crash and a second crash during the recovery, while a job"
            " that itself brings its worker down stops after three attempts. 0: no retries."
        ),
    )
    run_retry_delay_seconds: int = Field(
        default=10,
        ge=0,
        le=MAX_RETRY_DELAY_SECONDS,
        description=(
            "Seconds a run waits, QUEUED, before it is started again, unless the job sets"
            " its own `retryDelay`; a stop during the wait cancels it."
        ),
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, description="Fallback polling for new work when no wake-up arrives."
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On shutdown, how long running executions may finish before handed back.",
    )
    stop_wait_seconds: float = Field(
        default=30.0, ge=0, description="How long a stop request waits for the run to end."
    )
    housekeeping_seconds: float = Field(
        default=30.0, gt=0, description="How often a worker removes deleted and expired data."
    )
    history_days: float = Field(
        default=28.0, gt=0, description="Ended executions older than this are dropped."
    )
    # Run limits and slot shares: one user cannot hold the workers for others
    # (docs/security.md, "Run limits and slot shares").
    run_time_limit_seconds: int = Field(
        default=6 * 3600,
        ge=1,
        description=(
            "How long one run may take, from the moment its worker starts it; a run over"
            " its limit is killed and ends in ERROR. A job may set its own"
            " (`limits.timeSeconds`), up to run_time_limit_max_seconds."
        ),
    )
    run_time_limit_max_seconds: int = Field(
        default=24 * 3600,
        ge=1,
        description=(
            "The most a job may set as its own time limit; saving a job above it is"
            " refused, and runs of jobs saved before it was lowered are held to it."
        ),
    )
    run_output_limit_bytes: int = Field(
        default=10 * 1024**3,
        ge=1,
        description=(
            "How many bytes one run may stage as its output (data results, export files),"
            " watched while it runs and checked before publishing; over it, the run ends in"
            " ERROR and nothing is published. A job may set its own (`limits.outputBytes`),"
            " up to run_output_limit_max_bytes. Engine spill files do not count."
        ),
    )
    run_output_limit_max_bytes: int = Field(
        default=100 * 1024**3,
        ge=1,
        description="The most a job may set as its own output limit (as for the time limit).",
    )
    fair_slot_shares: bool = Field(
        default=True,
        description=(
            "While runs of several users wait, a free worker slot goes to the waiting user"
            " who holds the fewest running slots (oldest run first among equals), so each"
            " gets an equal share; a user alone may use every slot. A run counts for the"
            " user who triggered it (scheduled and data-driven runs: the job's owner)."
            " False: strictly oldest run first."
        ),
    )
    # ---- operating (docs/observability.md)
    metrics: Literal["off", "auth", "open"] = Field(
        default="auth",
        description=(
            "GET /metrics on the API port: 'auth' needs a user whose roles grant"
            " metrics.read (ADMIN does); 'open' needs no credentials; 'off' removes it"
            " (and the metrics port)."
        ),
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "Also serve the metrics, without credentials, on this port of metrics_host"
            " (for a scraper on a private network); default none."
        ),
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics port binds.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as readable text, or one JSON object per line ('json').",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="The least severe log lines written; DEBUG adds a line per HTTP request.",
    )
    admin_password: str | None = Field(
        default=None, description="Password of the first admin; generated and printed if unset."
    )
    demo: bool = Field(default=False, description="Set up the demo workspace (admin/admin).")

    # --- one user cannot stop the server for others (docs/security.md) ---
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body accepted; beyond it the answer is 413.",
    )
    max_locations_per_user: int = Field(
        default=100,
        ge=1,
        description=(
            "Locations and connections one user who is not ADMIN may own together; one more"
            " is a 409 and makes nothing. Every save and run of a file job, and every"
            " location made, looks at every location, so one user's thousands would slow"
            " everyone's (docs/security.md)."
        ),
    )
    max_waits_per_user: int = Field(
        default=100,
        ge=1,
        description=(
            "Requests with `wait` and event streams one user may hold open at once on this"
            " server (docs/waiting.md); one more is a 429 with Retry-After and starts nothing."
        ),
    )
    login_failures_per_name: int = Field(
        default=10,
        ge=1,
        description="Failed logins one user name may have in a burst before a 429.",
    )
    login_failures_per_client: int = Field(
        default=30,
        ge=1,
        description="Failed logins one client address may have in a burst before a 429.",
    )
    login_refill_seconds: float = Field(
        default=1.0,
        gt=0,
        description="After this many seconds one failed login of a name or address is forgiven.",
    )
    trusted_proxies: str | None = Field(
        default=None,
        description=(
            "Comma-separated addresses of reverse proxies whose X-Forwarded-For names the"
            " client (for the sign-in limits); default none: the peer's own address counts."
        ),
    )
    session_lifetime_seconds: float = Field(
        default=8 * 3600,
        gt=0,
        description=(
            "How long the session cookie of a browser-style login (GET /browser) stays"
            " valid, counted from the login; logout, a password change or deleting"
            " the user end it sooner."
        ),
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Key that signs session cookies; default a random key made once in"
            " <home>/session-secret (mode 0600). Give every API node of one"
            " installation the same key, or the same home."
        ),
    )
    password_checks_at_once: int = Field(
        default=2,
        ge=1,
        description="argon2 password verifications running at once; the rest wait their turn.",
    )

    @model_validator(mode="after")
    def _defaults_within_maxima(self) -> Settings:
        if self.run_time_limit_seconds > self.run_time_limit_max_seconds:
            raise ValueError("run_time_limit_seconds is above run_time_limit_max_seconds")
        if self.run_output_limit_bytes > self.run_output_limit_max_bytes:
            raise ValueError("run_output_limit_bytes is above run_output_limit_max_bytes")
        return self

    @model_validator(mode="after")
    def _engines_known_and_holding_the_default(self) -> Settings:
        unknown = sorted(self.enabled_engines - set(ENGINE_NAMES))
        if unknown:
            raise ValueError(
                f"engines names unknown engines {', '.join(map(repr, unknown))};"
                f" known: {', '.join(ENGINE_NAMES)}"
            )
        if self.engine not in self.enabled_engines:
            raise ValueError(
                f"engines ({self.engines}) does not hold engine ({self.engine}),"
                " the engine of every job that names none"
            )
        return self

    @property
    def enabled_engines(self) -> frozenset[str]:
        """The engines jobs may name (and run on): `engines`, or `engine` alone."""
        if self.engines is None:
            return frozenset({self.engine})
        return frozenset(name.strip() for name in self.engines.split(",") if name.strip())

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of every job that sets none of its own."""
        return RetryPolicy(self.run_retries, self.run_retry_delay_seconds)

    @functools.cached_property
    def resolved_home(self) -> Path:
        """The absolute home folder."""
        return self.home.expanduser().resolve()

    @functools.cached_property
    def resolved_database_url(self) -> str:
        """The metadata database URL."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'datamill.db'}"

    @functools.cached_property
    def resolved_data_root(self) -> Path:
        """The folder holding published data results."""
        return (self.data_root or self.resolved_home / "data").expanduser().resolve()

    @functools.cached_property
    def resolved_source_roots(self) -> tuple[str, ...]:
        """Absolute folders import sources may read."""
        return _resolved_roots(self.source_roots or [self.resolved_home / "files"])

    @functools.cached_property
    def resolved_sink_roots(self) -> tuple[str, ...]:
        """Absolute folders export sinks may write."""
        return _resolved_roots(self.sink_roots or [self.resolved_home / "files"])

    @functools.cached_property
    def object_store(self) -> ObjectStore | None:
        """How to reach the object store of s3a:// roots; None when no root is one."""
        if not any(is_uri(r) for r in (*self.resolved_source_roots, *self.resolved_sink_roots)):
            return None
        secret = self.s3_secret_access_key
        return ObjectStore(
            endpoint=self.s3_endpoint,
            region=self.s3_region,
            access_key=self.s3_access_key_id,
            secret_key=secret.get_secret_value() if secret is not None else None,
        )

    @functools.cached_property
    def local_file_roots(self) -> tuple[str, ...]:
        """Every source and sink root that is a folder on this machine (not an object store)."""
        roots = (*self.resolved_source_roots, *self.resolved_sink_roots)
        return tuple(r for r in roots if not is_uri(r))

    def ensure_folders(self) -> None:
        """Create the home (private when new), data, staging and default file folders."""
        home = self.resolved_home
        if not home.exists():
            # The home holds the SQLite database (password hashes, connection
            # passwords) and the session key: a new one is the service
            # account's alone, whatever the umask. An existing home keeps the
            # mode its operator gave it.
            os.makedirs(home, exist_ok=True)
            os.chmod(home, 0o700)
        for folder in (
            self.resolved_home,
            self.resolved_data_root,
            self.staging_root,
            self.temp_root,
            *(Path(p) for p in self.local_file_roots),
        ):
            os.makedirs(folder, exist_ok=True)

    @functools.cached_property
    def staging_root(self) -> Path:
        """Where runs write before they are published (same file system as the data root)."""
        return self.resolved_data_root / ".staging"

    @functools.cached_property
    def temp_root(self) -> Path:
        """Where the engine spills."""
        return self.resolved_home / "tmp"


def _resolved_roots(roots: list[Path | str]) -> tuple[str, ...]:
    """Local roots made absolute and real; object-store roots in their canonical spelling."""
    found = []
    for root in roots:
        text = str(root)
        if isinstance(root, str) and is_uri(root):
            # Checked at start-up: a root an operator mistyped fails loudly, not later.
            found.append(parse(text, "DATAMILL_SOURCE_ROOTS/DATAMILL_SINK_ROOTS").uri)
        else:
            found.append(str(Path(text).expanduser().resolve()))
    return tuple(found)
