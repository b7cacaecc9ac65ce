"""Files only through locations (F3, F7): eve reads and writes only where she may."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from datamill.domain.status import JobStatus
from tests.helpers import wait_terminal
from tests.security.conftest import Actors

CSV = "name,salary\nalice,100\n"


@pytest.fixture
def files(actors: Actors) -> Path:
    """The operator's files root, holding admin's private salaries."""
    root = Path(actors.node.settings.resolved_source_roots[0])
    (root / "adminonly").mkdir(parents=True, exist_ok=True)
    (root / "adminonly" / "salaries.csv").write_text(CSV)
    return root


def _import(path: str, location: str | None = None, name: str = "imp") -> dict[str, Any]:
    source: dict[str, Any] = {"kind": "csv", "path": path}
    if location is not None:
        source["location"] = location
    return {"path": f"/Users/eve/{name}.imp", "source": source}


def _export(sink: dict[str, Any], name: str = "exp") -> dict[str, Any]:
    return {
        "path": f"/Users/eve/{name}.exp",
        "source": {"importJob": "/Users/eve/mine.imp"},
        "sink": sink,
    }


def _reason(response: Any) -> str:
    return str(response.json()["reason"])


def _run(actors: Actors, user: str, path: str) -> Any:
    started = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert started.status_code == 200, started.text
    return wait_terminal(actors.node, started.json()["job-execution-id"])


def _location(actors: Actors, name: str, folder: Path) -> int:
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": f"/Connections/{name}", "folder": str(folder)}
    )
    assert made.status_code == 200, made.text
    return int(made.json()["id"])


def _others(actors: Actors, entry_id: int, **flags: bool) -> None:
    url = f"/api/filesystem/files/{entry_id}/permission/others"
    assert actors.call("admin", "PUT", url, flags).status_code == 200


def _mine(actors: Actors, files: Path) -> None:
    """eve's own import job reading her private location."""
    (files / "users" / "eve" / "in.csv").write_text(CSV)
    made = actors.call(
        "eve", "POST", "/rest/import-job", _import("in.csv", "/Users/eve/files.loc", "mine")
    )
    assert made.status_code == 200, made.text


# ---------------------------------------------------------------- F3: reading


def test_f3_eve_cannot_import_admins_file(actors: Actors, files: Path) -> None:
    secret = str(files / "adminonly" / "salaries.csv")
    refused = actors.call("eve", "POST", "/rest/import-job", _import(secret))
    missing = actors.call("eve", "POST", "/rest/import-job", _import(str(files / "nope.csv")))
    assert refused.status_code == missing.status_code == 400
    # The same answer whether the file exists or not, modulo the path she typed.
    assert _reason(refused).replace(secret, "X") == _reason(missing).replace(
        str(files / "nope.csv"), "X"
    )
    # Naming the operator's location outright: as if it did not exist.
    by_location = actors.call(
        "eve",
        "POST",
        "/rest/import-job",
        _import("adminonly/salaries.csv", "/Connections/files.loc"),
    )
    nowhere = actors.call(
        "eve", "POST", "/rest/import-job", _import("adminonly/salaries.csv", "/Connections/no.loc")
    )
    assert by_location.status_code == nowhere.status_code == 400
    assert _reason(by_location).replace("files.loc", "X") == _reason(nowhere).replace("no.loc", "X")
    assert "salary" not in by_location.text


@pytest.mark.parametrize("form", ["id", "uuid", "path"])
def test_f3_every_reference_form_of_a_private_location_is_refused(
    actors: Actors, files: Path, form: str
) -> None:
    listed = actors.call("admin", "GET", "/rest/location").json()
    root = next(item for item in listed if item["path"] == "/Connections/files.loc")
    reference = {"id": str(root["id"]), "uuid": root["uuid"], "path": root["path"]}[form]
    refused = actors.call(
        "eve", "POST", "/rest/import-job", _import("adminonly/salaries.csv", reference)
    )
    assert refused.status_code == 400 and "does not exist or you may not" in _reason(refused)
    # bob's private location is as closed to eve as admin's.
    bobs = actors.call("eve", "POST", "/rest/import-job", _import("x.csv", "/Users/bob/files.loc"))
    assert bobs.status_code == 400 and "does not exist or you may not" in _reason(bobs)


def test_eve_imports_from_her_private_location(running: Actors, files: Path) -> None:
    _mine(running, files)
    run = _run(running, "eve", "/Users/eve/mine.imp")
    assert run.status is JobStatus.COMPLETED, run.error_message
    # The absolute form of the same file works too: it lies inside her location.
    absolute = str(files / "users" / "eve" / "in.csv")
    made = running.call("eve", "POST", "/rest/import-job", _import(absolute, name="abs"))
    assert made.status_code == 200, made.text
    assert _run(running, "eve", "/Users/eve/abs.imp").status is JobStatus.COMPLETED


def test_a_revoked_location_fails_the_run_with_the_owners_rights(
    running: Actors, files: Path
) -> None:
    shared = _location(running, "shared", files / "shared")
    (files / "shared" / "s.csv").write_text(CSV)
    _others(running, shared, readable=True)
    made = running.call(
        "eve", "POST", "/rest/import-job", _import("s.csv", "/Connections/shared.loc")
    )
    assert made.status_code == 200, made.text
    _others(running, shared, readable=False)
    run = _run(running, "eve", "/Users/eve/imp.imp")
    assert run.status is JobStatus.ERROR
    assert "does not exist or you may not read from it" in str(run.error_message)


# ---------------------------------------------------------------- F3: writing


def test_f3_eve_cannot_overwrite_admins_file(running: Actors, files: Path) -> None:
    _mine(running, files)
    target = files / "adminonly" / "salaries.csv"
    for sink in (
        {"kind": "csv", "path": str(target)},
        {"kind": "csv", "location": "/Connections/files.loc", "path": "adminonly/salaries.csv"},
        {"kind": "csv", "location": "/Users/eve/files.loc", "path": "../../adminonly/salaries.csv"},
        {"kind": "database", "url": f"sqlite:///{files}/adminonly/x.db", "table": "t"},
    ):
        refused = running.call("eve", "POST", "/rest/export-job", _export(sink))
        assert refused.status_code == 400, (sink, refused.text)
    assert target.read_text() == CSV


def test_a_symlink_in_her_location_does_not_lead_out_of_it(running: Actors, files: Path) -> None:
    _mine(running, files)
    assert _run(running, "eve", "/Users/eve/mine.imp").status is JobStatus.COMPLETED
    eve = files / "users" / "eve"
    (eve / "out.csv").symlink_to(files / "adminonly" / "salaries.csv")
    sink = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "out.csv"}
    assert running.call("eve", "POST", "/rest/export-job", _export(sink)).status_code == 200
    run = _run(running, "eve", "/Users/eve/exp.exp")
    assert run.status is JobStatus.ERROR
    assert (files / "adminonly" / "salaries.csv").read_text() == CSV


def test_read_flag_imports_write_flag_exports(running: Actors, files: Path) -> None:
    _mine(running, files)
    shared = _location(running, "team", files / "team")
    (files / "team" / "t.csv").write_text(CSV)
    sink = {"kind": "csv", "location": "/Connections/team.loc", "path": "out.csv"}
    _others(running, shared, readable=True)
    read = running.call(
        "eve", "POST", "/rest/import-job", _import("t.csv", "/Connections/team.loc")
    )
    assert read.status_code == 200, read.text
    refused = running.call("eve", "POST", "/rest/export-job", _export(sink))
    assert refused.status_code == 400 and "may not write to it" in _reason(refused)
    _others(running, shared, readable=True, writable=True)
    assert running.call("eve", "POST", "/rest/export-job", _export(sink)).status_code == 200
    assert _run(running, "eve", "/Users/eve/mine.imp").status is JobStatus.COMPLETED
    run = _run(running, "eve", "/Users/eve/exp.exp")
    assert run.status is JobStatus.COMPLETED, run.error_message
    assert (files / "team" / "out.csv").read_text().startswith("name,salary")


# ---------------------------------------------------------------- F7: globs


@pytest.mark.parametrize(
    "pattern",
    ["*/../../../../**", "../../**", "./*/../../x.csv", "a/../../../etc/passwd"],
)
def test_f7_globs_cannot_climb_out_of_the_location(
    actors: Actors, files: Path, pattern: str
) -> None:
    (files / "users" / "eve" / "a").mkdir(parents=True, exist_ok=True)
    relative = actors.call(
        "eve", "POST", "/rest/import-job", _import(pattern, "/Users/eve/files.loc")
    )
    assert relative.status_code == 400 and "'..'" in _reason(relative)
    absolute = str(files / "users" / "eve") + "/" + pattern
    refused = actors.call("eve", "POST", "/rest/import-job", _import(absolute, name="abs"))
    assert refused.status_code == 400 and "'..'" in _reason(refused)


def test_f7_a_glob_through_a_symlinked_folder_is_refused(running: Actors, files: Path) -> None:
    eve = files / "users" / "eve"
    (eve / "in.csv").write_text(CSV)
    (eve / "root").symlink_to("/")
    (eve / "admin").symlink_to(files / "adminonly")
    for name, pattern in (("g1", "**/*.csv"), ("g2", "*/*.csv"), ("g3", "admin/*")):
        made = running.call(
            "eve", "POST", "/rest/import-job", _import(pattern, "/Users/eve/files.loc", name)
        )
        assert made.status_code == 200, made.text
        run = _run(running, "eve", f"/Users/eve/{name}.imp")
        assert run.status is JobStatus.ERROR
        assert "outside" in str(run.error_message), run.error_message
        assert "alice" not in str(run.error_message)


def test_glob_matches_are_bounded(running: Actors, files: Path) -> None:
    eve = files / "users" / "eve"
    for i in range(3):
        (eve / f"p{i}.csv").write_text(CSV)
    running.node.settings.source_max_files = 2
    made = running.call("eve", "POST", "/rest/import-job", _import("*.csv", "/Users/eve/files.loc"))
    assert made.status_code == 200, made.text
    run = _run(running, "eve", "/Users/eve/imp.imp")
    assert run.status is JobStatus.ERROR
    assert "matches more than 2 files" in str(run.error_message)


# ---------------------------------------------------------------- the entries themselves


def test_analysts_cannot_create_locations(actors: Actors, files: Path) -> None:
    body = {"path": "/Users/eve/all.loc", "folder": str(files)}
    assert actors.call("eve", "POST", "/rest/location", body).status_code == 403
    assert not os.path.exists(files / "users" / "eve" / "all.loc")


def test_locations_listed_and_read_only_where_readable(actors: Actors, files: Path) -> None:
    listed = actors.call("eve", "GET", "/rest/location").json()
    assert [item["path"] for item in listed] == ["/Users/eve/files.loc"]
    assert listed[0]["folder"] == str(files / "users" / "eve")
    admin_root = next(
        item
        for item in actors.call("admin", "GET", "/rest/location").json()
        if item["path"] == "/Connections/files.loc"
    )
    hidden = actors.call("eve", "GET", f"/rest/location/{admin_root['id']}")
    missing = actors.call("eve", "GET", "/rest/location/999999")
    assert hidden.status_code == missing.status_code == 404
    # Nor do other routes reveal it: a file route answers as for a missing file.
    file_route = actors.call("eve", "GET", f"/api/filesystem/files/{admin_root['id']}")
    assert file_route.status_code == 404
    change = actors.call("eve", "PUT", f"/rest/location/{listed[0]['id']}", {"folder": str(files)})
    assert change.status_code == 403


def test_a_location_outside_the_operators_roots_is_unusable(actors: Actors, files: Path) -> None:
    import dataclasses

    shared = _location(actors, "old", files / "old")
    _others(actors, shared, readable=True)
    policy = actors.node.store.file_policy
    assert policy is not None
    # The operator narrowed the roots since the location was made.
    actors.node.store.file_policy = dataclasses.replace(
        policy, source_roots=(str(files / "users"),)
    )
    refused = actors.call(
        "eve", "POST", "/rest/import-job", _import("a.csv", "/Connections/old.loc")
    )
    assert refused.status_code == 400 and "does not exist or you may not" in _reason(refused)


def test_a_user_created_over_http_gets_a_private_location(actors: Actors, files: Path) -> None:
    body = {"username": "carol", "password": "c4rol-pw", "roles": ["ANALYST"]}
    made = actors.call("admin", "POST", "/rest/user-management/users", body)
    assert made.status_code == 200, made.text
    assert (files / "users" / "carol").is_dir()
    listed = actors.call("admin", "GET", "/rest/location").json()
    carol = next(item for item in listed if item["path"] == "/Users/carol/files.loc")
    assert carol["owner"] == "carol" and carol["folder"] == str(files / "users" / "carol")
    others = actors.call("admin", "GET", f"/api/filesystem/files/{carol['id']}/permission").json()
    assert others["others"] == {"readable": False, "writable": False, "executable": False}
    refused = actors.call(
        "eve", "POST", "/rest/import-job", _import("x.csv", "/Users/carol/files.loc")
    )
    assert refused.status_code == 400


def test_job_routes_given_a_location_id_answer_like_for_no_job(actors: Actors) -> None:
    listed = actors.call("admin", "GET", "/rest/location").json()
    root = next(item for item in listed if item["path"] == "/Connections/files.loc")
    for user in ("admin", "eve"):
        for method, url in (
            ("POST", f"/api/job-execution/{root['id']}/trigger"),
            ("GET", f"/api/job-execution/{root['id']}/status"),
            ("GET", f"/api/job-execution/{root['uuid']}/status"),
            ("GET", f"/rest/job-executions?configuration={root['id']}"),
            ("GET", f"/rest/import-job/{root['id']}"),
        ):
            answer = actors.call(user, method, url)
            assert answer.status_code in (400, 404), (user, url, answer.text)
            assert "folder" not in answer.text or user == "admin"


# ---------------------------------------------------------------- N6: innermost location decides


def _share_operator_root(actors: Actors) -> None:
    listed = actors.call("admin", "GET", "/rest/location").json()
    root = next(item for item in listed if item["path"] == "/Connections/files.loc")
    _others(actors, int(root["id"]), readable=True, writable=True)


def test_n6_a_shared_root_does_not_open_private_locations(running: Actors, files: Path) -> None:
    _share_operator_root(running)
    bob = files / "users" / "bob"
    (bob / "x.csv").write_text(CSV)
    (files / "users" / "eve" / "x.csv").write_text("name,salary\neve,1\n")
    (files / "shared").mkdir()
    (files / "shared" / "link").symlink_to(bob)
    shared = "/Connections/files.loc"
    _mine(running, files)
    for path, location in (
        ("users/bob/x.csv", shared),
        ("shared/link/x.csv", shared),
        (str(bob / "x.csv"), None),
        (str(files / "shared" / "link" / "x.csv"), None),
    ):
        refused = running.call("eve", "POST", "/rest/import-job", _import(path, location))
        assert refused.status_code == 400, (path, refused.text)
        assert "not inside a location you may read from" in _reason(refused)
        sink = _export({"kind": "csv", "location": location, "path": path}) if location else None
        if sink is not None:
            assert running.call("eve", "POST", "/rest/export-job", sink).status_code == 400
    # A glob over the shared root skips bob's folder and keeps her own.
    made = running.call("eve", "POST", "/rest/import-job", _import("users/*/x.csv", shared, "g"))
    assert made.status_code == 200, made.text
    run = _run(running, "eve", "/Users/eve/g.imp")
    assert run.status is JobStatus.COMPLETED, run.error_message
    assert run.success_count == 1
    for name, pattern in (("b", "users/bob/*.csv"), ("l", "shared/*/x.csv"), ("a", "**/x.csv")):
        made = running.call("eve", "POST", "/rest/import-job", _import(pattern, shared, name))
        assert made.status_code == 200, made.text
        run = _run(running, "eve", f"/Users/eve/{name}.imp")
        if name == "a":
            assert run.status is JobStatus.COMPLETED and run.success_count == 1
        else:
            assert run.status is JobStatus.ERROR and "matches no file" in str(run.error_message)
    # bob himself, and ADMIN, still read it through the shared root.
    body = {
        "path": "/Users/bob/b.imp",
        "source": {"kind": "csv", "location": shared, "path": "users/bob/x.csv"},
    }
    assert running.call("bob", "POST", "/rest/import-job", body).status_code == 200
    assert _run(running, "bob", "/Users/bob/b.imp").status is JobStatus.COMPLETED


def test_n6_the_engine_skips_hidden_locations(tmp_path: Path) -> None:
    from datamill.engine.paths import check_sink_path, expand_source_paths
    from datamill.errors import InvalidInput

    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "x.csv").write_text(CSV)
    (tmp_path / "x.csv").write_text(CSV)
    roots, hidden = (str(tmp_path),), (str(tmp_path / "bob"),)
    assert expand_source_paths(str(tmp_path / "**" / "x.csv"), roots, excluded=hidden) == [
        str(tmp_path / "x.csv")
    ]
    with pytest.raises(InvalidInput, match="does not exist"):
        expand_source_paths(str(tmp_path / "bob" / "x.csv"), roots, excluded=hidden)
    with pytest.raises(InvalidInput, match="does not exist"):
        check_sink_path(str(tmp_path / "bob" / "y.csv"), roots, excluded=hidden)
