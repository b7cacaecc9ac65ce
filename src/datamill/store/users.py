"""Users, groups and roles."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import User
from datamill.errors import AlreadyExists
from datamill.store import tables as t
from datamill.store.db import Database, utcnow

BUILTIN_ROLES: dict[str, list[str]] = {
    "ADMIN": ["*"],
    "ANALYST": ["job.read", "job.run", "job.define", "data.read"],
}


class UserRepository:
    """Reads and writes users, their groups and their roles."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_builtin_roles(self) -> None:
        """Create ADMIN and ANALYST if missing."""
        with self._db.write() as conn:
            existing = set(conn.execute(sa.select(t.roles.c.name)).scalars())
            for name, capabilities in BUILTIN_ROLES.items():
                if name not in existing:
                    conn.execute(sa.insert(t.roles).values(name=name, capabilities=capabilities))

    def create(
        self,
        name: str,
        password_hash: str,
        *,
        roles: tuple[str, ...] = ("ANALYST",),
        groups: tuple[str, ...] = (),
        email: str | None = None,
    ) -> User:
        """Create a user with roles and groups (groups are created as needed)."""
        with self._db.write() as conn:
            if conn.execute(sa.select(t.users.c.id).where(t.users.c.name == name)).first():
                raise AlreadyExists(f"user {name!r} already exists")
            conn.execute(
                sa.insert(t.users).values(
                    name=name, password_hash=password_hash, email=email, created_at=utcnow()
                )
            )
            for group in groups:
                if not conn.execute(
                    sa.select(t.groups.c.id).where(t.groups.c.name == group)
                ).first():
                    conn.execute(sa.insert(t.groups).values(name=group))
                conn.execute(sa.insert(t.user_groups).values(user_name=name, group_name=group))
            for role in roles:
                conn.execute(sa.insert(t.user_roles).values(user_name=name, role_name=role))
            user = self.get(conn, name)
            assert user is not None
            return user

    def get(self, conn: Connection, name: str) -> User | None:
        """The user with this name, or None."""
        row = conn.execute(sa.select(t.users).where(t.users.c.name == name)).first()
        if row is None:
            return None
        roles = conn.execute(
            sa.select(t.user_roles.c.role_name).where(t.user_roles.c.user_name == name)
        ).scalars()
        groups = conn.execute(
            sa.select(t.user_groups.c.group_name).where(t.user_groups.c.user_name == name)
        ).scalars()
        return User(
            name=row.name,
            password_hash=row.password_hash,
            roles=tuple(sorted(roles)),
            groups=tuple(sorted(groups)),
            email=row.email,
        )

    def count(self) -> int:
        """How many users exist."""
        with self._db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.users)).scalar_one())

    def set_password_hash(self, name: str, password_hash: str) -> None:
        """Replace a user's password hash."""
        with self._db.write() as conn:
            conn.execute(
                sa.update(t.users).where(t.users.c.name == name).values(password_hash=password_hash)
            )
