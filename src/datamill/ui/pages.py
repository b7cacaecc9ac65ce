"""The pages of the web UI (GET): files, job, run, running now, plan progress.

Every page needs a signed-in user (ui/auth.py) and reads through the
services with that user, so what a user may not read is not shown, and a
page about it answers like one about nothing (404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from datamill.api.types import EntityId
from datamill.domain.definitions import MAX_REFERENCE_LENGTH
from datamill.domain.records import User
from datamill.errors import InvalidInput
from datamill.services.artifacts import ArtifactService
from datamill.services.jobs import JobService
from datamill.store.executions import MAX_START
from datamill.ui import runview, views
from datamill.ui.auth import page_user
from datamill.ui.rendering import PageRoute, render
from datamill.ui.svg import dependency_graph, run_chart

router = APIRouter(route_class=PageRoute)
PageUser = Annotated[User, Depends(page_user)]
MAX_PLAN_RUNS = 200


def _jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


@router.get("/", include_in_schema=False)
def home() -> Response:
    """The UI's front door: the file browser."""
    return RedirectResponse("/ui/files", status_code=303)


@router.get("/ui", include_in_schema=False)
def ui_home() -> Response:
    """The UI's own root: the file browser."""
    return RedirectResponse("/ui/files", status_code=303)


@router.get("/ui/files", include_in_schema=False)
def files(
    request: Request,
    user: PageUser,
    folder: Annotated[str, Query(max_length=MAX_REFERENCE_LENGTH)] = "/",
) -> Response:
    """A folder: its subfolders and job files with kind, owner and last run."""
    page = views.folder_page(_jobs(request), folder or "/", user)
    return render(request, "files.html", {"page": page})


@router.get("/ui/jobs/{file_id}", include_in_schema=False)
def job(
    request: Request,
    file_id: EntityId,
    user: PageUser,
    start: Annotated[int, Query(ge=0, lt=MAX_START)] = 0,
) -> Response:
    """A job: definition, live status, buttons, trigger form, history, chart, graph."""
    artifacts: ArtifactService = request.app.state.artifacts
    page = views.job_page(_jobs(request), artifacts, str(file_id), user, start)
    return render(
        request,
        "job.html",
        {
            "page": page,
            "live": page.live,
            "entry": page.entry,
            "may_run": page.may_run,
            "chart": run_chart(page.chart),
            "graph": dependency_graph(page.graph, page.entry.name),
            "variables": page.config.definition.get("variables") or {},
            "page_size": views.HISTORY_PAGE,
        },
    )


@router.get("/ui/jobs/{file_id}/status", include_in_schema=False)
def job_status(
    request: Request, file_id: EntityId, user: PageUser, polling: bool = False
) -> Response:
    """The job's status box alone: what the job page polls while a run is active."""
    entry, _config, live, may_run = views.job_status(_jobs(request), str(file_id), user)
    if polling and not live.active:
        return _reload()
    return render(request, "_job_status.html", {"entry": entry, "live": live, "may_run": may_run})


@router.get("/ui/runs/{execution_id}", include_in_schema=False)
def run(request: Request, execution_id: EntityId, user: PageUser) -> Response:
    """A run: counters, failure, warnings, log, lineage and data previews."""
    page = runview.run_page(_jobs(request), execution_id, user)
    return render(request, "run.html", {"page": page})


@router.get("/ui/runs/{execution_id}/live", include_in_schema=False)
def run_live(
    request: Request, execution_id: EntityId, user: PageUser, polling: bool = False
) -> Response:
    """The run's status, counters and log alone: what the run page polls while it runs."""
    page = runview.run_page(_jobs(request), execution_id, user, full=False)
    if polling and not page.active:
        return _reload()
    return render(request, "_run_live.html", {"page": page})


def _reload() -> Response:
    """Tell a polling page its run has ended: it reloads whole (history, lineage, data)."""
    return Response(status_code=200, headers={"HX-Refresh": "true"})


@router.get("/ui/running", include_in_schema=False)
def running(request: Request, user: PageUser) -> Response:
    """Queued, waiting and running jobs, updated live."""
    return render(request, "running.html", {"runs": views.running_now(_jobs(request), user)})


@router.get("/ui/running/table", include_in_schema=False)
def running_table(request: Request, user: PageUser) -> Response:
    """The running-now table alone, polled."""
    runs = views.running_now(_jobs(request), user)
    return render(request, "_running_table.html", {"runs": runs})


@router.get("/ui/plan", include_in_schema=False)
async def plan(request: Request, user: PageUser) -> Response:
    """Pick jobs and variables for a sequential plan."""
    choices = await run_in_threadpool(views.plan_choices, _jobs(request), user)
    return render(request, "plan.html", {"choices": choices})


def _execution_ids(text: str) -> list[int]:
    parts = [p for p in text.split(",") if p]
    if len(parts) > MAX_PLAN_RUNS or not all(p.isdigit() and len(p) < 16 for p in parts):
        raise InvalidInput("runs must be a comma-separated list of run ids")
    return [int(p) for p in parts]


@router.get("/ui/plan/runs", include_in_schema=False)
def plan_runs(
    request: Request,
    user: PageUser,
    runs: Annotated[str, Query(max_length=4_000)] = "",
    table: bool = False,
) -> Response:
    """A plan's runs step by step (the whole page, or with `table` the polled table)."""
    ids = _execution_ids(runs)
    shown = views.plan_runs(_jobs(request), ids, user)
    active = any(not e.status.is_terminal for e, _ in shown)
    context = {"shown": shown, "active": active, "runs": runs}
    return render(request, "_plan_table.html" if table else "plan_runs.html", context)
