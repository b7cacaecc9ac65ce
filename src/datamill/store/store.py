"""The Store: the one place that reads and writes metadata."""

from __future__ import annotations

from datamill.observability.metrics import Metrics
from datamill.store.db import Database
from datamill.store.files import FileRepository
from datamill.store.jobs import JobRepository
from datamill.store.locations import FilePolicy
from datamill.store.migrate import upgrade
from datamill.store.queue import ExecutionQueue
from datamill.store.users import UserRepository


class Store:
    """Metadata access for services and workers, over SQLite or PostgreSQL."""

    def __init__(
        self, database_url: str, data_root: str, *, max_running: int = 0, fair_shares: bool = True
    ) -> None:
        self.db = Database(database_url)
        # The node's metrics: the worker and the API of one process share them.
        self.metrics = Metrics()
        self.metrics.watch_store_errors(self.db.engine)
        self.files = FileRepository(self.db)
        self.jobs = JobRepository(self.db, self.files)
        self.users = UserRepository(self.db)
        self.queue = ExecutionQueue(
            self.db, data_root, max_running=max_running, fair_shares=fair_shares
        )
        self.data_root = data_root
        # Set at start-up from the settings (bootstrap.install_locations); without
        # it no definition may name a file or a database (fail closed).
        self.file_policy: FilePolicy | None = None

    def migrate(self) -> None:
        """Bring the schema up to date and create the built-in rows."""
        upgrade(self.db)
        self.files.ensure_default_tree()
        self.users.ensure_builtin_roles()

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()
