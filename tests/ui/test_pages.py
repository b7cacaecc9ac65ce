"""Every UI page and action, as the owner, a reader, a user without rights and ADMIN.

What a user may not read is a 404 page that says no more than one about
nothing; the Trigger and Stop buttons show only to those who may run the job,
and the actions behind them refuse the others whatever the page showed.
"""

from __future__ import annotations

import pytest

from datamill.bootstrap import Node
from datamill.worker.worker import Worker
from tests.helpers import wait_terminal
from tests.ui.conftest import IMPORT, WORKBOOK, World

MISSING = 999_999


def main(page: str) -> str:
    """The page's own content, without the header every page shares."""
    return page.split("<main", 1)[1]


def shows_not_found(world: World, actor: str, url: str) -> None:
    """A 404 page, the same as for a file id that does not exist, naming nothing of bob's."""
    answer = world.get(actor, url)
    assert answer.status_code == 404, answer.text
    assert "orders.imp" not in answer.text and "totals.wbk" not in answer.text
    assert "Not found" in answer.text


@pytest.mark.parametrize("actor", ["bob", "carol", "admin"])
def test_files_lists_bobs_jobs_to_those_who_may_read_them(world: World, actor: str) -> None:
    page = world.get(actor, "/ui/files?folder=/Users/bob")
    assert page.status_code == 200, page.text
    assert f'href="/ui/jobs/{world.import_id}"' in page.text
    assert "orders.imp" in page.text and "totals.wbk" in page.text
    assert "never run" in page.text  # the last run column, before any run


def test_files_hides_bobs_folder_and_jobs_from_eve(world: World) -> None:
    shows_not_found(world, "eve", "/ui/files?folder=/Users/bob")
    nothing = world.get("eve", "/ui/files?folder=/Users/nobody")
    assert nothing.status_code == 404
    users = world.get("eve", "/ui/files?folder=/Users")
    assert users.status_code == 200
    assert "/ui/files?folder=/Users/bob" not in users.text


@pytest.mark.parametrize(("actor", "buttons"), [("bob", True), ("carol", False), ("admin", True)])
def test_job_page_shows_trigger_only_to_those_who_may_run(
    world: World, actor: str, buttons: bool
) -> None:
    page = world.get(actor, f"/ui/jobs/{world.workbook_id}")
    assert page.status_code == 200, page.text
    assert "totals.wbk" in page.text and "&#34;min_amount&#34;" in page.text  # the definition
    assert "orders" in page.text  # the upstream job in the graph
    assert (f'action="/ui/jobs/{world.workbook_id}/trigger"' in page.text) is buttons
    assert ('name="var.min_amount"' in page.text) is buttons


def test_job_page_and_status_are_not_found_for_eve(world: World) -> None:
    shows_not_found(world, "eve", f"/ui/jobs/{world.import_id}")
    shows_not_found(world, "eve", f"/ui/jobs/{world.import_id}/status")
    shows_not_found(world, "eve", f"/ui/jobs/{MISSING}")
    assert main(world.get("eve", f"/ui/jobs/{world.import_id}").text) == main(
        world.get("eve", f"/ui/jobs/{MISSING}").text
    )


@pytest.mark.parametrize("actor", ["bob", "admin"])
def test_trigger_and_stop_work_for_those_who_may_run(world: World, actor: str) -> None:
    triggered = world.post(actor, f"/ui/jobs/{world.import_id}/trigger")
    assert triggered.status_code == 303, triggered.text
    run_page = triggered.headers["location"]
    assert run_page.startswith("/ui/runs/")
    status = world.get(actor, f"/ui/jobs/{world.import_id}/status")
    assert 'data-status="QUEUED"' in status.text
    assert f'action="/ui/jobs/{world.import_id}/stop"' in status.text  # the Stop button
    stopped = world.post(actor, f"/ui/jobs/{world.import_id}/stop")
    assert stopped.status_code == 303, stopped.text
    assert 'data-status="CANCELED"' in world.get(actor, run_page).text


def test_carol_may_neither_trigger_nor_stop(world: World) -> None:
    refused = world.post("carol", f"/ui/jobs/{world.import_id}/trigger")
    assert refused.status_code == 403, refused.text
    assert "not allowed to run" in refused.text
    world.post("bob", f"/ui/jobs/{world.import_id}/trigger")
    status = world.get("carol", f"/ui/jobs/{world.import_id}/status")
    assert 'data-status="QUEUED"' in status.text
    assert "/stop" not in status.text
    assert world.post("carol", f"/ui/jobs/{world.import_id}/stop").status_code == 403
    assert 'data-status="QUEUED"' in world.get("bob", f"/ui/jobs/{world.import_id}/status").text


def test_eve_may_neither_trigger_nor_stop_and_learns_nothing(world: World) -> None:
    for action in ("trigger", "stop"):
        answer = world.post("eve", f"/ui/jobs/{world.import_id}/{action}")
        missing = world.post("eve", f"/ui/jobs/{MISSING}/{action}")
        assert answer.status_code == missing.status_code == 404
        # The page's main part (the header carries the session's token, of random digits).
        assert main(answer.text).replace(str(world.import_id), "") == main(missing.text).replace(
            str(MISSING), ""
        )
    with world.node.store.db.read() as conn:
        assert world.node.store.jobs.list_all(conn)  # still there, never run
    assert "Never run." in world.get("bob", f"/ui/jobs/{world.import_id}/status").text


def test_trigger_form_passes_the_variables(world: World) -> None:
    answer = world.post("bob", f"/ui/jobs/{world.workbook_id}/trigger", {"var.min_amount": "42"})
    assert answer.status_code == 303, answer.text
    assert '{"min_amount": "42"}' in world.get("bob", answer.headers["location"]).text


@pytest.mark.parametrize("actor", ["bob", "carol", "admin"])
def test_running_now_lists_runs_to_their_readers(world: World, actor: str) -> None:
    world.post("bob", f"/ui/jobs/{world.import_id}/trigger")
    for url in ("/ui/running", "/ui/running/table"):
        page = world.get(actor, url)
        assert IMPORT in page.text, page.text
        assert 'class="status queued"' in page.text
        assert "<td>1</td>" in page.text  # first in the queue


def test_running_now_hides_bobs_runs_from_eve(world: World) -> None:
    world.post("bob", f"/ui/jobs/{world.import_id}/trigger")
    page = world.get("eve", "/ui/running")
    assert page.status_code == 200
    assert IMPORT not in page.text and "Nothing is queued" in page.text


@pytest.mark.parametrize(("actor", "offered"), [("bob", True), ("carol", False), ("eve", False)])
def test_plan_offers_only_jobs_the_user_may_run(world: World, actor: str, offered: bool) -> None:
    page = world.get(actor, "/ui/plan")
    assert page.status_code == 200
    assert (f'value="{world.import_id}"' in page.text) is offered
    assert (IMPORT in page.text) is offered


def test_plan_is_offered_to_admin_and_runs_for_bob(world: World) -> None:
    assert f'value="{world.import_id}"' in world.get("admin", "/ui/plan").text
    answer = world.post(
        "bob", "/ui/plan", {"job": str(world.import_id), "variables": "min_amount=5"}
    )
    assert answer.status_code == 303, answer.text
    progress = world.get("bob", answer.headers["location"])
    assert IMPORT in progress.text and WORKBOOK not in progress.text  # not data-driven
    assert 'data-status="QUEUED"' in progress.text
    hidden = world.get("eve", answer.headers["location"])
    assert hidden.status_code == 200 and IMPORT not in hidden.text


def test_plan_refuses_carol_and_eve(world: World) -> None:
    carol = world.post("carol", "/ui/plan", {"job": str(world.import_id)})
    assert carol.status_code == 403 and "not allowed to run" in carol.text
    eve = world.post("eve", "/ui/plan", {"job": str(world.import_id)})
    assert eve.status_code == 404 and IMPORT not in eve.text
    bad = world.post("bob", "/ui/plan", {"job": str(world.import_id), "variables": "no equals"})
    assert bad.status_code == 400 and "name=value" in bad.text


@pytest.fixture
def finished(world: World, worker: Worker) -> tuple[World, int]:
    """bob's import has run to its end."""
    answer = world.post("bob", f"/ui/jobs/{world.import_id}/trigger")
    execution_id = int(answer.headers["location"].rsplit("/", 1)[1])
    wait_terminal(world.node, execution_id)
    return world, execution_id


@pytest.mark.parametrize("actor", ["bob", "carol", "admin"])
def test_run_page_shows_counters_log_lineage_and_data(
    finished: tuple[World, int], actor: str
) -> None:
    world, execution_id = finished
    page = world.get(actor, f"/ui/runs/{execution_id}")
    assert page.status_code == 200, page.text
    assert 'data-status="COMPLETED"' in page.text
    assert "<dt>Records</dt><dd>20</dd>" in page.text
    assert "<strong>finished</strong>" in page.text  # the log
    assert "Lineage" in page.text and "20 records" in page.text
    assert '<th scope="col">order_id</th>' in page.text  # the data preview
    assert "/rest/data/import-job/" in page.text
    live = world.get(actor, f"/ui/runs/{execution_id}/live?polling=1")
    assert live.headers.get("hx-refresh") == "true"  # ended: the page reloads whole


def test_run_page_is_not_found_for_eve(finished: tuple[World, int]) -> None:
    world, execution_id = finished
    for url in (f"/ui/runs/{execution_id}", f"/ui/runs/{execution_id}/live"):
        answer = world.get("eve", url)
        missing = world.get("eve", url.replace(str(execution_id), str(MISSING)))
        assert answer.status_code == missing.status_code == 404
        assert IMPORT not in answer.text


def test_job_page_history_and_chart_after_a_run(finished: tuple[World, int], node: Node) -> None:
    world, execution_id = finished
    page = world.get("carol", f"/ui/jobs/{world.import_id}")
    assert f'href="/ui/runs/{execution_id}"' in page.text
    assert 'class="bar ok"' in page.text  # the chart's bar for the completed run
    assert "Older" not in page.text  # one page of history
