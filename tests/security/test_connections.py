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


# ---------------------------------------------------------------- N1, N4: control characters


def _allow_local_hosts(actors: Actors) -> None:
    from datamill.services.locations import policy_from_settings

    actors.node.settings.database_hosts = ["127.0.0.1", "localhost"]
    actors.node.store.file_policy = policy_from_settings(actors.node.settings)


def _smuggled(db: str) -> list[str]:
    """PostgreSQL URLs with a NUL, a control or conninfo syntax in one of their parts."""
    base = "postgresql://u:p@127.0.0.1:5432"
    return [
        f"{base}/{db}%00",
        f"{base}/{db}\x00",
        f"{base}/{db}%00junk",
        f"{base}/a%00{db}",
        f"postgresql://u%00:p@127.0.0.1:5432/{db}",
        f"postgresql://u:p%00@127.0.0.1:5432/{db}",
        f"postgresql://u:p\x00@127.0.0.1:5432/{db}",
        f"{base}/x?application_name=a%00",
        f"{base}/x?application_name=a%00hostaddr%3D127.0.0.1",
        f"{base}/x?sslmode=prefer%00",
        f"{base}/{db}%01",
        f"{base}/{db}%0A",
        f"{base}/{db}%0D",
        f"{base}/{db}%09",
        f"{base}/{db}\n",
        f"{base}/{db}%7F",
        f"{base}/x%20dbname%3D{db}",
        f"{base}/x%3D{db}",
        f"postgresql://u%20dbname%3D{db}:p@127.0.0.1:5432/x",
        f"{base}/x?application_name=a%20host%3D127.0.0.1",
        f"{base}/x?application_name=a%27b",
        f"{base}/x?sslmode=disable%20dbname%3D{db}",
    ]


def test_n1_control_characters_are_refused_in_every_part_of_a_url(
    actors: Actors, files: Path
) -> None:
    _allow_local_hosts(actors)
    mine = _sqlite_db(files / "users" / "eve" / "mine.db")
    made = actors.call("eve", "POST", "/rest/import-job", _source("mine", url=mine, table="items"))
    assert made.status_code == 200, made.text
    meta = _meta(actors)
    db = str(meta.database) if meta.get_backend_name() == "postgresql" else "postgres"
    for url in _smuggled(db):
        made = actors.call(
            "admin", "POST", "/rest/connection", {"path": "/Connections/n1.dst", "url": url}
        )
        assert made.status_code == 400, (url, made.text)
        sink = actors.call("eve", "POST", "/rest/export-job", _sink(url))
        assert sink.status_code == 400, (url, sink.text)
        source = actors.call("eve", "POST", "/rest/import-job", _source("n1", url=url, table="t"))
        assert source.status_code == 400, (url, source.text)
        for answer in (made, sink, source):
            reason = answer.json()["reason"]
            assert any(w in reason for w in ("control char", "spaces, '='", "NUL")), (url, reason)
    # The password given apart from the URL, too.
    for password in ("p\x00", "p\n", "p\x01"):
        made = actors.call(
            "admin",
            "POST",
            "/rest/connection",
            {
                "path": "/Connections/n1.dst",
                "url": f"postgresql://u@127.0.0.1/{db}x",
                "password": password,
            },
        )
        assert made.status_code == 400, (password, made.text)
    # SQLite file names: a NUL or a control, raw (SQLite URLs are not decoded).
    for name in ("x\x00.db", "x\n.db", "x\x01.db"):
        url = f"sqlite:///{files}/users/eve/{name}"
        made = actors.call(
            "admin", "POST", "/rest/connection", {"path": "/Connections/n1.dst", "url": url}
        )
        assert made.status_code == 400, (url, made.text)
        sink = actors.call("eve", "POST", "/rest/export-job", _sink(url))
        assert sink.status_code == 400, (url, sink.text)
    # A plain URL is still fine, spaces in a password too.
    ok = actors.call(
        "admin",
        "POST",
        "/rest/connection",
        {"path": "/Connections/ok.dst", "url": "postgresql://u@127.0.0.1/x", "password": "a b='c"},
    )
    assert ok.status_code == 200, ok.text


def test_n1_the_engine_refuses_a_nul_too() -> None:
    from datamill.engine.paths import check_database_url
    from datamill.errors import InvalidInput

    for url in (
        "postgresql://u:p@127.0.0.1/meta%00",
        "postgresql://u:p@127.0.0.1/x?application_name=%00",
    ):
        with pytest.raises(InvalidInput):
            check_database_url(
                url, (), ("postgresql://u:p@127.0.0.1/meta",), "sink", must_exist=True
            )


# ---------------------------------------------------------------- N2, N5: a source query only reads


def test_n2_a_sqlite_source_query_cannot_create_files(running: Actors, files: Path) -> None:
    mine = _sqlite_db(files / "users" / "eve" / "mine.db")
    settings = running.node.settings
    targets = {
        "attach": files / "users" / "carol",
        "attach_existing": files / "users" / "eve" / "mine.db",
        "vacuum": settings.staging_root / "999999",
        "bob": files / "users" / "bob" / "planted.db",
    }
    queries = {
        "attach": f"ATTACH '{targets['attach']}' AS m",
        "attach_existing": f"ATTACH '{targets['attach_existing']}' AS m",
        "vacuum": f"VACUUM INTO '{targets['vacuum']}'",
        "bob": f"ATTACH 'file:{targets['bob']}?mode=rwc' AS m",
        "pragma": "PRAGMA query_only = OFF",
        "insert": "INSERT INTO items VALUES (2, 'two') RETURNING id",
        "select_then_attach": f"SELECT 1; ATTACH '{targets['attach']}' AS m",
    }
    for name, query in queries.items():
        made = running.call("eve", "POST", "/rest/import-job", _source(name, url=mine, query=query))
        assert made.status_code == 200, made.text
        run = _run(running, "eve", f"/Users/eve/{name}.imp")
        assert run.status is JobStatus.ERROR, (name, run.error_message)
        reason = str(run.error_message)
        assert str(files) not in reason and str(settings.staging_root) not in reason, reason
    for target in targets.values():
        if target.name != "mine.db":
            assert not target.exists(), target
    with sqlite3.connect(files / "users" / "eve" / "mine.db") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
    run = _run(running, "eve", "/Users/eve/attach.imp")
    assert "only read" in str(run.error_message)
    # N5: whether the attached path exists does not show.
    existing = _run(running, "eve", "/Users/eve/attach_existing.imp")
    assert existing.error_message == run.error_message
    # Reading still works: a query with a CTE, recursion and functions.
    query = (
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 3)"
        " SELECT upper(name) AS n, (SELECT count(*) FROM r) AS c FROM items"
    )
    made = running.call("eve", "POST", "/rest/import-job", _source("ok", url=mine, query=query))
    assert made.status_code == 200
    done = _run(running, "eve", "/Users/eve/ok.imp")
    assert done.status is JobStatus.COMPLETED, done.error_message


def test_n2_a_file_in_the_way_of_a_private_folder_is_not_a_500(actors: Actors, files: Path) -> None:
    (files / "users" / "carol").write_text("in the way")
    made = actors.call(
        "admin",
        "POST",
        "/rest/user-management/users",
        {"username": "carol", "password": "c4rol-pw", "roles": ["ANALYST"]},
    )
    assert made.status_code == 409, made.text
    assert str(files) not in made.text
    # Once the way is clear, carol can be made.
    (files / "users" / "carol").unlink()
    again = actors.call(
        "admin",
        "POST",
        "/rest/user-management/users",
        {"username": "carol", "password": "c4rol-pw", "roles": ["ANALYST"]},
    )
    assert again.status_code == 200, again.text


def test_n2_a_file_in_the_way_of_a_staging_folder_does_not_fail_the_run(
    running: Actors, files: Path
) -> None:
    mine = _sqlite_db(files / "users" / "eve" / "mine.db")
    made = running.call("eve", "POST", "/rest/import-job", _source("s", url=mine, table="items"))
    assert made.status_code == 200
    staging = running.node.settings.staging_root
    staging.mkdir(parents=True, exist_ok=True)
    for number in range(1, 50):
        (staging / str(number)).write_text("in the way")
    run = _run(running, "eve", "/Users/eve/s.imp")
    assert run.status is JobStatus.COMPLETED, run.error_message


def test_n7_job_routes_answer_a_readable_connection_alike(actors: Actors, files: Path) -> None:
    entry = _connection(actors, "x", _sqlite_db(files / "shared" / "x.db"))
    _others(actors, entry, readable=True)
    answers = [
        actors.call("eve", method, url)
        for method, url in (
            ("POST", f"/api/job-execution/{entry}/trigger"),
            ("GET", f"/api/job-execution/{entry}/status"),
            ("POST", "/api/job-execution/Connections/x.dst/trigger"),
            ("GET", "/api/job-execution/Connections/x.dst/status"),
        )
    ]
    assert {a.status_code for a in answers} == {400}, [a.text for a in answers]
    assert {a.json()["reason"] for a in answers} == {
        "/Connections/x.dst is not a job (import job, workbook or export job)"
    }


# ---------------------------------------------------------------- review round 4


def test_an_inline_url_must_carry_its_own_user_and_password(actors: Actors) -> None:
    """Without them libpq logged in with the server's own PGUSER/PGPASSFILE/~/.pgpass."""
    _allow_local_hosts(actors)
    for url in (
        "postgresql://127.0.0.1:5432/postgres",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgresql://:secret@127.0.0.1:5432/postgres",
    ):
        source = actors.call("eve", "POST", "/rest/import-job", _source("q", url=url, table="t"))
        assert source.status_code == 400, (url, source.text)
        assert "its own user and password" in source.json()["reason"]
    # With credentials of her own, an allowed host is fine (another database).
    own = "postgresql://eve:her-secret@127.0.0.1:5432/elsewhere"
    saved = actors.call("eve", "POST", "/rest/import-job", _source("ok", url=own, table="t"))
    assert saved.status_code == 200, saved.text


def test_every_address_of_this_machine_is_the_metadata_server(actors: Actors) -> None:
    """The guard knew only what the host name resolves to, not the interfaces' addresses."""
    from datamill.engine.paths import _interface_addresses, check_postgres_url
    from datamill.errors import InvalidInput

    outside = [ip for ip in _interface_addresses() if not ip.is_loopback and not ip.is_link_local]
    if not outside:
        pytest.skip("this machine has no network address besides loopback")
    metadata = "postgresql+psycopg://postgres:pw@127.0.0.1:5432/meta"
    for ip in outside:
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        url = sa.make_url(f"postgresql+psycopg://u:p@{host}:5432/meta")
        with pytest.raises(InvalidInput):
            check_postgres_url(url, (metadata,), "sink")
    # IPv4 carried inside IPv6 (compatible, NAT64, 6to4) is the same machine too.
    for host in ("[::7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]"):
        url = sa.make_url(f"postgresql+psycopg://u:p@{host}:5432/meta")
        with pytest.raises(InvalidInput):
            check_postgres_url(url, (metadata,), "sink")


@pytest.mark.parametrize("table", ["datamill_sink_marks", "DATAMILL_SINK_MARKS"])
def test_no_export_writes_datamills_marker_table(running: Actors, files: Path, table: str) -> None:
    # Attack review: eve, who may write a shared database, appended rows with
    # bob's next run keys to datamill_sink_marks; bob's export then found
    # "already written", reported success and wrote nothing.
    url = _sqlite_db(files / "shared" / "d.db")
    entry = _connection(running, "d", url)
    _others(running, entry, readable=True, writable=True)
    source = _source("mine", connection="/Connections/d.dst", table="items")
    assert running.call("eve", "POST", "/rest/import-job", source).status_code == 200
    sink = {
        "path": "/Users/eve/marks.exp",
        "source": {"importJob": "/Users/eve/mine.imp"},
        "sink": {"kind": "database", "connection": "/Connections/d.dst", "table": table},
    }
    for mode in ("append", "replace"):
        sink["sink"]["mode"] = mode  # type: ignore[index]
        refused = running.call("eve", "POST", "/rest/export-job", sink)
        assert refused.status_code == 400, refused.text
        assert "datamill_sink_marks' is Datamill's own table" in refused.json()["reason"]
    with sqlite3.connect(files / "shared" / "d.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"items"}
