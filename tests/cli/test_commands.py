"""Every client-side command against a real server: --json parses, people get readable text."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.cli.conftest import IMPORT, WARN_IMPORT, WORKBOOK, Cli, define_jobs
from tests.helpers import orders_import, write_orders_csv


def _json(result: object) -> object:
    assert getattr(result, "returncode") == 0, getattr(result, "stderr")  # noqa: B009
    return json.loads(getattr(result, "stdout"))  # noqa: B009


def test_job_commands_print_json_for_scripts(cli: Cli, tmp_path: Path) -> None:
    with cli.client() as client:
        ids = define_jobs(client, cli.server.home)
    assert _json(cli("status", IMPORT, "--json")) == {"status": "success", "job-status": "_NONE"}
    assert cli("status", IMPORT).stdout.strip() == f"{IMPORT}: never ran"

    triggered = _json(cli("trigger", WARN_IMPORT, "--json"))
    assert isinstance(triggered, dict)
    execution_id = triggered["job-execution-id"]
    assert triggered["job-execution-user"] == "admin"
    with cli.client() as client:
        client.wait(execution_id, timeout=120)
    status = _json(cli("status", WARN_IMPORT, "--json"))
    assert isinstance(status, dict)
    assert status["job-status"] == "COMPLETED_WITH_WARNINGS"
    assert status["job-execution-id"] == execution_id

    assert cli("trigger", WARN_IMPORT, "--wait").returncode == 3
    history = _json(cli("history", WARN_IMPORT, "--json"))
    assert isinstance(history, list) and len(history) == 2
    assert history[1] == {"id": execution_id, "jobStatus": "COMPLETED_WITH_WARNINGS"}
    page = _json(cli("history", WARN_IMPORT, "--start", "1", "--length", "5", "--json"))
    assert page == [history[1]]
    people = cli("history", WARN_IMPORT)
    assert "COMPLETED_WITH_WARNINGS" in people.stdout and str(execution_id) in people.stdout

    assert _json(cli("running", "--json")) == []
    nothing = cli("stop", IMPORT, "--json")
    assert nothing.returncode == 1 and nothing.stdout == ""
    assert "error:" in nothing.stderr

    listing = _json(cli("ls", "/Data/ImportJobs", "--json"))
    assert isinstance(listing, dict)
    names = {f["name"]: f for f in listing["_embedded"]["files"]}
    assert set(names) == {"orders.imp", "dirty.imp"}
    assert "dirty.imp" in cli("ls", "/Data/ImportJobs").stdout

    shown = _json(cli("job", "show", WORKBOOK, "--json"))
    assert isinstance(shown, dict)
    assert shown["path"] == WORKBOOK and shown["sheets"][1]["name"] == "totals"

    data = _json(cli("data", "list", WARN_IMPORT, "--json"))
    assert isinstance(data, list) and data[0]["record-count"] == 30
    target = tmp_path / "dirty.csv"
    written = _json(cli("data", "download", WARN_IMPORT, "-o", str(target), "--json"))
    assert written == {"path": str(target), "bytes": target.stat().st_size}
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 30 and rows[0].keys() == {"order_id", "region", "amount"}
    to_stdout = cli("data", "download", WARN_IMPORT)
    assert to_stdout.stdout == target.read_text()
    no_sheet = cli("data", "download", WORKBOOK)
    assert no_sheet.returncode == 2 and "--sheet" in no_sheet.stderr
    assert ids[WORKBOOK] > 0


def test_job_define_show_and_delete_on_a_server(cli: Cli, tmp_path: Path) -> None:
    source = write_orders_csv(cli.server.home / "files" / "more", rows=5)
    spec = tmp_path / "more.json"
    spec.write_text(json.dumps(orders_import(source)))
    path = "/Data/ImportJobs/more.imp"
    defined = _json(cli("job", "define", "import", path, str(spec)))
    assert isinstance(defined, dict) and defined["path"] == path
    with cli.client() as client:
        entry = client.file(path)
        assert (entry.id, entry.configuration_id) == (
            defined["file-id"],
            defined["configuration-id"],
        )
    again = cli("job", "define", "import", path, str(spec))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert _json(cli("job", "delete", path, "--yes", "--json")) == {
        "status": "success",
        "path": path,
    }
    gone = cli("job", "show", path)
    assert gone.returncode == 1
    assert "File doesn't exist or isn't accessible with current permissions" in gone.stderr


def test_users_add_password_and_list_on_a_server(cli: Cli) -> None:
    added = cli("user", "add", "bob", "--password-stdin", "--json", stdin="bob-first-pw\n")
    assert _json(added) == {"status": "success", "username": "bob"}
    listed = _json(cli("user", "list", "--json"))
    assert isinstance(listed, dict)
    assert [u["username"] for u in listed["elements"]] == ["admin", "bob"]
    assert listed["elements"][1]["roles"] == ["ANALYST"]

    bob = dict(cli.env, DATAMILL_USER="bob", DATAMILL_PASSWORD="bob-first-pw")
    changed = cli.__class__.__new__(cli.__class__)
    changed.server, changed.env = cli.server, bob
    new = changed("user", "password", "bob", "--password-stdin", stdin="bob-second-pw\n")
    assert new.returncode == 0, new.stderr
    old = changed("running", "--json")
    assert old.returncode == 7 and "error:" in old.stderr
    changed.env = dict(bob, DATAMILL_PASSWORD="bob-second-pw")
    assert _json(changed("running", "--json")) == []
    not_admin = changed("user", "list")
    assert not_admin.returncode == 7


def test_logs_print_the_run_s_events(cli: Cli) -> None:
    with cli.client() as client:
        define_jobs(client, cli.server.home)
    assert cli("trigger", WARN_IMPORT, "--wait").returncode == 3
    lines = cli("logs", WARN_IMPORT, "--json")
    assert lines.returncode == 0, lines.stderr
    events = [json.loads(line) for line in lines.stdout.splitlines()]
    assert events[0]["event"] == "queued"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    followed = cli("logs", WARN_IMPORT, "--follow")
    assert followed.returncode == 0 and "queued" in followed.stdout
