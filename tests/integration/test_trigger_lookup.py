"""The trigger's one-statement lookup (file and configuration id) answers as the two reads did.

Run on SQLite and PostgreSQL (the `node` fixture).
"""

from __future__ import annotations

from datamill.bootstrap import Node
from datamill.domain.records import User
from datamill.domain.status import JobKind
from datamill.errors import DatamillError, Forbidden, InvalidInput, NotFound
from datamill.services.permissions import Access
from datamill.store.jobs import JobKey
from tests.helpers import password_hash

CSV_IMPORT = {"source": {"kind": "csv", "path": "/tmp/x.csv"}}


def _user(node: Node, name: str) -> User:
    with node.store.db.read() as conn:
        user = node.store.users.get(conn, name)
    assert user is not None
    return user


def test_a_job_is_found_with_its_configuration_id_by_id_uuid_and_path(node: Node) -> None:
    entry, config = node.jobs.define_job(
        "/Data/ImportJobs/b c.imp", JobKind.IMPORT, CSV_IMPORT, "admin"
    )
    with node.store.db.read() as conn:
        for reference in (str(entry.id), entry.uuid, entry.uuid.upper(), entry.path):
            found = node.store.jobs.find_with_key(conn, reference)
            assert found is not None
            assert found[0] == node.store.files.find(conn, reference)
            assert found[1] == JobKey(config.id, entry.id)
        folder = node.store.jobs.find_with_key(conn, "/Data/ImportJobs")
        assert folder is not None and folder[0].is_folder and folder[1] is None
        for missing in ("/Data/ImportJobs/nope.imp", "99999999", "a\x00b", str(10**12)):
            assert node.store.jobs.find_with_key(conn, missing) is None


def _answer(node: Node, reference: str, user: User, resolve: str) -> object:
    """What resolve_job or resolve_job_key answers: the ids, or the error's class and message."""
    try:
        with node.store.db.read() as conn:
            entry, config = getattr(node.jobs, resolve)(conn, reference, user, Access.EXECUTE)
    except DatamillError as error:
        return type(error), error.message
    return entry.id, config.id, config.file_id


def test_the_triggers_resolve_answers_every_case_as_resolve_job_does(node: Node) -> None:
    for name in ("bob", "eve", "ray"):
        node.store.users.create(name, password_hash("pw"), roles=("ANALYST",))
    entry, config = node.jobs.define_job(
        "/Data/ImportJobs/a b.imp", JobKind.IMPORT, CSV_IMPORT, "bob"
    )
    plus, _ = node.jobs.define_job("/Data/ImportJobs/x+y.imp", JobKind.IMPORT, CSV_IMPORT, "bob")
    private, _ = node.jobs.define_job(
        "/Data/ImportJobs/private.imp", JobKind.IMPORT, CSV_IMPORT, "bob"
    )
    with node.store.db.write() as conn:
        folder = node.store.files.ensure_folder(conn, "/Data/ImportJobs/bobs", "bob")
        node.store.files.set_others_flags(
            conn, folder, readable=False, writable=False, executable=False
        )
        # Others (ray, eve) may read both jobs but run neither.
        for job in (entry, plus):
            node.store.files.set_others_flags(
                conn, job.id, readable=True, writable=False, executable=False
            )
    admin, bob, eve, ray = (_user(node, n) for n in ("admin", "bob", "eve", "ray"))
    assert _answer(node, private.path, bob, "resolve_job_key")[0] == private.id  # type: ignore[index]
    cases = [
        (entry.path, bob),
        ("/Data/ImportJobs/a+b.imp", bob),  # '+' for the space
        ("/Data/ImportJobs/x+y.imp", admin),  # a real '+' wins
        (str(entry.id), admin),
        (entry.uuid, bob),
        (private.path, eve),  # unreadable: as if missing
        ("/Data/ImportJobs", admin),  # a folder: not a job
        ("/Data/ImportJobs/none.imp", bob),
        (entry.path, ray),  # readable, not runnable
        ("", bob),
        ("/Data/ImportJobs/bobs", eve),  # an unreadable folder: as if missing, not "not a job"
        ("/Data/ImportJobs/bobs", bob),
    ]
    answers = [_answer(node, ref, user, "resolve_job_key") for ref, user in cases]
    assert answers == [_answer(node, ref, user, "resolve_job") for ref, user in cases]
    assert answers[0] == answers[1] == answers[3] == answers[4] == (entry.id, config.id, entry.id)
    assert answers[2][0] == plus.id  # type: ignore[index]
    assert answers[5] == answers[7] == (NotFound, NotFound().message)
    not_a_job = "/Data/ImportJobs is not a job (import job, workbook or export job)"
    assert answers[6] == (InvalidInput, not_a_job)
    assert answers[10] == (NotFound, NotFound().message)
    assert answers[11] == (InvalidInput, f"/Data/ImportJobs/bobs {not_a_job.split(' ', 1)[1]}")
    assert answers[8] == (Forbidden, f"you are not allowed to run {entry.path}")
