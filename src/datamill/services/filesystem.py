"""Folders, files and their permissions: the use cases behind /api/filesystem."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sqlalchemy.engine import Connection

from datamill.domain.definitions import definition_model, upstream_references
from datamill.domain.records import FileEntry, User
from datamill.errors import Conflict, Forbidden, InvalidInput, NotFound
from datamill.services.folders import require_create
from datamill.services.graph import cycle_text, find_cycle, rebuild_dependencies, upstream_graph
from datamill.services.jobs import JobService
from datamill.services.permissions import (
    Access,
    Capability,
    has_access,
    require_access,
    require_capability,
)
from datamill.store.files import (
    PROTECTED_FOLDERS,
    ROOT_OWNER,
    Flags,
    Permissions,
    check_name,
    child_path,
    is_path_reference,
)

FlagChange = Mapping[Access, bool]
"""The flags a request sets; flags it leaves out keep their value."""


@dataclasses.dataclass(frozen=True, slots=True)
class FolderView:
    """A folder and the entries inside it that the caller may read."""

    folder: FileEntry
    children: tuple[FileEntry, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class FileView:
    """A job file and the id of its job configuration."""

    file: FileEntry
    configuration_id: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class PermissionView:
    """An entry together with its owner and flags."""

    entry: FileEntry
    permissions: Permissions


class FileSystemService:
    """Reading and shaping the file tree, and changing who may do what."""

    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs
        self._store = jobs.store

    # ------------------------------------------------------------ reading

    def folder(self, reference: str, user: User) -> FolderView:
        """A readable folder with its readable children."""
        with self._store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            folder = self._folder(conn, reference, user, Access.READ)
            return self._view(conn, folder, user)

    def file(self, reference: str, user: User) -> FileView:
        """A readable job file."""
        with self._store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            entry = self._jobs.resolve_file(conn, reference, user, Access.READ)
            if entry.is_folder:
                raise NotFound(f"{entry.path} is a folder, not a file; read it as a folder")
            config = self._store.jobs.for_file(conn, entry.id)
            return FileView(entry, config.id if config is not None else None)

    def _view(self, conn: Connection, folder: FileEntry, user: User) -> FolderView:
        children = self._store.files.children(conn, folder.id)
        visible = tuple(c for c in children if has_access(conn, user, c, Access.READ))
        return FolderView(folder, visible)

    def _folder(self, conn: Connection, reference: str, user: User, access: Access) -> FileEntry:
        entry = self._jobs.resolve_file(conn, reference, user, Access.READ)
        if not entry.is_folder:
            raise NotFound(f"{entry.path} is a file, not a folder; read it as a file")
        require_access(conn, user, entry, access)
        return entry

    # ------------------------------------------------------------ shaping

    def create_folder(self, parent_reference: str, name: str, user: User) -> FolderView:
        """Create an empty folder owned by the caller; needs writable on the parent."""
        with self._store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            parent = self._folder(conn, parent_reference, user, Access.READ)
            require_create(conn, self._store, user, child_path(parent, check_name(name)))
            folder = self._store.files.create_folder(conn, parent, name, user.name)
            return self._view(conn, folder, user)

    def update_folder(
        self, reference: str, user: User, *, name: str | None, parent_reference: str | None
    ) -> FolderView:
        """Rename and/or move a folder; needs writable on it and on a new parent."""
        with self._store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            folder = self._folder(conn, reference, user, Access.READ)
            self._refuse_default(folder, "renamed or moved")
            require_access(conn, user, folder, Access.WRITE)
            assert folder.parent_id is not None  # the root is a default folder
            old_parent = self._store.files.get(conn, folder.parent_id)
            parent = old_parent
            if parent_reference is not None:
                parent = self._folder(conn, parent_reference, user, Access.READ)
            new_name = folder.name if name is None else name
            new_path = child_path(parent, check_name(new_name))
            if new_path != folder.path:
                # A rename or move changes both parents' contents (A3): READ and
                # WRITE on the old one, and the new path as if it were created.
                if not (
                    has_access(conn, user, old_parent, Access.READ)
                    and has_access(conn, user, old_parent, Access.WRITE)
                ):
                    raise Forbidden(f"you are not allowed to change the folder {old_parent.path}")
                require_create(conn, self._store, user, new_path, move=True)
            if self._store.files.check_move(conn, folder, parent, new_name) is not None:
                self._refuse_broken_references(conn, folder, user)
            moved = self._store.files.move_folder(conn, folder, parent, new_name)
            if moved.path != folder.path:
                # A path reference that named nothing before may name a moved job now,
                # even the job itself or one that reads it: refused like such a
                # definition, or data-driven jobs would trigger each other for ever.
                had_cycle = bool(find_cycle(upstream_graph(conn, self._store)))
                rebuild_dependencies(conn, self._store)
                cycle = find_cycle(upstream_graph(conn, self._store))
                if cycle and not had_cycle:
                    names = cycle_text(conn, self._store, cycle, user)
                    raise Conflict(
                        f"{folder.path} cannot be moved: the jobs would read from each other"
                        f" in a cycle: {names}"
                    )
            return self._view(conn, moved, user)

    def delete_folder(self, reference: str, user: User) -> None:
        """Delete an empty folder; needs writable on it."""
        with self._store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            folder = self._folder(conn, reference, user, Access.READ)
            self._refuse_default(folder, "deleted")
            require_access(conn, user, folder, Access.WRITE)
            self._store.files.delete_folder(conn, folder)

    @staticmethod
    def _refuse_default(folder: FileEntry, what: str) -> None:
        if folder.path in PROTECTED_FOLDERS:
            raise Forbidden(f"{folder.path} is a default folder and cannot be {what}")

    def _refuse_broken_references(self, conn: Connection, folder: FileEntry, user: User) -> None:
        # Jobs name their sources by id, uuid or path; a path into a moved
        # folder would silently stop resolving, so the move is refused instead.
        readers: list[str] = []
        hidden = 0
        for config in self._store.jobs.list_all(conn):
            definition = definition_model(config.kind).model_validate(config.definition)
            for reference in upstream_references(definition):
                target = self._find(conn, reference) if is_path_reference(reference) else None
                if target is None or not target.path.startswith(folder.path + "/"):
                    continue
                reader = self._store.files.get(conn, config.file_id)
                if has_access(conn, user, reader, Access.READ):
                    readers.append(f"{reader.path} reads {target.path}")
                else:
                    hidden += 1
        if readers or hidden:
            if hidden:
                readers.append(f"{hidden} job(s) you cannot see read files in it")
            raise Conflict(
                f"{folder.path} holds job files that other jobs name by path ("
                + "; ".join(readers)
                + "); refer to them by id or uuid first"
            )

    def _find(self, conn: Connection, reference: str) -> FileEntry | None:
        entry = self._store.files.find(conn, reference)
        if entry is None and "+" in reference:
            entry = self._store.files.find(conn, reference.replace("+", " "))
        return entry

    # ------------------------------------------------------------ permissions

    def permissions(self, reference: str, user: User) -> PermissionView:
        """The owner and flags of a readable entry."""
        with self._store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            entry = self._jobs.resolve_file(conn, reference, user, Access.READ)
            return PermissionView(entry, self._store.files.permissions(conn, entry.id))

    def set_owner(self, reference: str, user: User, owner: str) -> PermissionView:
        """Hand an entry to an existing user; only an ADMIN may."""
        with self._store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            entry = self._jobs.resolve_file(conn, reference, user, Access.READ)
            # A job runs with its owner's rights: whoever could hand a job to another
            # user could make it read with that user's rights (A1). After the look-up,
            # so what the caller cannot read still answers like a missing entry.
            if not user.is_admin:
                raise Forbidden("only an ADMIN may change the owner of a file or folder")
            # 'system' owns the default folders, so an admin can hand one back to it.
            if owner != ROOT_OWNER and self._store.users.get(conn, owner) is None:
                raise InvalidInput(f"there is no user {owner!r}")
            self._store.files.set_owner(conn, entry.id, owner)
            return PermissionView(entry, self._store.files.permissions(conn, entry.id))

    def set_group(
        self, reference: str, user: User, group: str, change: FlagChange
    ) -> PermissionView:
        """Set a group's flags on an entry (left-out flags keep their value); needs writable."""
        with self._store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            entry = self._jobs.resolve_file(conn, reference, user, Access.WRITE)
            if not self._store.files.group_exists(conn, group):
                raise InvalidInput(f"there is no group {group!r}")
            current = dict(self._store.files.permissions(conn, entry.id).groups)
            flags = _changed(current.get(group, Flags(False, False, False)), change)
            self._store.files.set_group_flags(
                conn,
                entry.id,
                group,
                readable=flags.readable,
                writable=flags.writable,
                executable=flags.executable,
            )
            return PermissionView(entry, self._store.files.permissions(conn, entry.id))

    def remove_group(self, reference: str, user: User, group: str) -> PermissionView:
        """Take a group's flags off an entry; needs writable."""
        with self._store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            entry = self._jobs.resolve_file(conn, reference, user, Access.WRITE)
            if not self._store.files.delete_group_flags(conn, entry.id, group):
                raise NotFound(f"the group {group!r} has no permission on {entry.path}")
            return PermissionView(entry, self._store.files.permissions(conn, entry.id))

    def set_others(self, reference: str, user: User, change: FlagChange) -> PermissionView:
        """Set what every other user may do (left-out flags keep their value); needs writable."""
        with self._store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            entry = self._jobs.resolve_file(conn, reference, user, Access.WRITE)
            flags = _changed(self._store.files.permissions(conn, entry.id).others, change)
            self._store.files.set_others_flags(
                conn,
                entry.id,
                readable=flags.readable,
                writable=flags.writable,
                executable=flags.executable,
            )
            return PermissionView(entry, self._store.files.permissions(conn, entry.id))


def _changed(flags: Flags, change: FlagChange) -> Flags:
    return Flags(
        readable=change.get(Access.READ, flags.readable),
        writable=change.get(Access.WRITE, flags.writable),
        executable=change.get(Access.EXECUTE, flags.executable),
    )
