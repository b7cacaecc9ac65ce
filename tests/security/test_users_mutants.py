"""User management's answers (services/users.py) that its mutation run showed unasserted.

The user-management tests check a fragment of each refusal; a reader acts on
the whole sentence (which group is unknown, what to do about the last ADMIN),
so these assert the exact bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Connection

from datamill.api.app import create_app
from datamill.bootstrap import Node, ensure_admin, open_node
from datamill.domain.status import JobKind
from datamill.errors import AlreadyExists, Conflict, NotFound
from datamill.services import users as user_service
from datamill.services.auth import Authenticator
from datamill.settings import Settings
from datamill.store import tables as t
from datamill.store import users as user_store
from tests.helpers import admin, password_hash, race_an_open_transaction
from tests.security.conftest import PASSWORD, Actors, auth

BASE = "/rest/user-management"


def _refused(actors: Actors, user: str, method: str, url: str, body: Any = None) -> Any:
    answer = actors.call(user, method, url, body)
    return answer.status_code, answer.json()


def _failure(status: int, reason: str) -> tuple[int, dict[str, str]]:
    return status, {"status": "failure", "reason": reason}


def test_an_update_names_the_unknown_groups_and_roles_and_changes_nothing(
    actors: Actors,
) -> None:
    groups = _refused(actors, "admin", "PUT", f"{BASE}/users/bob", {"groups": ["ghost", "ops"]})
    assert groups == _failure(400, "unknown group(s): 'ghost', 'ops'; create them first")
    roles = _refused(actors, "admin", "PUT", f"{BASE}/users/bob", {"roles": ["ANALYST", "WIZARD"]})
    assert roles == _failure(400, "unknown role(s): 'WIZARD'; create them first")
    bob = actors.call("admin", "GET", f"{BASE}/users/bob").json()
    assert (bob["groups"], bob["roles"]) == ([], ["ANALYST"])


def test_the_last_admin_is_told_exactly_what_to_do_first(actors: Actors) -> None:
    demote = _refused(actors, "admin", "PUT", f"{BASE}/users/admin", {"roles": ["ANALYST"]})
    assert demote == _failure(
        409,
        "'admin' is the last user with the ADMIN role and must keep it;"
        " give the ADMIN role to another user first",
    )
    actors.node.store.users.create("root", password_hash(PASSWORD), roles=("ADMIN",))
    assert _refused(actors, "root", "DELETE", f"{BASE}/users/root") == _failure(
        409, "you cannot delete yourself; ask another ADMIN to do it"
    )
    assert actors.call("root", "PUT", f"{BASE}/users/admin", {"roles": []}).status_code == 200
    assert _refused(actors, "root", "DELETE", f"{BASE}/users/root") == _failure(
        409,
        "'root' is the last user with the ADMIN role and cannot be deleted;"
        " give the ADMIN role to another user first",
    )
    assert actors.call("root", "GET", f"{BASE}/users/root").json()["roles"] == ["ADMIN"]


def test_group_renames_and_deletes_name_what_is_wrong(actors: Actors) -> None:
    assert actors.call("admin", "POST", f"{BASE}/groups", {"name": "ops"}).status_code == 200
    bad = _refused(actors, "admin", "PUT", f"{BASE}/groups/ops", {"name": "a/b"})
    assert bad == _failure(400, "the group name 'a/b' must not contain '/'")
    gone = _refused(actors, "admin", "DELETE", f"{BASE}/groups/ghost")
    assert gone == _failure(404, "group 'ghost' doesn't exist")
    assert actors.call("admin", "GET", f"{BASE}/groups/ops").json() == {
        "name": "ops",
        "members": [],
    }


def test_a_role_holds_at_most_a_hundred_capabilities(actors: Actors) -> None:
    hundred = [f"app.c{n}" for n in range(100)]
    made = actors.call("admin", "POST", f"{BASE}/roles", {"name": "wide", "capabilities": hundred})
    assert made.json() == {"status": "success", "name": "wide"}
    assert actors.call("admin", "GET", f"{BASE}/roles/wide").json()["capabilities"] == hundred
    more = _refused(
        actors, "admin", "PUT", f"{BASE}/roles/wide", {"capabilities": [*hundred, "app.c100"]}
    )
    assert more == _failure(400, "a role may have at most 100 capabilities")
    assert actors.call("admin", "GET", f"{BASE}/roles/wide").json()["capabilities"] == hundred


def test_role_refusals_say_exactly_what_is_wrong(actors: Actors) -> None:
    post = "POST", f"{BASE}/roles"
    longest = "a" * 64  # the longest capability name
    made = actors.call("admin", *post, {"name": "long", "capabilities": [longest]})
    assert made.json() == {"status": "success", "name": "long"}
    assert _refused(actors, "admin", *post, {"name": "long"}) == _failure(
        409, "role 'long' already exists"
    )
    assert _refused(actors, "admin", *post, {"name": "r/1"}) == _failure(
        400, "the role name 'r/1' must not contain '/'"
    )
    assert _refused(actors, "admin", *post, {"name": "su", "capabilities": ["*"]}) == _failure(
        400, "'*' (everything) is reserved for the built-in ADMIN role"
    )
    too_long = longest + "a"
    assert _refused(actors, "admin", *post, {"name": "r", "capabilities": [too_long]}) == _failure(
        400,
        f"{too_long!r} is not a capability name: use lower-case dotted words such as job.read,"
        " job.run, job.define, data.read, or Datameer's upper-case names such as"
        " WORKBOOK_EXECUTE",
    )
    listed = actors.call("admin", "GET", f"{BASE}/roles").json()["elements"]
    assert [role["name"] for role in listed] == ["ADMIN", "ANALYST", "long"]


def _demote_admin(conn: Connection) -> None:
    # What update_user does: the role's row locked, then the roles replaced.
    user_store.holders_of_role(conn, "ADMIN", lock=True)
    user_store.replace_roles(conn, "admin", ())


def _race_an_open_demotion(node: Node, other: Callable[[], None]) -> list[Exception]:
    """Run `other` while another transaction has taken the ADMIN role from 'admin', uncommitted."""
    return race_an_open_transaction(node, _demote_admin, other)


def _admins(node: Node) -> list[str]:
    with node.store.db.read() as conn:
        return user_store.holders_of_role(conn, "ADMIN")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_concurrent_demotions_never_leave_no_admin(node: Node) -> None:
    node.store.users.create("root", password_hash(PASSWORD), roles=("ADMIN",))
    with node.store.db.read() as conn:
        acting = node.store.users.get(conn, "root")
    assert acting is not None
    changes = user_service.UserChanges(roles=())
    raised = _race_an_open_demotion(
        node, lambda: user_service.update_user(node.store, acting, "root", changes)
    )
    assert [type(e) for e in raised] == [Conflict], raised
    assert "'root' is the last user with the ADMIN role" in str(raised[0])
    assert _admins(node) == ["root"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_delete_during_a_concurrent_demotion_never_leaves_no_admin(node: Node) -> None:
    node.store.users.create("root", password_hash(PASSWORD), roles=("ADMIN",))
    acting = admin(node)
    raised = _race_an_open_demotion(
        node, lambda: user_service.delete_user(node.store, acting, "root")
    )
    assert [type(e) for e in raised] == [Conflict], raised
    assert "'root' is the last user with the ADMIN role" in str(raised[0])
    assert _admins(node) == ["root"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_group_deleted_during_its_rename_is_not_found_rather_than_renamed(node: Node) -> None:
    acting = admin(node)
    user_service.create_group(node.store, acting, "ops")
    raised = race_an_open_transaction(
        node,
        lambda conn: user_store.delete_group(conn, "ops"),
        lambda: user_service.rename_group(node.store, acting, "ops", "crew"),
    )
    assert [(type(e), str(e)) for e in raised] == [(NotFound, "group 'ops' doesn't exist")]
    with node.store.db.read() as conn:
        assert user_store.existing_names(conn, t.groups, ["ops", "crew"]) == set()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_name_taken_by_a_concurrent_create_is_answered_as_taken(node: Node) -> None:
    acting = admin(node)
    user_service.create_group(node.store, acting, "ops")
    renamed = race_an_open_transaction(
        node,
        lambda conn: user_store.insert_group(conn, "crew"),
        lambda: user_service.rename_group(node.store, acting, "ops", "crew"),
    )
    assert [(type(e), str(e)) for e in renamed] == [(AlreadyExists, "group 'crew' already exists")]
    made = race_an_open_transaction(
        node,
        lambda conn: user_store.insert_role(conn, "viewer", ["job.read"]),
        lambda: user_service.create_role(node.store, acting, "viewer", ["data.read"]),
    )
    assert [(type(e), str(e)) for e in made] == [(AlreadyExists, "role 'viewer' already exists")]
    with node.store.db.read() as conn:
        assert user_store.get_groups(conn, ["ops", "crew"]) == [
            user_store.Group("ops", ()),
            user_store.Group("crew", ()),
        ]
        assert user_store.get_roles(conn, ["viewer"]) == [user_store.Role("viewer", ("job.read",))]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_reading_a_group_does_not_wait_for_its_open_rename(node: Node) -> None:
    """A reader sees the group as last committed; it neither waits nor misses it."""
    acting = admin(node)
    user_service.create_group(node.store, acting, "ops")
    seen: list[user_store.Group] = []
    raised = race_an_open_transaction(
        node,
        lambda conn: user_store.rename_group(conn, "ops", "crew"),
        lambda: seen.append(user_service.get_group(node.store, acting, "ops")),
    )
    assert (raised, seen) == ([], [user_store.Group("ops", ())])
    with node.store.db.read() as conn:
        assert user_store.get_groups(conn, ["ops", "crew"]) == [user_store.Group("crew", ())]


def test_deleting_a_user_takes_her_keys_groups_and_roles_and_only_hers(actors: Actors) -> None:
    """A user's Idempotency-Keys and memberships go with her, and only hers."""
    node = actors.node
    node.store.users.create("carl", password_hash(PASSWORD))
    with node.store.db.write() as conn:
        user_store.insert_group(conn, "team")
        for name in ("bob", "carl"):
            user_store.replace_groups(conn, name, ["team"])
    document = {"sheets": [{"kind": "sql", "name": "x", "keep": True, "sql": "SELECT 1 AS one"}]}
    sent = {}
    for name in ("bob", "carl"):
        path = f"/Users/{name}/daily.wbk"
        node.jobs.define_job(path, JobKind.WORKBOOK, document, name)
        headers = {**auth(name), "Idempotency-Key": "nightly-1"}
        first = actors.client.post(f"/api/job-execution{path}/trigger", headers=headers)
        assert first.status_code == 200, first.text
        sent[name] = (path, headers, first.json()["job-execution-id"])

    deleted = actors.call("admin", "DELETE", "/rest/user-management/users/carl")
    assert deleted.status_code == 200, deleted.text

    # bob's retry is still answered with his first run, not a second one.
    path, headers, first_run = sent["bob"]
    again = actors.client.post(f"/api/job-execution{path}/trigger", headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["job-execution-id"] == first_run
    assert again.headers.get("idempotent-replayed") == "true"
    with node.store.db.read() as conn:
        keys = conn.execute(sa.select(t.idempotency_keys.c.user_name)).scalars().all()
    assert keys == ["bob"]
    # And bob keeps his role and the group carl was in.
    bob = actors.call("admin", "GET", "/rest/user-management/users/bob").json()
    assert (bob["groups"], bob["roles"]) == (["team"], ["ANALYST"])
    # A later user of carl's name starts with nothing of his.
    node.store.users.create("carl", password_hash(PASSWORD), roles=())
    carl = actors.call("admin", "GET", "/rest/user-management/users/carl").json()
    assert (carl["groups"], carl["roles"]) == ([], [])
    assert actors.call("admin", "GET", "/rest/user-management/groups/team").json() == {
        "name": "team",
        "members": ["bob"],
    }


def test_deleting_a_user_quiesces_her_job_files_only(actors: Actors) -> None:
    """Her self-running jobs go MANUAL and private; nobody else's, and not her folders."""
    node = actors.node
    node.store.users.create("mal", password_hash(PASSWORD))
    daily = {
        "sheets": [{"kind": "sql", "name": "x", "keep": True, "sql": "SELECT 1 AS one"}],
        "triggering": {"mode": "SCHEDULED", "cron": "0 3 * * *"},
    }
    shared = {}
    for owner in ("bob", "mal"):
        entry, _ = node.jobs.define_job(f"/Users/{owner}/daily.wbk", JobKind.WORKBOOK, daily, owner)
        shared[owner] = entry.id
    with node.store.db.write() as conn:
        shared["folder"] = node.store.files.ensure_folder(conn, "/Data/mals-reports", "mal")
        for file_id in shared.values():
            node.store.files.set_others_flags(
                conn, file_id, readable=True, writable=False, executable=False
            )
    deleted = actors.call("admin", "DELETE", "/rest/user-management/users/mal")
    assert deleted.status_code == 200, deleted.text

    def state(file_id: int) -> tuple[str, bool, str | None]:
        with node.store.db.read() as conn:
            entry = node.store.files.get(conn, file_id)
            config = node.store.jobs.for_file(conn, file_id)
            readable = node.store.files.permissions(conn, file_id).others.readable
        return entry.owner, readable, config.trigger_mode if config is not None else None

    assert state(shared["mal"]) == ("admin", False, "MANUAL")
    schedule = actors.call("admin", "GET", "/api/job-execution/Users/mal/daily.wbk/schedule")
    assert schedule.status_code == 200, schedule.text
    assert {k: schedule.json()[k] for k in ("mode", "cron", "next-run", "enabled")} == {
        "mode": "MANUAL",
        "cron": None,
        "next-run": None,
        "enabled": False,
    }
    assert state(shared["bob"]) == ("bob", True, "SCHEDULED")
    assert state(shared["folder"]) == ("admin", True, None)
    # What eve sees: bob's workbook as before, mal's no more.
    seen = {
        path: actors.call("eve", "GET", f"/api/filesystem/files{path}").status_code
        for path in ("/Users/bob/daily.wbk", "/Users/mal/daily.wbk")
    }
    assert seen == {"/Users/bob/daily.wbk": 200, "/Users/mal/daily.wbk": 404}


def test_a_user_without_roles_or_groups_is_listed(actors: Actors) -> None:
    actors.node.store.users.create("nobody", password_hash(PASSWORD), roles=())
    listed = actors.call("admin", "GET", "/rest/user-management/users")
    assert listed.status_code == 200, listed.text
    assert "nobody" in listed.text


def test_the_first_start_makes_an_admin_only_while_no_user_exists(settings: Settings) -> None:
    """`UserRepository.count` decides it: an admin for an empty store, none once a user exists."""
    node = open_node(settings)
    try:
        authenticator = Authenticator(node.store)
        generated = ensure_admin(node)
        assert generated, "an empty store gets an admin with a generated password"
        assert authenticator.authenticate("admin", generated).roles == ("ADMIN",)
        # The next start finds a user: no second admin, the first one's password kept.
        assert ensure_admin(node) is None
        assert authenticator.authenticate("admin", generated).name == "admin"
        with node.store.db.read() as conn:
            assert user_store.count_names(conn, t.users) == 1
    finally:
        node.store.close()


def test_name_pages_follow_code_points_whatever_the_databases_locale(node: Node) -> None:
    """Pages of users and groups hold the same names on every backend and server locale.

    This machine's PostgreSQL databases sort by code point (C.UTF-8) like SQLite;
    a server created with a language locale sorts `alice` before `Bob`. Here the
    name columns are given such a collation, and the pages must not follow it.
    """
    with node.store.db.write() as conn:
        if conn.dialect.name == "postgresql":
            for table in ("users", "groups"):
                collated = 'TYPE varchar(128) COLLATE "en-US-x-icu"'
                conn.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN name {collated}"))
    names = ["Bob", "Zed", "_x", "admin", "alice"]  # by code point
    for name in ("alice", "_x", "Zed", "Bob"):
        node.store.users.create(name, password_hash(PASSWORD), groups=(f"{name}-team",))
    admin_auth = auth("admin", "secret")
    with TestClient(create_app(node.settings, node.jobs)) as client:

        def page(kind: str, key: str, start: int, size: int = 2) -> list[str]:
            url = f"{BASE}/{kind}?maxResults={size}&startIndex={start}"
            answer = client.get(url, headers=admin_auth)
            assert answer.status_code == 200, answer.text
            return [element[key] for element in answer.json()["elements"]]

        assert [page("users", "username", start) for start in (0, 2, 4)] == [
            names[0:2],
            names[2:4],
            names[4:],
        ]
        assert [page("users", "username", start, size=1) for start in range(5)] == [
            [name] for name in names
        ]
        groups = [page("groups", "name", start) for start in (0, 2)]
        assert groups == [["Bob-team", "Zed-team"], ["_x-team", "alice-team"]]


def test_a_second_user_of_a_taken_name_is_refused_by_name_and_the_first_kept(node: Node) -> None:
    """`datamill user add` of a name that exists: the store's own check answers, not the index."""
    users = node.store.users
    users.create("bob", password_hash(PASSWORD), groups=("team",))
    with pytest.raises(AlreadyExists) as refused:
        users.create("bob", password_hash("another"), roles=("ADMIN",), groups=("ops",))
    assert str(refused.value) == "user 'bob' already exists"
    with node.store.db.read() as conn:
        kept = users.get(conn, "bob")
    assert kept is not None
    assert (kept.roles, kept.groups) == (("ANALYST",), ("team",))
    assert Authenticator(node.store).authenticate("bob", PASSWORD).name == "bob"
    # A group that exists is joined, not made again.
    assert users.create("carl", password_hash(PASSWORD), groups=("team",)).groups == ("team",)
