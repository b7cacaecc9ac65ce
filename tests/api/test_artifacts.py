"""Defining jobs over HTTP: create, read, update, round-trip, delete, list; every refusal."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.status import JobKind
from datamill.services.artifacts import document_schema
from datamill.worker.worker import Worker
from tests.helpers import (
    orders_import,
    password_hash,
    totals_workbook,
    wait_terminal,
    write_orders_csv,
)

ROOT = Path(__file__).resolve().parents[2]


def _auth(name: str, password: str = "pw") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


ADMIN = _auth("admin", "secret")


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    """The app, with analyst 'ann' and 'viewer' (a role without job.define)."""
    node.store.users.create("ann", password_hash("pw"), roles=("ANALYST",))
    node.store.users.create("viewer", password_hash("pw"), roles=())
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield client


def _no_job(config_id: int) -> dict[str, str]:
    """The answer for a job id that names nothing the caller may read."""
    reason = f"Entity of type 'JobConfiguration' with id '{config_id}' not found."
    return {"status": "failure", "reason": reason}


def _post(client: TestClient, url: str, document: Any, headers: dict[str, str] = ADMIN) -> Any:
    return client.post(url, content=json.dumps(document), headers=headers)


def _documents(files_root: Path) -> dict[str, dict[str, Any]]:
    source = write_orders_csv(files_root / "in", rows=12)
    out = files_root / "out" / "totals.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    return {
        "/rest/import-job": {"path": "/Data/ImportJobs/orders.imp", **orders_import(source)},
        "/rest/workbook": {
            "path": "/Analytics/Workbooks/totals.wbk",
            **totals_workbook("/Data/ImportJobs/orders.imp"),
        },
        "/rest/export-job": {
            "path": "/Data/ExportJobs/totals.exp",
            "source": {"workbook": "/Analytics/Workbooks/totals.wbk", "sheet": "totals"},
            "sink": {"kind": "csv", "path": str(out)},
        },
    }


def test_create_read_round_trip_update_delete_each_kind(
    client: TestClient, files_root: Path
) -> None:
    documents = _documents(files_root)
    ids = {}
    for base, document in documents.items():
        created = _post(client, base, document)
        assert created.status_code == 200, created.text
        body = created.json()
        assert list(body) == ["configuration-id", "status"] and body["status"] == "success"
        ids[base] = body["configuration-id"]

    for base, config_id in ids.items():
        read = client.get(f"{base}/{config_id}", headers=ADMIN).json()
        assert read["path"] == documents[base]["path"]
        assert read["version"] == 1
        # What GET returns can be PUT back unchanged, and reads the same afterwards.
        put = client.put(f"{base}/{config_id}", content=json.dumps(read), headers=ADMIN)
        assert put.json() == {"status": "success"}
        assert client.get(f"{base}/{config_id}", headers=ADMIN).json() == read
        listing = client.get(base, headers=ADMIN).json()
        assert [(item["path"], item["id"]) for item in listing] == [(read["path"], config_id)]

    changed = client.get(f"/rest/workbook/{ids['/rest/workbook']}", headers=ADMIN).json()
    changed["description"] = "now with a description"
    changed["path"] = "/Analytics/Workbooks/renamed.wbk"
    assert client.put(
        f"/rest/workbook/{ids['/rest/workbook']}", content=json.dumps(changed), headers=ADMIN
    ).json() == {"status": "success"}
    again = client.get(f"/rest/workbook/{ids['/rest/workbook']}", headers=ADMIN).json()
    assert again["description"] == "now with a description"
    assert again["path"] == "/Analytics/Workbooks/renamed.wbk"

    # Deleting never needs the readers' consent (issue #10, F10): in any order it works.
    for base in ("/rest/import-job", "/rest/workbook", "/rest/export-job"):
        deleted = client.delete(f"{base}/{ids[base]}", headers=ADMIN)
        assert deleted.json() == {"status": "success"}, deleted.text
        gone = client.get(f"{base}/{ids[base]}", headers=ADMIN)
        assert (gone.status_code, gone.json()) == (404, _no_job(ids[base])), gone.text
        assert client.get(base, headers=ADMIN).json() == []


def test_deleting_a_job_others_read_is_allowed_and_names_no_reader(
    node: Node, client: TestClient, files_root: Path
) -> None:
    documents = _documents(files_root)
    imp = _post(client, "/rest/import-job", documents["/rest/import-job"]).json()
    workbook = _post(client, "/rest/workbook", documents["/rest/workbook"]).json()
    deleted = client.delete(f"/rest/import-job/{imp['configuration-id']}", headers=ADMIN)
    assert deleted.json() == {"status": "success"}
    # The reader stays, and says what it reads when it runs (see tests/security).
    kept = client.get(f"/rest/workbook/{workbook['configuration-id']}", headers=ADMIN).json()
    assert kept["path"] == "/Analytics/Workbooks/totals.wbk"
    assert kept["sheets"][0]["source"] == {"importJob": "/Data/ImportJobs/orders.imp"}


def test_a_bare_name_goes_to_the_default_folder(client: TestClient, files_root: Path) -> None:
    document = dict(_documents(files_root)["/rest/import-job"], path="sales")
    created = _post(client, "/rest/import-job", document).json()
    read = client.get(f"/rest/import-job/{created['configuration-id']}", headers=ADMIN).json()
    assert read["path"] == "/Data/ImportJobs/sales.imp"


@pytest.mark.parametrize(
    ("base", "change", "reason"),
    [
        ("/rest/import-job", {"path": None}, "path: required"),
        ("/rest/import-job", {"unknownMember": 1}, "unknownMember: Extra inputs"),
        ("/rest/import-job", {"errorMode": "SOMETIMES"}, "errorMode: Input should be"),
        ("/rest/import-job", {"schema": []}, "schema: "),
        ("/rest/import-job", {"path": "/Data/ImportJobs/x.wbk"}, "must end with .imp"),
        ("/rest/workbook", {"sheets": []}, "sheets: "),
        (
            "/rest/workbook",
            {
                "sheets": [
                    {"kind": "data", "name": "orders", "source": {"importJob": "/x.imp"}},
                    {"kind": "sql", "name": "t", "sql": "SELECT * FROM ordrs", "keep": True},
                ]
            },
            'sheets[1].sql: unknown sheet "ordrs"',
        ),
        (
            "/rest/workbook",
            {"triggering": {"mode": "SCHEDULED"}},
            "needs a 'cron' expression",
        ),
        ("/rest/export-job", {"sink": {"kind": "xml", "path": "/x"}}, "sink"),
    ],
)
def test_validation_errors_name_the_member(
    client: TestClient, files_root: Path, base: str, change: dict[str, Any], reason: str
) -> None:
    document = {**_documents(files_root)[base], **change}
    if document.get("path") is None:
        document.pop("path")
    response = _post(client, base, document)
    assert response.status_code == 400, response.text
    assert reason in response.json()["reason"]
    assert client.get(base, headers=ADMIN).json() == []


def test_duplicate_paths_are_refused(client: TestClient, files_root: Path) -> None:
    document = _documents(files_root)["/rest/import-job"]
    assert _post(client, "/rest/import-job", document).json()["status"] == "success"
    again = _post(client, "/rest/import-job", document)
    assert (again.status_code, again.json()) == (
        409,
        {"status": "failure", "reason": "/Data/ImportJobs/orders.imp already exists"},
    )
    assert [i["path"] for i in client.get("/rest/import-job", headers=ADMIN).json()] == [
        "/Data/ImportJobs/orders.imp"
    ]


def test_lenient_bodies_as_curl_sends_them(client: TestClient, files_root: Path) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    body = f"{{path: '/Data/ImportJobs/lenient.imp', source: {{kind: csv, path: '{source}',}},}}"
    response = client.post(
        "/rest/import-job",
        content=body,
        headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["status"] == "success", response.text
    read = client.get(f"/rest/import-job/{response.json()['configuration-id']}", headers=ADMIN)
    assert read.json()["path"] == "/Data/ImportJobs/lenient.imp"
    assert read.json()["source"]["path"] == str(source)
    broken = client.post("/rest/import-job", content=b"{path: ", headers=ADMIN)
    assert broken.status_code == 400 and broken.json()["status"] == "failure"
    assert "JSON" in broken.json()["reason"] or "json" in broken.json()["reason"]


def test_a_cycle_is_refused_when_defined(client: TestClient, files_root: Path) -> None:
    documents = _documents(files_root)
    _post(client, "/rest/import-job", documents["/rest/import-job"])
    first = _post(client, "/rest/workbook", documents["/rest/workbook"]).json()
    second = {
        "path": "/Analytics/Workbooks/second.wbk",
        "sheets": [
            {
                "kind": "data",
                "name": "t",
                "source": {"workbook": "/Analytics/Workbooks/totals.wbk", "sheet": "totals"},
            },
            {"kind": "sql", "name": "out", "sql": "SELECT * FROM t", "keep": True},
        ],
    }
    assert _post(client, "/rest/workbook", second).json()["status"] == "success"
    looped = client.get(f"/rest/workbook/{first['configuration-id']}", headers=ADMIN).json()
    looped["sheets"][0] = {
        "kind": "data",
        "name": "orders",
        "source": {"workbook": "/Analytics/Workbooks/second.wbk", "sheet": "out"},
    }
    response = client.put(
        f"/rest/workbook/{first['configuration-id']}", content=json.dumps(looped), headers=ADMIN
    )
    assert response.status_code == 400
    assert "cycle" in response.json()["reason"] and "second.wbk" in response.json()["reason"]
    unchanged = client.get(f"/rest/workbook/{first['configuration-id']}", headers=ADMIN).json()
    assert unchanged["sheets"][0]["source"] == {"importJob": "/Data/ImportJobs/orders.imp"}


def test_who_may_define_read_and_change(node: Node, client: TestClient, files_root: Path) -> None:
    # ann reads from her private location: the shared files root is ADMIN's (docs/security.md).
    node.store.users.create("other", password_hash("pw"), roles=("ANALYST",))
    document = _documents(files_root / "users" / "ann")["/rest/import-job"]
    denied = _post(client, "/rest/import-job", document, _auth("viewer"))
    assert (denied.status_code, denied.json()["reason"]) == (
        403,
        "your roles do not allow you to define, change or delete jobs and folders "
        "(this needs the capability job.define)",
    )
    created = _post(client, "/rest/import-job", document, _auth("ann")).json()
    config_id = created["configuration-id"]
    url = f"/rest/import-job/{config_id}"
    assert client.get(url, headers=_auth("ann")).json()["path"] == document["path"]
    hidden = client.get(url, headers=_auth("other"))
    missing = client.get("/rest/import-job/999", headers=_auth("other"))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == _no_job(config_id) and missing.json() == _no_job(999)
    assert client.get("/rest/import-job", headers=_auth("other")).json() == []
    refused = client.delete(url, headers=_auth("other"))
    assert (refused.status_code, refused.json()) == (404, _no_job(config_id))
    assert client.get(url, headers=_auth("ann")).json()["path"] == document["path"]
    # A role without job.read reads nothing, whatever the flags (issue #10, F12).
    for method in ("GET", "DELETE"):
        refused = client.request(method, url, headers=_auth("viewer"))
        assert refused.status_code == 403 and "capability" in refused.json()["reason"]
    assert client.get("/rest/import-job", headers=_auth("viewer")).status_code == 403
    assert client.get(url, headers=ADMIN).json()["path"] == document["path"]
    # Another kind's id answers like a missing one.
    other_kind = client.get(f"/rest/workbook/{config_id}", headers=ADMIN)
    assert (other_kind.status_code, other_kind.json()) == (404, _no_job(config_id))


def test_data_listing_download_and_deletion(
    node: Node, client: TestClient, files_root: Path
) -> None:
    documents = _documents(files_root)
    imp = _post(client, "/rest/import-job", documents["/rest/import-job"]).json()[
        "configuration-id"
    ]
    wbk = _post(client, "/rest/workbook", documents["/rest/workbook"]).json()["configuration-id"]
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    try:
        for path in ("/Data/ImportJobs/orders.imp", "/Analytics/Workbooks/totals.wbk"):
            run = client.post(f"/api/job-execution{path}/trigger", headers=ADMIN).json()
            wait_terminal(node, run["job-execution-id"])
    finally:
        worker.shutdown(grace_seconds=1.0)
    listing = client.get(f"/rest/data/import-job/{imp}", headers=ADMIN).json()
    assert listing[0]["path"] == "/Data/ImportJobs/orders.imp"
    assert listing[0]["record-count"] == 12
    data = listing[0]["datas"][0]
    assert list(data) == ["timestamp", "record-count", "id"] and data["record-count"] == 12
    sheets = client.get(f"/rest/data/workbook/{wbk}", headers=ADMIN).json()
    assert [s["path"] for s in sheets] == ["/Analytics/Workbooks/totals.wbk/totals"]
    csv = client.get(f"/rest/data/workbook/{wbk}/totals/download", headers=ADMIN)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == '"region","n","total"' and len(lines) == 4
    raw = client.get(f"/rest/data/import-job/{imp}/download", headers=ADMIN).text.splitlines()
    assert len(raw) == 13
    nope = client.get(f"/rest/data/workbook/{wbk}/nope/download", headers=ADMIN)
    assert (nope.status_code, nope.json()["reason"]) == (
        404,
        "/Analytics/Workbooks/totals.wbk keeps no sheet named 'nope'",
    )
    deleted = client.delete(f"/rest/data/{data['id']}", headers=ADMIN)
    assert deleted.json() == {"status": True}
    assert client.get(f"/rest/data/import-job/{imp}", headers=ADMIN).json()[0]["datas"] == []


def test_published_json_schemas_match_the_models(client: TestClient) -> None:
    for name, kind in (
        ("import-job", JobKind.IMPORT),
        ("workbook", JobKind.WORKBOOK),
        ("export-job", JobKind.EXPORT),
    ):
        on_disk = json.loads((ROOT / "docs" / "schemas" / f"{name}.json").read_text())
        assert on_disk == document_schema(kind), f"run scripts/schemas to refresh {name}.json"
        served = client.get(f"/rest/schemas/{name}", headers=ADMIN).json()
        assert served == on_disk


@pytest.mark.parametrize(
    ("base", "member", "source", "reason"),
    [
        (
            "/rest/workbook",
            "sheets[0].source",
            {"importJob": "/Data/ImportJobs/no.imp"},
            "importJob: /Data/ImportJobs/no.imp is not an import job that you can read",
        ),
        (
            "/rest/workbook",
            "sheets[0].source",
            {"workbook": "/Analytics/Workbooks/no.wbk", "sheet": "s"},
            "workbook: /Analytics/Workbooks/no.wbk is not a workbook job that you can read",
        ),
        (  # a folder
            "/rest/export-job",
            "source",
            {"importJob": "/Data/ImportJobs"},
            "importJob: /Data/ImportJobs is not an import job that you can read",
        ),
        (  # a job of the other kind
            "/rest/export-job",
            "source",
            {"workbook": "/Data/ImportJobs/orders.imp", "sheet": "s"},
            "workbook: /Data/ImportJobs/orders.imp is not a workbook job that you can read",
        ),
    ],
)
def test_a_reference_to_nothing_readable_names_the_member_and_what_was_typed(
    client: TestClient, files_root: Path, base: str, member: str, source: Any, reason: str
) -> None:
    # docs/security.md: one 400 for missing, unreadable, folder and other kind,
    # naming only the member and the reference as typed.
    documents = _documents(files_root)
    assert _post(client, "/rest/import-job", documents["/rest/import-job"]).is_success
    document = dict(documents[base])
    if base == "/rest/workbook":
        document["sheets"] = [{**document["sheets"][0], "source": source}, document["sheets"][1]]
    else:
        document["source"] = source
    refused = client.post(base, content=json.dumps(document), headers=ADMIN)
    assert refused.json() == {"status": "failure", "reason": f"{member}.{reason}"}, refused.text
    assert refused.status_code == 400
    assert client.get(base, headers=ADMIN).json() == []


_IMPORT = "/rest/import-job"


@pytest.mark.parametrize(
    ("base", "member", "value", "reason"),
    [
        (_IMPORT, "retries", -1, "greater than or equal to 0"),
        (_IMPORT, "retries", 11, "less than or equal to 10"),
        (_IMPORT, "retries", True, "valid integer"),
        (_IMPORT, "retries", "2", "valid integer"),
        (_IMPORT, "retryDelay", -1, "greater than or equal to 0"),
        (_IMPORT, "retryDelay", 86_401, "less than or equal to 86400"),
        (_IMPORT, "retryDelay", 1.5, "valid integer"),
        ("/rest/workbook", "retries", 11, "less than or equal to 10"),
        ("/rest/export-job", "retryDelay", -1, "greater than or equal to 0"),
    ],
)
def test_a_retry_policy_out_of_bounds_is_refused_naming_the_member(
    client: TestClient, files_root: Path, base: str, member: str, value: Any, reason: str
) -> None:
    documents = _documents(files_root)
    for url in ("/rest/import-job", "/rest/workbook"):
        if url != base:
            assert _post(client, url, documents[url]).is_success
        else:
            break
    refused = _post(client, base, {**documents[base], member: value})
    assert refused.status_code == 400, refused.text
    assert refused.json()["status"] == "failure"
    assert member in refused.json()["reason"] and reason in refused.json()["reason"]
    saved = _post(client, base, {**documents[base], "retries": 10, "retryDelay": 86_400})
    assert saved.is_success, saved.text
    read = client.get(f"{base}/{saved.json()['configuration-id']}", headers=ADMIN).json()
    assert (read["retries"], read["retryDelay"]) == (10, 86_400)


def test_a_refused_definition_names_each_member_once_and_as_sent(
    client: TestClient, files_root: Path
) -> None:
    """The reason of a 400 is `member: problem` per problem, joined by '; ' (services/jobs.py)."""
    documents = _documents(files_root)
    assert _post(client, "/rest/import-job", documents["/rest/import-job"]).is_success
    workbook = documents["/rest/workbook"]
    bad_sheets = [
        {"kind": "sql", "name": "x", "keep": True, "sql": ""},
        {"kind": "sql", "name": "y", "keep": "maybe", "sql": "SELECT 1"},
    ]
    two = _post(client, "/rest/workbook", {**workbook, "sheets": bad_sheets})
    assert two.status_code == 400, two.text
    problems = two.json()["reason"].split("; ")
    assert len(problems) == 2, problems
    # List positions in brackets, members after a dot, no dot in front.
    assert problems[0].startswith("sheets[0].sql.sql: "), problems
    assert problems[1].startswith("sheets[1].sql.keep: "), problems
    # A rule of the whole definition has no member to name, and no pydantic prefix.
    no_keep = [{"kind": "sql", "name": "x", "sql": "SELECT 1"}]
    whole = _post(client, "/rest/workbook", {**workbook, "sheets": no_keep})
    assert (whole.status_code, whole.json()["reason"]) == (
        400,
        "at least one sheet needs 'keep': true",
    )
    # A member the model does not know is named exactly as the script sent it.
    unknown = _post(client, "/rest/workbook", {**workbook, "XNote": "for the team"})
    assert (unknown.status_code, unknown.json()["reason"]) == (
        400,
        "XNote: Extra inputs are not permitted",
    )
    assert client.get("/rest/workbook", headers=ADMIN).json() == []
