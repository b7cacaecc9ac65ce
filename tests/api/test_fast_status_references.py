"""The status fast path answers every reference spelling and every run state as the route does.

Each case asks the app with the fast path and the app without it and
compares status, headers and bytes (`Pair.both`); success cases must have
been answered by the fast path, every error by the route.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from datamill.bootstrap import Node
from datamill.domain.records import User
from datamill.domain.status import JobKind, JobStatus
from datamill.services.sessions import COOKIE_NAME, Sessions
from datamill.store import users as user_rows
from datamill.store.queue import Outcome
from tests.api.test_fast_status import ADMIN, WORKBOOK, Pair, _auth, freeze_clock
from tests.helpers import admin, password_hash

JOB = "/w/My Report+v2.wbk"
PLAIN = "/w/plain job.wbk"
ANN = _auth("ann", "pw-ann")  # owner of JOB and PLAIN
BOB = _auth("bob", "pw-bob")  # in group 'sales', which may read JOB
EVE = _auth("eve", "pw-eve")  # no rights on either
PEEK = _auth("pia", "pw-pia")  # a role without job.read, but owner of PLAIN's twin


@pytest.fixture
def pair(node: Node) -> Iterator[Pair]:
    """Both apps, started."""
    made = Pair(node)
    with made.fast, made.slow:
        yield made


@pytest.fixture
def jobs(node: Node) -> dict[str, str]:
    """JOB and PLAIN owned by ann, JOB readable by group sales; their ids and uuids."""
    node.store.users.create("ann", password_hash("pw-ann"))
    node.store.users.create("bob", password_hash("pw-bob"), groups=("sales",))
    node.store.users.create("eve", password_hash("pw-eve"))
    with node.store.db.write() as conn:
        user_rows.insert_role(conn, "peeker", ["job.define"])
    node.store.users.create("pia", password_hash("pw-pia"), roles=("peeker",))
    job, _ = node.jobs.define_job(JOB, JobKind.WORKBOOK, WORKBOOK, "ann")
    plain, _ = node.jobs.define_job(PLAIN, JobKind.WORKBOOK, WORKBOOK, "ann")
    node.jobs.define_job("/w/pia.wbk", JobKind.WORKBOOK, WORKBOOK, "pia")
    with node.store.db.write() as conn:
        node.store.files.set_group_flags(
            conn, job.id, "sales", readable=True, writable=False, executable=False
        )
    return {"id": str(job.id), "uuid": job.uuid, "plain": str(plain.id)}


def _url(reference: str) -> str:
    return f"/api/job-execution/{reference}/status"


def _spellings(ids: dict[str, str]) -> list[str]:
    """Every way a client may name JOB (a real '+' in its name) or PLAIN (a space)."""
    return [
        _url(ids["id"]),
        _url(ids["uuid"]),
        _url(ids["uuid"].upper()),
        _url("w/My Report+v2.wbk"),
        _url("w/My%20Report+v2.wbk"),
        _url("w%2FMy%20Report%2Bv2.wbk"),
        _url("%2Fw%2FMy%20Report+v2.wbk"),
        "http://testserver//api/job-execution//w//My%20Report+v2.wbk/status/",
        _url("w/plain+job.wbk"),
        _url("w/plain%20job.wbk"),
        _url("w%2Fplain+job.wbk"),
        _url(ids["plain"]),
    ]


def _run_to(node: Node, reference: str, status: JobStatus) -> None:
    user = admin(node)
    node.jobs.trigger(reference, user)
    claimed = node.store.queue.claim_next_execution("w1")
    assert claimed is not None
    node.store.queue.finish(claimed, "w1", Outcome(status, success_count=1))


def test_every_spelling_and_state_is_answered_fast_and_alike(
    pair: Pair, node: Node, jobs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {"_NONE", "COMPLETED", "ERROR", "QUEUED", "RUNNING"}
    seen: set[str] = set()
    for state in ("never", "COMPLETED", "ERROR", "QUEUED", "RUNNING"):
        for reference in (jobs["id"], jobs["plain"]):
            if state in ("COMPLETED", "ERROR"):
                _run_to(node, reference, JobStatus(state))
            elif state == "QUEUED":
                node.jobs.trigger(reference, admin(node))
        if state == "RUNNING":
            _start_with_progress(node, monkeypatch)
        for url in _spellings(jobs):
            for headers in (ANN, ADMIN):
                answered, (code, _, _, text) = pair.both(url, headers)
                # A QUEUED run is the route's, which adds its queue position (issue 15).
                assert answered is (state != "QUEUED") and code == 200, (url, text)
                seen.add(text.split('"job-status": "')[1].split('"')[0])
        answered, (code, _, _, text) = pair.both(_url(jobs["id"]), BOB)
        assert answered is (state != "QUEUED") and code == 200
    assert seen == expected


def _start_with_progress(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claim the queued runs, report progress, and fix the clock both paths read."""
    for _ in range(2):
        claimed = node.store.queue.claim_next_execution("w1")
        assert claimed is not None and claimed.started_at is not None
        node.store.queue.report_progress(claimed.id, 0.25, [])
    frozen = claimed.started_at + dt.timedelta(seconds=90)
    freeze_clock(monkeypatch, frozen)


def test_running_estimate_uses_history_and_progress_alike(
    pair: Pair, node: Node, jobs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        _run_to(node, jobs["id"], JobStatus.COMPLETED)
    node.jobs.trigger(jobs["id"], admin(node))
    claimed = node.store.queue.claim_next_execution("w1")
    assert claimed is not None and claimed.started_at is not None
    for progress, seconds in ((None, 0.5), (0.0, 3), (0.4, 200), (0.999, 4000)):
        if progress is not None:
            node.store.queue.report_progress(claimed.id, progress, [])
        frozen = claimed.started_at + dt.timedelta(seconds=seconds)
        freeze_clock(monkeypatch, frozen)
        answered, (code, _, _, text) = pair.both(_url(jobs["uuid"]), BOB)
        assert answered and code == 200 and '"job-status": "RUNNING"' in text
        assert f'"job-progress": "{int((progress or 0) * 100)}"' in text
    # By pace alone after 4000 s at 99.9 %: 4 s left, the history says less.
    assert '"estimate-time": "' in text


def test_errors_are_the_routes_and_unreadable_looks_unknown(
    pair: Pair, node: Node, jobs: dict[str, str]
) -> None:
    with node.store.db.write() as conn:
        root = node.store.files.find(conn, "/w")
        assert root is not None
        node.store.files.create_folder(conn, root, "folder", "ann")
        # A group row that lets sales run PLAIN but not read it.
        node.store.files.set_group_flags(
            conn, int(jobs["plain"]), "sales", readable=False, writable=True, executable=True
        )
    cases = [
        (_url(jobs["id"]), EVE, 404),  # unreadable
        (_url(jobs["plain"]), BOB, 404),  # unreadable: the group may not read
        (_url("w/My Report+v2.wbk"), EVE, 404),
        (_url("999999"), EVE, 404),  # unknown
        (_url("w/missing.wbk"), EVE, 404),
        (_url("999999"), ADMIN, 404),
        (_url("99999999999"), ADMIN, 404),  # malformed: larger than any id
        (_url("w/%00x.wbk"), ADMIN, 404),  # malformed: NUL
        (_url("w/../x.wbk"), ADMIN, 404),
        (_url("w/folder"), ANN, 400),  # not a job
        (_url("w/pia.wbk"), PEEK, 403),  # owner, but no job.read
        (_url(jobs["id"]), PEEK, 403),
        (_url(jobs["id"]), _auth("ann", "wrong"), 401),
        (_url(jobs["id"]), _auth("nobody", "x"), 401),
        (_url(jobs["id"]), {"Authorization": "Bearer x"}, 401),
        (_url(jobs["id"]), {}, 401),
    ]
    bodies: dict[tuple[str, int], str] = {}
    for url, headers, code in cases:
        answered, seen = pair.both(url, headers)
        assert not answered and seen[0] == code, (url, headers, seen)
        bodies[(url, code)] = seen[3]
    assert bodies[(_url(jobs["id"]), 404)] == bodies[(_url("999999"), 404)].replace(
        "999999", jobs["id"]
    )


def test_role_with_job_read_is_left_to_the_route(pair: Pair, node: Node) -> None:
    # Only the built-in roles certainly grant job.read; others are the route's to check.
    with node.store.db.write() as conn:
        user_rows.insert_role(conn, "reader", ["JOB_HISTORY_ACCESS"])
    node.store.users.create("rex", password_hash("pw-rex"), roles=("reader",))
    entry, _ = node.jobs.define_job("/w/rex.wbk", JobKind.WORKBOOK, WORKBOOK, "rex")
    answered, seen = pair.both(_url(str(entry.id)), _auth("rex", "pw-rex"))
    assert not answered and seen[0] == 200 and '"job-status": "_NONE"' in seen[3]


def _cookie(sessions: Sessions, user: User) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={sessions.issue(user)}"}


def test_session_cookies_are_answered_fast_until_they_end(
    pair: Pair, node: Node, jobs: dict[str, str]
) -> None:
    sessions: Sessions = pair.fast.app.state.sessions  # type: ignore[attr-defined]
    with node.store.db.read() as conn:
        bob, eve = node.store.users.get(conn, "bob"), node.store.users.get(conn, "eve")
    assert bob is not None and eve is not None
    bobs = _cookie(sessions, bob)
    answered, seen = pair.both(_url(jobs["uuid"]), bobs)
    assert answered and seen[0] == 200
    # Basic credentials win over a cookie, as on the route.
    answered, seen = pair.both(_url(jobs["uuid"]), {**bobs, **_auth("bob", "wrong")})
    assert not answered and seen[0] == 401
    answered, seen = pair.both(_url(jobs["uuid"]), _cookie(sessions, eve))
    assert not answered and seen[0] == 404
    answered, seen = pair.both(_url(jobs["uuid"]), {"Cookie": f"{COOKIE_NAME}=forged.x"})
    assert not answered and seen[0] == 401
    # A logout (a new epoch) and a new password end the cookie at once.
    with node.store.db.write() as conn:
        user_rows.end_sessions(conn, "bob")
    answered, seen = pair.both(_url(jobs["uuid"]), bobs)
    assert not answered and seen[0] == 401
    with node.store.db.read() as conn:
        bob = node.store.users.get(conn, "bob")
    assert bob is not None
    fresh = _cookie(sessions, bob)
    assert pair.both(_url(jobs["uuid"]), fresh)[0]
    node.store.users.set_password_hash("bob", password_hash("other"))
    answered, seen = pair.both(_url(jobs["uuid"]), fresh)
    assert not answered and seen[0] == 401
