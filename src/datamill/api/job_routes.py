"""The job commands of the Datameer API (spec §4): status, trigger, stop, details, lists."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from datamill.api.bodies import lenient_json_body
from datamill.api.fast_status import status_body
from datamill.api.idempotent import answer_once
from datamill.api.security import current_user
from datamill.api.types import MAX_ID, CurrentUser, EntityId
from datamill.api.waiting import (
    Wait,
    WaitingCaller,
    answered_after_wait,
    applied,
    requested_wait,
    wait_slot,
    waited_status,
)
from datamill.api.wire import Clock, PrettyJSONResponse, epoch_millis, v1_status
from datamill.domain.definitions import (
    MAX_REFERENCE_LENGTH,
    MAX_VALUE_LENGTH,
    MAX_VARIABLES,
    check_whole_number,
)
from datamill.domain.records import Execution, FileEntry, User
from datamill.domain.status import JobKind, JobStatus
from datamill.errors import InvalidInput
from datamill.services import plans, runs
from datamill.services.jobs import JobService, StatusView
from datamill.services.permissions import Access, Capability, has_access, require_capability
from datamill.services.system import require_admin_role
from datamill.services.waiting import WaitSlot
from datamill.store import executions as ex
from datamill.store.triggers import schedule_state

router = APIRouter()

# Bounds on a sequential-trigger body (docs/security.md); the variable bounds
# are those of a workbook definition.
MAX_PLAN_FILES = 10_000
MAX_VARIABLE_NAME_LENGTH = 128


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


@router.get("/api/job-execution/list-running")
@router.get("/rest/jobs/list-running")
def list_running(request: Request, user: CurrentUser) -> Response:
    """Every active execution the caller may read."""
    return PrettyJSONResponse([item for item, _, _ in _active_items(request, user)])


@router.get("/admin/system-overview/runningJobs")
def running_jobs_overview(request: Request, user: CurrentUser) -> Response:
    """Datameer's admin page: every running job, then every queued or waiting one (ADMIN only).

    Each item holds the list-running members and who started it, how, and how far it got.
    """
    require_admin_role(user, "the system overview")
    running: list[dict[str, Any]] = []
    queued: list[dict[str, Any]] = []
    for item, execution, entry in _active_items(request, user):
        is_running = execution.status is JobStatus.RUNNING
        item["jobType"] = entry.kind.value if entry.kind is not None else None
        item["user"] = execution.triggered_by
        item["triggerType"] = execution.trigger_type.value
        item["progress"] = int((execution.progress or 0.0) * 100) if is_running else None
        (running if is_running else queued).append(item)
    return PrettyJSONResponse({"runningJobs": running, "queuedJobs": queued})


def _active_items(
    request: Request, user: User
) -> list[tuple[dict[str, Any], Execution, FileEntry]]:
    """The list-running item of every active execution the caller may read, oldest first."""
    service = _service(request)
    with service.store.db.read() as conn:
        require_capability(conn, user, Capability.JOB_READ)
        active = ex.active_executions(conn)
        entries = service.store.files.get_many(conn, (e.file_id for e in active))
        visible = []
        for execution in active:
            entry = entries.get(execution.file_id)
            if entry is not None and has_access(conn, user, entry, Access.READ):
                visible.append((execution, entry))
        running = [e for e, _ in visible if e.status is JobStatus.RUNNING]
        remaining = service.remaining_many(conn, running)
        # Counted among all active runs: a position names none of them.
        spots = service.queue_spots(conn, active)
    items = []
    for execution, entry in visible:
        item = {
            "jobStatus": execution.status.value,
            "fileName": entry.name.rsplit(".", 1)[0],
            "jobName": entry.name,
            "fileId": entry.id,
            "uuid": entry.uuid,
            "creationDate": epoch_millis(execution.created_at),
            "jobExecutionId": execution.id,
            "dapJobConfigurationId": execution.job_configuration_id,
            "estimatedTime": int((remaining.get(execution.id) or 0.0) * 1000),
            "startTime": epoch_millis(execution.started_at),
        }
        spot = spots.get(execution.id)
        if spot is not None:
            item["queuePosition"] = spot.position
            item["expectedStartTime"] = epoch_millis(spot.expected_start)
        items.append((item, execution, entry))
    return items


@router.get("/api/job-execution/{reference:path}/status")
async def job_status(reference: str, request: Request, user: WaitingCaller) -> Response:
    """Status of the newest execution of a job file (v2); with `wait`, once that run ended."""
    # api/fast_status.py answers most of these (those without wait) before they get here.
    view, wait = await waited_status(request, reference, user)
    return applied(PrettyJSONResponse(_status_document(_clock(request), view)), wait)


def _status_document(clock: Clock, view: StatusView) -> dict[str, Any]:
    execution = view.execution
    if execution is None:
        return status_body(clock, view.file.id, None, None, None, None)
    body = status_body(
        clock,
        view.file.id,
        execution.id,
        execution.status,
        execution.started_at,
        execution.finished_at,
        remaining=view.remaining_seconds,
        progress=execution.progress,
    )
    if view.queue is not None:
        # Datamill's members for a run not started yet (docs/retried-triggers-and-queue.md).
        body["queue-position"] = view.queue.position
        body["expected-start-time"] = clock.datameer(view.queue.expected_start)
    return body


@router.get("/api/job-execution/{reference:path}/schedule")
def job_schedule(reference: str, request: Request, user: CurrentUser) -> Response:
    """How a job runs by itself: its mode, cron, next run, and why a schedule is disabled.

    Datamill's own route (Datameer has none): a schedule whose cron has no
    further date is disabled by the scheduler, and this says so.
    """
    service = _service(request)
    with service.store.db.read() as conn:
        entry, config = service.resolve_job(conn, reference, user, Access.READ)
        state = schedule_state(conn, config.id)
    body: dict[str, Any] = {
        "status": "success",
        "file-id": entry.id,
        "mode": state.mode,
        "cron": state.cron,
        "next-run": _clock(request).datameer(state.next_fire_at),
        "enabled": state.mode == "SCHEDULED" and state.next_fire_at is not None,
    }
    reason = state.disabled_reason
    if reason is not None:
        body["reason"] = reason
    return PrettyJSONResponse(body)


@router.post("/api/job-execution/{reference:path}/trigger")
async def trigger(reference: str, request: Request) -> Response:
    """Queue a run of a job file."""
    # Sign-in and trigger in one trip to the thread pool, not one each (a
    # sync CurrentUser dependency takes its own): the trigger is the call
    # scripts make in bulk, and the hops cost more CPU than the trigger.
    # api/fast_trigger.py answers plain triggers (no key, no wait) with
    # trigger_as_caller and triggered before routing.
    # The caller is known only in the thread: the slot is taken there, and
    # given back here however the request ends.
    with wait_slot(request) as slot:
        answer, wait, user = await run_in_threadpool(_trigger_as_caller, request, reference, slot)
        return await answered_after_wait(request, answer, wait, user, _runs_of_one, "job-status")


def trigger_as_caller(request: Request, reference: str) -> Execution:
    """Sign the caller in and queue a run of the job as the caller (no key, no wait)."""
    return _service(request).trigger(reference, current_user(request))


def triggered(execution: Execution) -> Response:
    """The answer to a trigger that queued `execution`."""
    return PrettyJSONResponse(_triggered(execution))


def _trigger_as_caller(
    request: Request, reference: str, slot: WaitSlot
) -> tuple[Response, Wait | None, User]:
    user = current_user(request)
    # Checked before the run starts: a bad wait, or one over the caller's cap, starts nothing.
    wait = requested_wait(request)
    if wait is not None:
        slot.take(user.name)
    answer = answer_once(
        request,
        user,
        ("trigger", reference),
        _triggered,
        lambda once: _service(request).trigger(reference, user, once=once),
    )
    return answer, wait, user


def _runs_of_one(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [body]


def _triggered(execution: Execution) -> dict[str, Any]:
    return {
        "status": "success",
        "job-execution-id": execution.id,
        "job-execution-user": execution.triggered_by,
        "job-execution-trigger": execution.trigger_type.value,
    }


@router.post("/api/job-execution/{reference:path}/stop")
def stop(reference: str, request: Request, user: CurrentUser) -> Response:
    """Stop the active run of a job file; an empty 200 once it no longer runs."""
    _service(request).stop(reference, user)
    return Response(status_code=200)


@router.get("/rest/job-execution/job-details/{execution_id}")
def job_details(execution_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Times, status, counts and counters of one execution; why it failed and what it dropped."""
    report = runs.run_report(_service(request), execution_id, user)
    execution, entry = report.execution, report.entry
    clock = _clock(request)
    return PrettyJSONResponse(
        {
            "startTime": clock.datameer(execution.started_at),
            "stopTime": clock.datameer(execution.finished_at),
            "jobStatus": execution.status.value,
            "jobConfigurationId": execution.job_configuration_id,
            "file": {"id": entry.id, "uuid": entry.uuid},
            "successCount": execution.success_count,
            "failureCount": execution.failure_count,
            "counters": _counters(execution, entry.kind),
            # Datamill's members (docs/decisions.md, "Run logs and lineage").
            "failure": runs.failure(report),
            "warnings": runs.warnings(report),
            # How often a worker started the run: more than 1 after retries (docs/jobs.md).
            "attempts": execution.attempts,
        }
    )


def _counters(execution: Execution, kind: JobKind | None) -> dict[str, int]:
    # Every run but a failed one names its kind's counters (0 until known), so a
    # client tells an import from an export by them; an ERROR run keeps what it
    # stored, possibly {} as Datameer's do (spec §4.3).
    if execution.status is JobStatus.ERROR or kind is None:
        return execution.counters
    return {**dict.fromkeys(kind.counter_names, 0), **execution.counters}


@router.get("/rest/job-configuration/job-history/{config_id}")
def job_history(
    config_id: EntityId,
    request: Request,
    user: CurrentUser,
    # An offset past any table's size, but one the database can still bind.
    start: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    length: Annotated[int, Query(ge=0, le=10000)] = 10,
) -> Response:
    """A page of a configuration's executions, newest first."""
    page = _service(request).history(config_id, user, start, length)
    # An older route: the warning status in Datameer's v1 spelling (spec §5).
    return PrettyJSONResponse([{"id": i, "jobStatus": v1_status(s)} for i, s in page])


_PLAN_BODY = {
    "requestBody": {
        "required": True,
        "description": "Lenient JSON, whatever the Content-Type; a bare array is the older form.",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {
                                "fileIds": {
                                    "type": "array",
                                    "items": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                                },
                                "variables": {"type": "object"},
                            },
                            "required": ["fileIds"],
                        },
                        {
                            "type": "array",
                            "items": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                        },
                    ]
                }
            }
        },
    }
}


@router.post("/api/job-execution/sequential-trigger", openapi_extra=_PLAN_BODY)
async def sequential_trigger(request: Request, user: CurrentUser) -> Response:
    """Trigger files and their data-driven downstream as one ordered plan."""
    wait = requested_wait(request)
    with wait_slot(request, None if wait is None else user):
        body = await lenient_json_body(request)
        references, variables = _plan_request(body)
        answer = await run_in_threadpool(
            answer_once,
            request,
            user,
            ("sequential-trigger", references, variables),
            _plan_answer,
            lambda once: plans.sequential_trigger(
                _service(request), references, user, variables, once=once
            ),
        )
        return await answered_after_wait(request, answer, wait, user, _plan_members, "job-status")


def _plan_members(body: dict[str, Any]) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = body["execution-plan"]
    return members


def _plan_answer(plan: list[plans.PlanMember]) -> dict[str, Any]:
    members: list[dict[str, Any]] = []
    for member in plan:
        item: dict[str, Any] = {
            "job-configuration-name": member.name.rsplit(".", 1)[0],
            "job-configuration-id": member.configuration_id,
            "trigger": member.execution_id is not None,
        }
        if member.execution_id is not None:
            item["job-execution-id"] = member.execution_id
        else:
            item["reason"] = member.reason
        members.append(item)
    return {"status": "success", "execution-plan": members}


def _plan_request(body: Any) -> tuple[list[str], dict[str, Any]]:
    # The older form is a bare array of file references.
    if isinstance(body, list):
        body = {"fileIds": body}
    if not isinstance(body, dict):
        raise InvalidInput('the body must be {"fileIds": [...], "variables": {...}} or an array')
    unknown = set(body) - {"fileIds", "variables"}
    if unknown:
        raise InvalidInput(f"unknown member(s): {', '.join(sorted(unknown))}")
    file_ids = body.get("fileIds")
    if not isinstance(file_ids, list):
        raise InvalidInput("fileIds must be an array of file ids, uuids or paths")
    if len(file_ids) > MAX_PLAN_FILES:
        raise InvalidInput(f"fileIds: at most {MAX_PLAN_FILES} files in one plan")
    references = []
    for index, item in enumerate(file_ids):
        if isinstance(item, bool) or not isinstance(item, (int, str)) or item == "":
            raise InvalidInput(f"fileIds[{index}] must be a file id, uuid or path")
        if len(str(item)) > MAX_REFERENCE_LENGTH:
            raise InvalidInput(f"fileIds[{index}] is longer than {MAX_REFERENCE_LENGTH} characters")
        references.append(str(item))
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise InvalidInput("variables must be an object of name: value")
    if len(variables) > MAX_VARIABLES:
        raise InvalidInput(f"variables: at most {MAX_VARIABLES}")
    for name, value in variables.items():
        if len(name) > MAX_VARIABLE_NAME_LENGTH:
            raise InvalidInput(
                f"variables: a name is longer than {MAX_VARIABLE_NAME_LENGTH} characters"
            )
        if isinstance(value, (dict, list)):
            raise InvalidInput(f"variables.{name} must be a single value")
        if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
            raise InvalidInput(f"variables.{name} is longer than {MAX_VALUE_LENGTH} characters")
        try:
            check_whole_number(value)
        except ValueError as error:
            raise InvalidInput(f"variables.{name}: {error}") from None
    return references, variables
