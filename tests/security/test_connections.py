"""Databases only through connections (F4, F15); the metadata database never."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.domain.status import JobStatus
from tests.helpers import wait_terminal
from tests.security.conftest import Actors

SECRET = "s3cr3t-Pw"


@pytest.fixture
def files(actors: Actors) -> Path:
    """The operator's files root."""
    return Path(actors.node.settings.resolved_source_roots[0])


def _meta(actors: Actors) -> sa.URL:
    return sa.make_url(actors.node.settings.resolved_database_url)


def _spellings(meta: sa.URL) -> list[str]:
    """The metadata database's URL written every way that reaches it."""
    user = f"{meta.username}:{meta.password}"
    db, port = meta.database, meta.port or 5432
    return [
        f"postgresql://{user}@192.0.2.1:{port}/{db}?hostaddr=127.0.0.1",
        f"postgresql://{user}@[::ffff:127.0.0.1]:{port}/{db}",
        f"postgresql://{user}@127.0.0.2:{port}/{db}",
        f"postgresql://{user}@0x7f.1:{port}/{db}",
        f"postgresql://{user}@2130706433:{port}/{db}",
        f"postgresql://{user}@localhost.:{port}/{db}",
        f"postgresql://{user}@[::1]:{port}/{db}",
        f"postgresql://{user}@0.0.0.0:{port}/{db}",
        f"postgresql://{user}@/{db}?host=/var/run/postgresql",
        f"postgresql://{user}@%2Fvar%2Frun%2Fpostgresql:{port}/{db}",
        f"postgresql://{user}@192.0.2.1,127.0.0.1:{port}/{db}",
        f"postgresql://{user}@127.0.0.1:{port}/postgres?dbname={db}",
        f"postgresql://{user}@127.0.0.1:{port}/x?service=meta",
        f"postgresql://{user}@127.0.0.1:{port}/x?passfile=/root/.pgpass",
        f"postgresql://{user}@127.0.0.1:{port}/x?options=-csearch_path%3Dpublic",
        meta.render_as_string(hide_password=False),
    ]


def _sink(url: str) -> dict[str, Any]:
    return {
        "path": "/Users/eve/grab.exp",
        "source": {"importJob": "/Users/eve/mine.imp"},
        "sink": {"kind": "database", "url": url, "table": "user_roles", "mode": "append"},
    }


def _source(name: str, **source: Any) -> dict[str, Any]:
    return {"path": f"/Users/eve/{name}.imp", "source": {"kind": "database", **source}}


def _run(actors: Actors, user: str, path: str) -> Any:
    started = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert started.status_code == 200, started.text
    return wait_terminal(actors.node, started.json()["job-execution-id"])


def _connection(actors: Actors, name: str, url: str, **extra: Any) -> int:
    body = {"path": f"/Connections/{name}", "url": url, **extra}
    made = actors.call("admin", "POST", "/rest/connection", body)
    assert made.status_code == 200, made.text
    return int(made.json()["id"])


def _others(actors: Actors, entry_id: int, **flags: bool) -> None:
    url = f"/api/filesystem/files/{entry_id}/permission/others"
    assert actors.call("admin", "PUT", url, flags).status_code == 200


def _sqlite_db(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER, name TEXT)")
        conn.execute("INSERT INTO items VALUES (1, 'one')")
    return f"sqlite:///{path}"


# ---------------------------------------------------------------- F4 and F15: inline URLs


def test_f15_inline_urls_reach_no_host_by_default(actors: Actors) -> None:
    for url in (
        "postgresql://postgres:postgres@127.0.0.1:5432/postgres",
        "postgresql://u:p@192.0.2.1:5432/db",
        "postgresql://u:p@internal.example:6379/db",
    ):
        refused = actors.call("eve", "POST", "/rest/import-job", _source("i", url=url, table="t"))
        assert refused.status_code == 400, refused.text
        assert "DATAMILL_DATABASE_HOSTS" in refused.json()["reason"]
        assert ":p@" not in refused.text and "postgres:postgres" not in refused.text
        sink = actors.call("eve", "POST", "/rest/export-job", _sink(url))
        assert sink.status_code == 400


def test_f4_the_metadata_database_is_refused_however_spelled(actors: Actors) -> None:
    meta = _meta(actors)
    if meta.get_backend_name() != "postgresql":
        pytest.skip("the PostgreSQL spellings need PostgreSQL metadata")
    # Even an operator who allows this machine's names keeps the metadata database out.
    actors.node.settings.database_hosts = ["127.0.0.1", "localhost", "localhost.", "127.0.0.2"]
    actors.node.store.file_policy = None
    from datamill.services.locations import policy_from_settings

    actors.node.store.file_policy = policy_from_settings(actors.node.settings)
    for url in _spellings(meta):
        refused = actors.call("eve", "POST", "/rest/export-job", _sink(url))
        assert refused.status_code == 400, (url, refused.text)
        assert str(meta.password) not in refused.json()["reason"] or meta.password == "postgres"
        # Nor may an ADMIN make a connection of it.
        made = actors.call(
            "admin", "POST", "/rest/connection", {"path": "/Connections/m.dst", "url": url}
        )
        assert made.status_code == 400, (url, made.text)
    with actors.node.store.db.read() as conn:
        roles = conn.execute(sa.text("SELECT role_name FROM user_roles WHERE user_name = 'eve'"))
        assert [r[0] for r in roles] == ["ANALYST"]


def test_f4_sqlite_metadata_and_data_are_refused(actors: Actors, files: Path) -> None:
    meta = _meta(actors)
    settings = actors.node.settings
    targets = [
        str(settings.resolved_data_root / "x.db"),
        str(files / "users" / "eve" / "../../../datamill.db"),
    ]
    if meta.get_backend_name() == "sqlite":
        targets.append(str(meta.database))
    for target in targets:
        url = f"sqlite:///{target}"
        assert actors.call("eve", "POST", "/rest/export-job", _sink(url)).status_code == 400
        made = actors.call(
            "admin", "POST", "/rest/connection", {"path": "/Connections/m.dst", "url": url}
        )
        assert made.status_code == 400, (url, made.text)


def test_sqlite_inline_urls_need_a_location(running: Actors, files: Path) -> None:
    mine = _sqlite_db(files / "users" / "eve" / "mine.db")
    made = running.call("eve", "POST", "/rest/import-job", _source("own", url=mine, table="items"))
    assert made.status_code == 200, made.text
    assert _run(running, "eve", "/Users/eve/own.imp").status is JobStatus.COMPLETED
    admins = _sqlite_db(files / "adminonly" / "admin.db")
    refused = running.call(
        "eve", "POST", "/rest/import-job", _source("x", url=admins, table="items")
    )
    assert refused.status_code == 400
    assert "not inside a location you may read from" in refused.json()["reason"]


# ---------------------------------------------------------------- connections


def test_analysts_cannot_create_connections(actors: Actors, files: Path) -> None:
    body = {"path": "/Users/eve/x.dst", "url": _sqlite_db(files / "users" / "eve" / "x.db")}
    assert actors.call("eve", "POST", "/rest/connection", body).status_code == 403
    assert actors.call("eve", "GET", "/rest/connection").json() == []


def test_connection_passwords_are_never_shown(actors: Actors) -> None:
    url = f"postgresql://reader:{SECRET}@192.0.2.1:5432/warehouse"
    entry = _connection(actors, "wh", url)
    for response in (
        actors.call("admin", "GET", f"/rest/connection/{entry}"),
        actors.call("admin", "GET", "/rest/connection"),
        actors.call("admin", "GET", f"/api/filesystem/files/{entry}"),
        actors.call("admin", "GET", "/api/filesystem/folders/Connections"),
    ):
        assert response.status_code == 200 and SECRET not in response.text
    shown = actors.call("admin", "GET", f"/rest/connection/{entry}").json()
    assert shown["password"] == "********" and "reader:***@" in shown["url"]
    # Sending back what was shown keeps the stored password.
    assert actors.call("admin", "PUT", f"/rest/connection/{entry}", shown).status_code == 200
    from datamill.store import locations as loc_store

    with actors.node.store.db.read() as conn:
        stored = loc_store.get_connection(conn, entry)
    assert stored is not None and stored.password == SECRET and SECRET not in stored.url
    assert SECRET not in repr(stored)


def test_read_flag_imports_write_flag_exports_through_a_connection(
    running: Actors, files: Path
) -> None:
    url = _sqlite_db(files / "shared" / "d.db")
    entry = _connection(running, "d", url)
    source = _source("mine", connection="/Connections/d.dst", table="items")
    hidden = running.call("eve", "POST", "/rest/import-job", source)
    missing = running.call(
        "eve",
        "POST",
        "/rest/import-job",
        _source("mine", connection="/Connections/no.dst", table="items"),
    )
    assert hidden.status_code == missing.status_code == 400
    assert hidden.json()["reason"].replace("d.dst", "X") == missing.json()["reason"].replace(
        "no.dst", "X"
    )
    _others(running, entry, readable=True)
    assert running.call("eve", "POST", "/rest/import-job", source).status_code == 200
    assert _run(running, "eve", "/Users/eve/mine.imp").status is JobStatus.COMPLETED
    sink = {
        "path": "/Users/eve/out.exp",
        "source": {"importJob": "/Users/eve/mine.imp"},
        "sink": {"kind": "database", "connection": "/Connections/d.dst", "table": "copy"},
    }
    refused = running.call("eve", "POST", "/rest/export-job", sink)
    assert refused.status_code == 400 and "may not write to it" in refused.json()["reason"]
    _others(running, entry, readable=True, writable=True)
    assert running.call("eve", "POST", "/rest/export-job", sink).status_code == 200
    run = _run(running, "eve", "/Users/eve/out.exp")
    assert run.status is JobStatus.COMPLETED, run.error_message
    with sqlite3.connect(files / "shared" / "d.db") as conn:
        assert conn.execute("SELECT count(*) FROM copy").fetchone() == (1,)


def test_a_failing_connection_does_not_show_its_password(running: Actors) -> None:
    meta = _meta(running)
    host = "127.0.0.1"
    entry = _connection(running, "pg", f"postgresql://nobody_here:{SECRET}@{host}:5432/postgres")
    _others(running, entry, readable=True)
    source = _source("pg", connection="/Connections/pg.dst", table="no_such_table")
    assert running.call("eve", "POST", "/rest/import-job", source).status_code == 200
    run = _run(running, "eve", "/Users/eve/pg.imp")
    assert run.status is JobStatus.ERROR
    assert SECRET not in str(run.error_message)
    del meta
