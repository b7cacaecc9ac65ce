"""User management: users, groups, roles and passwords (spec §7). Only ADMIN manages."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import NO_PASSWORD, User
from datamill.errors import AlreadyExists, Conflict, Forbidden, InvalidInput, NotFound
from datamill.services.auth import hash_password
from datamill.store import executions
from datamill.store import tables as t
from datamill.store import users as user_store
from datamill.store.files import ROOT_OWNER
from datamill.store.store import Store
from datamill.store.users import Group, Role

T = TypeVar("T")

ADMIN_ROLE = "ADMIN"
DEFAULT_ROLES = ("ANALYST",)
HOME_ROOT = "/Users"
MAX_NAME_LENGTH = 128  # the width of the name columns
MAX_USER_NAME_BYTES = 255  # a file name's limit (NAME_MAX): a user name names a folder
MAX_EMAIL_LENGTH = 255
MAX_PASSWORD_LENGTH = 1024
MAX_CAPABILITIES = 100
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000
# The owner of the root and default folders; a user of that name would own them.
RESERVED_USER_NAMES = frozenset({ROOT_OWNER})
_CAPABILITY = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
# Datameer's names (WORKBOOK_EXECUTE, ...): kept as given, whether or not they mean
# anything here (services/permissions.py DATAMEER_CAPABILITIES), so roles round-trip.
_DATAMEER_CAPABILITY = re.compile(r"^[A-Z][A-Z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclasses.dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a name-ordered list, with the size of the whole list."""

    max_results: int
    total: int
    elements: list[T]


@dataclasses.dataclass(frozen=True, slots=True)
class NewUser:
    """What it takes to create a user."""

    name: str
    password: str | None  # None: no password yet, as Datameer clients create users
    email: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = DEFAULT_ROLES


@dataclasses.dataclass(frozen=True, slots=True)
class UserChanges:
    """A partial update of a user: None leaves a part as it is."""

    email: str | None = None
    change_email: bool = False
    groups: tuple[str, ...] | None = None
    roles: tuple[str, ...] | None = None


def require_admin(actor: User) -> None:
    """Raise Forbidden unless the caller holds the ADMIN role."""
    if not actor.is_admin:
        raise Forbidden("only a user with the ADMIN role may manage users, groups and roles")


def check_name(kind: str, name: str) -> str:
    """The name if it is a valid user, group or role name, else InvalidInput."""
    if not name:
        raise InvalidInput(f"the {kind} name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"the {kind} name is longer than {MAX_NAME_LENGTH} characters")
    if name != name.strip():
        raise InvalidInput(f"the {kind} name {name!r} must not start or end with a space")
    if "/" in name:
        # It would split the home folder path and the routes that name it.
        raise InvalidInput(f"the {kind} name {name!r} must not contain '/'")
    if name in (".", ".."):
        raise InvalidInput(f"{name!r} is not a valid {kind} name")
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in name):
        raise InvalidInput(f"the {kind} name {name!r} must not contain control characters")
    if kind == "user":
        if ":" in name:
            # HTTP Basic splits user and password at the first ':'; such a user could never log in.
            raise InvalidInput(f"the user name {name!r} must not contain ':'")
        if name.startswith("."):
            # It names a hidden folder in the users root, where the private
            # folders of deleted users are set aside (`.deleted-...`): such a
            # user could be handed another's old files.
            raise InvalidInput(f"the user name {name!r} must not start with '.'")
        if name in RESERVED_USER_NAMES:
            raise InvalidInput(f"the user name {name!r} is reserved")
        if len(name.encode()) > MAX_USER_NAME_BYTES:
            # It names the user's private folder: past a file name's limit the
            # folder cannot be made, which said "something is in the way" (409).
            raise InvalidInput(
                f"the user name is longer than {MAX_USER_NAME_BYTES} bytes in UTF-8"
                " (it names the user's private folder)"
            )
    return name


def check_email(email: str | None) -> str | None:
    """The e-mail address ('' means none), else InvalidInput."""
    if not email:
        return None
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise InvalidInput(f"{email!r} is not an e-mail address like name@example.com")
    return email


def check_password(password: str) -> str:
    """The password if it can be used, else InvalidInput."""
    if not password:
        raise InvalidInput("the password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    return password


def check_capabilities(capabilities: Sequence[str]) -> tuple[str, ...]:
    """The capabilities without repeats, in the order given, else InvalidInput."""
    if len(capabilities) > MAX_CAPABILITIES:
        raise InvalidInput(f"a role may have at most {MAX_CAPABILITIES} capabilities")
    for capability in capabilities:
        if capability == "*":
            raise InvalidInput("'*' (everything) is reserved for the built-in ADMIN role")
        if len(capability) > 64 or not (
            _CAPABILITY.match(capability) or _DATAMEER_CAPABILITY.match(capability)
        ):
            raise InvalidInput(
                f"{capability!r} is not a capability name: use lower-case dotted words"
                " such as job.read, job.run, job.define, data.read, or Datameer's"
                " upper-case names such as WORKBOOK_EXECUTE"
            )
    return tuple(dict.fromkeys(capabilities))


def page_bounds(start: int, max_results: int) -> tuple[int, int]:
    """Offset and page size, the size capped so one request cannot ask for everything."""
    if start < 0:
        raise InvalidInput("startIndex must be 0 or more")
    if max_results < 0:
        raise InvalidInput("maxResults must be 0 or more")
    return start, min(max_results, MAX_PAGE_SIZE)


def _page(
    store: Store,
    table: sa.Table,
    start: int,
    max_results: int,
    fetch: Callable[[Connection, list[str]], list[T]],
) -> Page[T]:
    offset, limit = page_bounds(start, max_results)
    with store.db.read() as conn:
        total = user_store.count_names(conn, table)
        names = user_store.page_of_names(conn, table, offset, limit)
        return Page(max_results=limit, total=total, elements=fetch(conn, names))


def _unknown(conn: Connection, table: sa.Table, kind: str, names: Sequence[str]) -> None:
    # A share lock keeps a concurrent delete from removing them before we commit.
    present = user_store.existing_names(conn, table, names, share_lock=True)
    missing = [name for name in names if name not in present]
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        raise InvalidInput(f"unknown {kind}(s): {listed}; create them first")


# --- users -------------------------------------------------------------------------------


def list_users(store: Store, actor: User, start: int, max_results: int) -> Page[User]:
    """A page of users in name order (ADMIN only)."""
    require_admin(actor)
    return _page(store, t.users, start, max_results, user_store.get_users)


def get_user(store: Store, actor: User, name: str) -> User:
    """One user: any user for ADMIN, otherwise only oneself."""
    if name != actor.name:
        require_admin(actor)
    with store.db.read() as conn:
        user = store.users.get(conn, name)
    if user is None:
        raise NotFound(f"user {name!r} doesn't exist")
    return user


def create_user(store: Store, actor: User, new: NewUser) -> User:
    """Create a user with its home folder /Users/<name>, all or nothing."""
    require_admin(actor)
    check_name("user", new.name)
    email = check_email(new.email)
    if new.password is not None:
        check_password(new.password)
    groups = tuple(dict.fromkeys(new.groups))
    roles = tuple(dict.fromkeys(new.roles))
    # Checked once before the slow hash, so a bad request fails fast, and again
    # in the transaction, which is what counts.
    with store.db.read() as conn:
        _check_new_user(store, conn, new.name, groups, roles)
    # Without a password nobody can log in as the user until
    # PUT /rest/user-management/password/<name> sets one (services/auth.py).
    password_hash = NO_PASSWORD if new.password is None else hash_password(new.password)
    _ensure_home_root(store)
    try:
        with store.db.write() as conn:
            _check_new_user(store, conn, new.name, groups, roles)
            user_store.insert_user(conn, new.name, password_hash, email)
            user_store.replace_groups(conn, new.name, groups)
            user_store.replace_roles(conn, new.name, roles)
            _make_home(store, conn, new.name)
            store.users.run_created_hooks(conn, new.name)
            created = store.users.get(conn, new.name)
    except sa.exc.IntegrityError:
        # A concurrent create of the same name won the race on the unique key.
        raise AlreadyExists(f"user {new.name!r} already exists") from None
    assert created is not None
    return created


def _check_new_user(
    store: Store, conn: Connection, name: str, groups: Sequence[str], roles: Sequence[str]
) -> None:
    if store.users.get(conn, name) is not None:
        raise AlreadyExists(f"user {name!r} already exists")
    _unknown(conn, t.groups, "group", groups)
    _unknown(conn, t.roles, "role", roles)


def _ensure_home_root(store: Store) -> None:
    # /Users belongs to the system: ensure_folder would give missing parents to the
    # new user. It is made in its own transaction so that two first users created
    # at once cannot fail on it with a duplicate that looks like their own.
    try:
        with store.db.write() as conn:
            store.files.ensure_folder(conn, HOME_ROOT, ROOT_OWNER)
    except sa.exc.IntegrityError:
        pass  # the other one made it


def _make_home(store: Store, conn: Connection, name: str) -> None:
    folder_id = store.files.ensure_folder(conn, f"{HOME_ROOT}/{name}", name)
    # The folder may be left over from a deleted user of the same name: it is handed
    # to the new user, and a home is private like a Datameer home folder.
    user_store.set_file_owner(conn, folder_id, name)
    store.files.set_others_flags(conn, folder_id, readable=False, writable=False, executable=False)
    store.files.clear_group_flags(conn, folder_id)  # shared by an ADMIN since, say


def update_user(store: Store, actor: User, name: str, changes: UserChanges) -> None:
    """Change a user's e-mail, groups or roles; the last ADMIN keeps the role."""
    require_admin(actor)
    email = check_email(changes.email) if changes.change_email else None
    with store.db.write() as conn:
        if store.users.get(conn, name) is None:
            raise NotFound(f"user {name!r} doesn't exist")
        if changes.groups is not None:
            groups = tuple(dict.fromkeys(changes.groups))
            _unknown(conn, t.groups, "group", groups)
            user_store.replace_groups(conn, name, groups)
        if changes.roles is not None:
            roles = tuple(dict.fromkeys(changes.roles))
            # The exclusive lock comes before _unknown's share lock on the same row:
            # two updates that both held the share lock would deadlock upgrading it.
            admins = user_store.holders_of_role(conn, ADMIN_ROLE, lock=True)
            _unknown(conn, t.roles, "role", roles)
            if ADMIN_ROLE not in roles and admins == [name]:
                raise Conflict(
                    f"{name!r} is the last user with the ADMIN role and must keep it;"
                    " give the ADMIN role to another user first"
                )
            user_store.replace_roles(conn, name, roles)
        if changes.change_email:
            user_store.set_email(conn, name, email)


def delete_user(store: Store, actor: User, name: str) -> None:
    """Delete a user; what they owned goes to the ADMIN deleting them (jobs private, MANUAL)."""
    require_admin(actor)
    with store.db.write() as conn:
        admins = user_store.holders_of_role(conn, ADMIN_ROLE, lock=True)
        if store.users.get(conn, name) is None:
            raise NotFound(f"user {name!r} doesn't exist")
        if admins == [name]:
            raise Conflict(
                f"{name!r} is the last user with the ADMIN role and cannot be deleted;"
                " give the ADMIN role to another user first"
            )
        if name == actor.name:
            # Their files would go to a user who no longer exists.
            raise Conflict("you cannot delete yourself; ask another ADMIN to do it")
        # Their jobs stop running by themselves and stop being shared (A1): from
        # now on they read with the ADMIN's rights, which only the ADMIN may use,
        # deliberately, by sharing or re-enabling them.
        user_store.quiesce_job_files(conn, name)
        # Their runs not yet started would start as the ADMIN and name their
        # private location by path: a user made again with the name got the
        # old user's export in her new folder (attack 13). They end CANCELED.
        for execution_id in user_store.waiting_runs(conn, name):
            executions.request_stop(conn, execution_id, by=actor.name)
        user_store.hand_over_files(conn, name, actor.name)
        user_store.delete_user(conn, name)


def require_password_right(actor: User, name: str) -> None:
    """Raise Forbidden unless the caller may set `name`'s password: their own, or ADMIN."""
    if name != actor.name and not actor.is_admin:
        raise Forbidden("you may change only your own password")


def change_password(store: Store, actor: User, name: str, password: str) -> None:
    """Set a new password; the old one stops working at once (the auth cache keys on the hash)."""
    require_password_right(actor, name)
    password_hash = hash_password(check_password(password))
    with store.db.write() as conn:
        if not user_store.update_password_hash(conn, name, password_hash):
            raise NotFound(f"user {name!r} doesn't exist")


# --- groups ------------------------------------------------------------------------------


def list_groups(store: Store, actor: User, start: int, max_results: int) -> Page[Group]:
    """A page of groups in name order with their members (ADMIN only)."""
    require_admin(actor)
    return _page(store, t.groups, start, max_results, user_store.get_groups)


def get_group(store: Store, actor: User, name: str) -> Group:
    """One group with its members (ADMIN only)."""
    require_admin(actor)
    with store.db.read() as conn:
        found = user_store.get_groups(conn, [name])
    if not found:
        raise NotFound(f"group {name!r} doesn't exist")
    return found[0]


def create_group(store: Store, actor: User, name: str) -> None:
    """Create an empty group (ADMIN only)."""
    require_admin(actor)
    check_name("group", name)
    try:
        with store.db.write() as conn:
            if user_store.existing_names(conn, t.groups, [name]):
                raise AlreadyExists(f"group {name!r} already exists")
            user_store.insert_group(conn, name)
    except sa.exc.IntegrityError:
        raise AlreadyExists(f"group {name!r} already exists") from None


def rename_group(store: Store, actor: User, name: str, new_name: str) -> None:
    """Rename a group (ADMIN only); its members and the file rights it holds follow."""
    require_admin(actor)
    check_name("group", new_name)
    if new_name == name:
        # Sending a group back unchanged is not an error, but it must exist.
        get_group(store, actor, name)
        return
    try:
        with store.db.write() as conn:
            # The lock keeps a concurrent delete or rename of the group out until we commit.
            if not user_store.existing_names(conn, t.groups, [name], share_lock=True):
                raise NotFound(f"group {name!r} doesn't exist")
            if user_store.existing_names(conn, t.groups, [new_name]):
                raise AlreadyExists(f"group {new_name!r} already exists")
            user_store.rename_group(conn, name, new_name)
    except sa.exc.IntegrityError:
        raise AlreadyExists(f"group {new_name!r} already exists") from None


def delete_group(store: Store, actor: User, name: str) -> None:
    """Delete a group: its members leave it and the file rights it had are dropped."""
    require_admin(actor)
    with store.db.write() as conn:
        if not user_store.existing_names(conn, t.groups, [name]):
            raise NotFound(f"group {name!r} doesn't exist")
        user_store.delete_group(conn, name)


# --- roles -------------------------------------------------------------------------------


def list_roles(store: Store, actor: User, start: int, max_results: int) -> Page[Role]:
    """A page of roles in name order (ADMIN only)."""
    require_admin(actor)
    return _page(store, t.roles, start, max_results, user_store.get_roles)


def get_role(store: Store, actor: User, name: str) -> Role:
    """One role with its capabilities (ADMIN only)."""
    require_admin(actor)
    with store.db.read() as conn:
        return _existing_role(conn, name)


def _existing_role(conn: Connection, name: str) -> Role:
    found = user_store.get_roles(conn, [name])
    if not found:
        raise NotFound(f"role {name!r} doesn't exist")
    return found[0]


def _refuse_builtin(role: Role, verb: str) -> None:
    if role.builtin:
        raise Conflict(f"the built-in role {role.name!r} cannot be {verb}")


def create_role(store: Store, actor: User, name: str, capabilities: Sequence[str]) -> None:
    """Create a custom role (ADMIN only)."""
    require_admin(actor)
    check_name("role", name)
    checked = check_capabilities(capabilities)
    try:
        with store.db.write() as conn:
            if user_store.existing_names(conn, t.roles, [name]):
                raise AlreadyExists(f"role {name!r} already exists")
            user_store.insert_role(conn, name, checked)
    except sa.exc.IntegrityError:
        raise AlreadyExists(f"role {name!r} already exists") from None


def update_role(store: Store, actor: User, name: str, capabilities: Sequence[str]) -> None:
    """Replace a custom role's capabilities (ADMIN only; built-in roles stay as they are)."""
    require_admin(actor)
    with store.db.write() as conn:
        _refuse_builtin(_existing_role(conn, name), "changed")
        user_store.set_capabilities(conn, name, check_capabilities(capabilities))


def delete_role(store: Store, actor: User, name: str) -> None:
    """Delete a custom role and take it from its holders (ADMIN only)."""
    require_admin(actor)
    with store.db.write() as conn:
        _refuse_builtin(_existing_role(conn, name), "deleted")
        user_store.delete_role(conn, name)
