"""Users, groups and roles."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import User
from datamill.domain.status import JobStatus
from datamill.errors import AlreadyExists
from datamill.store import precompiled
from datamill.store import tables as t
from datamill.store.db import Database, utcnow

BUILTIN_ROLES: dict[str, list[str]] = {
    "ADMIN": ["*"],
    "ANALYST": ["job.read", "job.run", "job.define", "data.read"],
}


_u, _r, _g = t.users, t.user_roles, t.user_groups
# One round trip: every authenticated request starts here. Built once: building
# and keying the union per call cost more CPU than running it (py-spy of
# bench/throughput.py, a quarter of a trigger's time in its thread).
_USER_ROLES_GROUPS = sa.union_all(
    sa.select(
        sa.literal("u").label("kind"),
        _u.c.password_hash.label("value"),
        _u.c.email,
        _u.c.session_epoch,
    ).where(_u.c.name == sa.bindparam("user_name")),
    sa.select(sa.literal("r"), _r.c.role_name, sa.null(), sa.null()).where(
        _r.c.user_name == sa.bindparam("user_name")
    ),
    sa.select(sa.literal("g"), _g.c.group_name, sa.null(), sa.null()).where(
        _g.c.user_name == sa.bindparam("user_name")
    ),
)


class UserRepository:
    """Reads and writes users, their groups and their roles."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Called inside the transaction that creates a user (e.g. their private
        # location); services/users.py create_user calls them as well.
        self.created_hooks: list[Callable[[Connection, str], None]] = []

    def run_created_hooks(self, conn: Connection, name: str) -> None:
        """Give a new user what every user has (called inside its transaction)."""
        for hook in self.created_hooks:
            hook(conn, name)

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
            self.run_created_hooks(conn, name)
            user = self.get(conn, name)
            assert user is not None
            return user

    def get(self, conn: Connection, name: str) -> User | None:
        """The user with this name, or None."""
        rows = precompiled.run(conn, _USER_ROLES_GROUPS, {"user_name": name}).all()
        found = [row for row in rows if row.kind == "u"]
        if not found:
            return None
        return User(
            name=name,
            password_hash=found[0].value,
            roles=tuple(sorted(row.value for row in rows if row.kind == "r")),
            groups=tuple(sorted(row.value for row in rows if row.kind == "g")),
            email=found[0].email,
            session_epoch=int(found[0].session_epoch),
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


# Below: connection-level functions for the user-management use cases, so one
# transaction can check, change and create a home folder all or nothing.


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """A named set of users that file permissions can grant rights to."""

    name: str
    members: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Role:
    """A named list of capabilities."""

    name: str
    capabilities: tuple[str, ...]

    @property
    def builtin(self) -> bool:
        """ADMIN and ANALYST come with every Datamill and cannot be changed."""
        return self.name in BUILTIN_ROLES


def _by_name(conn: Connection, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    # PostgreSQL sorts text by the database's locale, SQLite by code point; the
    # "C" collation makes both agree, so a page holds the same names everywhere.
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def count_names(conn: Connection, table: sa.Table) -> int:
    """How many rows the users, groups or roles table holds."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def page_of_names(conn: Connection, table: sa.Table, offset: int, limit: int) -> list[str]:
    """Names from the users, groups or roles table in name order, `limit` from `offset`."""
    if limit <= 0:
        return []
    column = table.c.name
    query = sa.select(column).order_by(_by_name(conn, column)).offset(offset).limit(limit)
    return list(conn.execute(query).scalars())


def existing_names(
    conn: Connection, table: sa.Table, names: Sequence[str], *, share_lock: bool = False
) -> set[str]:
    """Which of `names` exist in the table; `share_lock` keeps them from being deleted."""
    if not names:
        return set()
    query = sa.select(table.c.name).where(table.c.name.in_(list(names)))
    if share_lock:
        query = query.with_for_update(read=True)
    return set(conn.execute(query).scalars())


def get_users(conn: Connection, names: Sequence[str]) -> list[User]:
    """The users with these names, in the order given; unknown names are skipped."""
    if not names:
        return []
    wanted = list(names)
    rows = {r.name: r for r in conn.execute(sa.select(t.users).where(t.users.c.name.in_(wanted)))}
    roles = _memberships(conn, t.user_roles, "role_name", wanted)
    groups = _memberships(conn, t.user_groups, "group_name", wanted)
    return [
        User(
            name=name,
            password_hash=rows[name].password_hash,
            roles=tuple(sorted(roles.get(name, ()))),
            groups=tuple(sorted(groups.get(name, ()))),
            email=rows[name].email,
            session_epoch=rows[name].session_epoch,
        )
        for name in wanted
        if name in rows
    ]


def _memberships(
    conn: Connection, table: sa.Table, column: str, user_names: list[str]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    query = sa.select(table.c.user_name, table.c[column]).where(table.c.user_name.in_(user_names))
    for user_name, value in conn.execute(query):
        found.setdefault(user_name, []).append(value)
    return found


def insert_user(conn: Connection, name: str, password_hash: str, email: str | None) -> None:
    """Add a user row (no groups or roles yet)."""
    conn.execute(
        sa.insert(t.users).values(
            name=name, password_hash=password_hash, email=email, created_at=utcnow()
        )
    )


def set_email(conn: Connection, name: str, email: str | None) -> None:
    """Replace a user's e-mail address (None clears it)."""
    conn.execute(sa.update(t.users).where(t.users.c.name == name).values(email=email))


def replace_groups(conn: Connection, name: str, groups: Sequence[str]) -> None:
    """Make `groups` exactly the user's groups."""
    conn.execute(sa.delete(t.user_groups).where(t.user_groups.c.user_name == name))
    for group in groups:
        conn.execute(sa.insert(t.user_groups).values(user_name=name, group_name=group))


def replace_roles(conn: Connection, name: str, roles: Sequence[str]) -> None:
    """Make `roles` exactly the user's roles."""
    conn.execute(sa.delete(t.user_roles).where(t.user_roles.c.user_name == name))
    for role in roles:
        conn.execute(sa.insert(t.user_roles).values(user_name=name, role_name=role))


def update_password_hash(conn: Connection, name: str, password_hash: str) -> bool:
    """Replace a user's password hash; False if there is no such user."""
    result = conn.execute(
        sa.update(t.users).where(t.users.c.name == name).values(password_hash=password_hash)
    )
    return bool(result.rowcount)


def end_sessions(conn: Connection, name: str) -> None:
    """Raise the user's session epoch: every session cookie signed before is void."""
    users = t.users
    conn.execute(
        sa.update(users).where(users.c.name == name).values(session_epoch=users.c.session_epoch + 1)
    )


def rename_group(conn: Connection, old: str, new: str) -> None:
    """Give a group a new name; its memberships and file rights follow."""
    gp, ug = t.file_group_permissions, t.user_groups
    conn.execute(sa.update(gp).where(gp.c.group_name == old).values(group_name=new))
    conn.execute(sa.update(ug).where(ug.c.group_name == old).values(group_name=new))
    conn.execute(sa.update(t.groups).where(t.groups.c.name == old).values(name=new))


def delete_user(conn: Connection, name: str) -> None:
    """Remove a user with their group and role memberships and Idempotency-Keys.

    The keys go too: a user created later under the same name must not get
    this one's answers replayed.
    """
    conn.execute(sa.delete(t.idempotency_keys).where(t.idempotency_keys.c.user_name == name))
    conn.execute(sa.delete(t.user_groups).where(t.user_groups.c.user_name == name))
    conn.execute(sa.delete(t.user_roles).where(t.user_roles.c.user_name == name))
    conn.execute(sa.delete(t.users).where(t.users.c.name == name))


def holders_of_role(conn: Connection, role: str, *, lock: bool = False) -> list[str]:
    """Names of the users who hold `role`, sorted.

    With `lock`, the role's row is locked first, so two transactions that each
    take the role from a different holder cannot both see the other holder
    and leave nobody (SQLite's write transactions are serial anyway).
    """
    if lock:
        conn.execute(sa.select(t.roles.c.id).where(t.roles.c.name == role).with_for_update())
    query = sa.select(t.user_roles.c.user_name).where(t.user_roles.c.role_name == role)
    return sorted(conn.execute(query).scalars())


def insert_group(conn: Connection, name: str) -> None:
    """Add an empty group."""
    conn.execute(sa.insert(t.groups).values(name=name))


def get_groups(conn: Connection, names: Sequence[str]) -> list[Group]:
    """The groups with these names and their members, in the order given."""
    present = existing_names(conn, t.groups, names)
    members: dict[str, list[str]] = {}
    if present:
        query = sa.select(t.user_groups.c.group_name, t.user_groups.c.user_name).where(
            t.user_groups.c.group_name.in_(list(present))
        )
        for group, user in conn.execute(query):
            members.setdefault(group, []).append(user)
    return [
        Group(name=name, members=tuple(sorted(members.get(name, ()))))
        for name in names
        if name in present
    ]


def delete_group(conn: Connection, name: str) -> None:
    """Remove a group, its memberships and the file rights granted to it.

    The rights go too: a later group of the same name must not inherit them.
    """
    gp = t.file_group_permissions
    conn.execute(sa.delete(gp).where(gp.c.group_name == name))
    conn.execute(sa.delete(t.user_groups).where(t.user_groups.c.group_name == name))
    conn.execute(sa.delete(t.groups).where(t.groups.c.name == name))


def insert_role(conn: Connection, name: str, capabilities: Sequence[str]) -> None:
    """Add a role with its capabilities."""
    conn.execute(sa.insert(t.roles).values(name=name, capabilities=list(capabilities)))


def get_roles(conn: Connection, names: Sequence[str]) -> list[Role]:
    """The roles with these names, in the order given."""
    if not names:
        return []
    query = sa.select(t.roles.c.name, t.roles.c.capabilities).where(t.roles.c.name.in_(list(names)))
    found = {name: tuple(capabilities) for name, capabilities in conn.execute(query)}
    return [Role(name=name, capabilities=found[name]) for name in names if name in found]


def set_capabilities(conn: Connection, name: str, capabilities: Sequence[str]) -> None:
    """Replace a role's capabilities."""
    conn.execute(
        sa.update(t.roles).where(t.roles.c.name == name).values(capabilities=list(capabilities))
    )


def delete_role(conn: Connection, name: str) -> None:
    """Remove a role and take it from every user who held it."""
    conn.execute(sa.delete(t.user_roles).where(t.user_roles.c.role_name == name))
    conn.execute(sa.delete(t.roles).where(t.roles.c.name == name))


def hand_over_files(conn: Connection, from_owner: str, to_owner: str) -> int:
    """Make `to_owner` the owner of everything `from_owner` owns; returns how many entries.

    A deleted user's files must not wait, ownerless, for a later user who
    happens to be given the same name.
    """
    result = conn.execute(
        sa.update(t.files)
        .where(t.files.c.owner == from_owner)
        .values(owner=to_owner, updated_at=utcnow())
    )
    return int(result.rowcount)


def quiesce_job_files(conn: Connection, owner: str) -> int:
    """Make `owner`'s job files private and their workbooks MANUAL; returns how many changed.

    Run before a deleted user's files are handed to the ADMIN deleting them:
    a run reads with its owner's rights, so without this their workbooks would
    silently start reading with the ADMIN's rights, on their schedule, for
    whoever the deleted user had shared them with.
    """
    files = sa.select(t.files.c.id).where(t.files.c.owner == owner, t.files.c.is_folder.is_(False))
    configs = t.job_configurations
    rows = conn.execute(
        sa.select(configs.c.id, configs.c.definition).where(
            configs.c.file_id.in_(files), configs.c.trigger_mode != "MANUAL"
        )
    ).all()
    for row in rows:
        definition = {**dict(row.definition), "triggering": {"mode": "MANUAL"}}
        conn.execute(
            sa.update(configs)
            .where(configs.c.id == row.id)
            .values(definition=definition, trigger_mode="MANUAL", cron=None, next_fire_at=None)
        )
    conn.execute(
        sa.delete(t.file_group_permissions).where(t.file_group_permissions.c.file_id.in_(files))
    )
    conn.execute(
        sa.update(t.files)
        .where(t.files.c.id.in_(files))
        .values(others_readable=False, others_writable=False, others_executable=False)
    )
    return len(rows)


def waiting_runs(conn: Connection, owner: str) -> list[int]:
    """Ids of the runs of `owner`'s jobs that have not started (queued, or waiting on others)."""
    executions = t.executions
    owned = sa.select(t.files.c.id).where(t.files.c.owner == owner)
    waiting = (JobStatus.QUEUED.value, JobStatus.WAITING_FOR_OTHER_JOB.value)
    rows = conn.execute(
        sa.select(executions.c.id)
        .where(executions.c.file_id.in_(owned), executions.c.status.in_(waiting))
        .order_by(executions.c.id)
    )
    return [int(row.id) for row in rows]


def set_file_owner(conn: Connection, file_id: int, owner: str) -> None:
    """Give one file or folder to `owner`."""
    conn.execute(
        sa.update(t.files).where(t.files.c.id == file_id).values(owner=owner, updated_at=utcnow())
    )
