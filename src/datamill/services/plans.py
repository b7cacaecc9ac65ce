"""The sequential trigger: one plan of executions released in dependency order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

from sqlalchemy.engine import Connection

from datamill.domain.records import JobConfiguration, User
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.errors import InvalidInput
from datamill.services.graph import CycleFound, downstream_graph, topological_order, upstream_graph
from datamill.services.idempotency import Once
from datamill.services.jobs import JobService
from datamill.services.permissions import Access, Capability, has_access, require_capability
from datamill.store import executions as ex
from datamill.store import plans as plan_store
from datamill.store.files import reference_key


@dataclasses.dataclass(frozen=True, slots=True)
class PlanMember:
    """One line of the execution plan answer."""

    name: str
    configuration_id: int
    execution_id: int | None
    reason: str | None = None


def sequential_trigger(
    jobs: JobService,
    references: list[str],
    user: User,
    variables: dict[str, Any],
    once: Once[list[PlanMember]] | None = None,
) -> list[PlanMember]:
    """Trigger the files and the data-driven workbooks downstream, in order; all or nothing.

    Every file given must be runnable by the caller. A data-driven workbook
    downstream that the caller may not read and run is left out of the plan,
    unnamed (with whatever is downstream only of it): it still runs, as its
    owner, by its own data-driven trigger once its sources have succeeded.
    With `once`, as JobService.trigger.
    """
    if not references:
        raise InvalidInput("fileIds must name at least one job")
    store = jobs.store
    with store.db.write() as conn:
        # The role before the key: a replay too needs job.run (docs/decisions.md).
        require_capability(conn, user, Capability.JOB_RUN)
        if once is not None:
            once.begin(conn)
        # Each file is resolved once, however often and however spelled it is given:
        # 10,000 copies of one path held the plan's transaction (on SQLite, the write
        # lock) for 43 s, 3,000 spellings of it (doubled slashes) 71 s (attack review).
        firsts: dict[Hashable, str] = {}
        for reference in references:
            firsts.setdefault(_spelling(reference), reference)
        found: dict[int, None] = {}
        for reference in firsts.values():
            _entry, config = jobs.resolve_job(conn, reference, user, Access.EXECUTE)
            found.setdefault(config.id)
        given = list(found)
        upstream = upstream_graph(conn, store)
        configs = {c.id: c for c in store.jobs.list_all(conn)}
        runnable = _runnable(conn, jobs, user)
        members = _with_data_driven_downstream(given, upstream, configs, runnable)
        try:
            order = topological_order(members, upstream)
        except CycleFound as cycle:
            # Only members are in a cycle found here, and the caller may read each one.
            names = " -> ".join(configs[c].name for c in cycle.cycle)
            raise InvalidInput(f"the jobs read from each other in a cycle: {names}") from None
        ex.lock_configurations_for_new_runs(conn, order)
        plan = _create_executions(conn, order, upstream, configs, user, variables)
        if once is not None:
            once.end(conn, plan)
        ex.notify_other_nodes(conn, "work")
    jobs.wakeup.notify_work()
    return plan


def _spelling(reference: str) -> Hashable:
    """What a reference is looked up by (store/files.find, and JobService.resolve_file's
    reading of '+' as a space): references that agree name the same file."""
    spaced = reference_key(reference.replace("+", " ")) if "+" in reference else None
    return reference_key(reference), spaced


def _runnable(conn: Connection, jobs: JobService, user: User) -> Callable[[int], bool]:
    def runnable(config_id: int) -> bool:
        entry = jobs.store.files.get(conn, jobs.store.jobs.get(conn, config_id).file_id)
        return has_access(conn, user, entry, Access.READ) and has_access(
            conn, user, entry, Access.EXECUTE
        )

    return runnable


def _with_data_driven_downstream(
    given: list[int],
    upstream: dict[int, set[int]],
    configs: dict[int, JobConfiguration],
    runnable: Callable[[int], bool],
) -> list[int]:
    downstream = downstream_graph(upstream)
    members = list(given)
    left_out: set[int] = set()
    index = 0
    while index < len(members):
        for candidate in sorted(downstream.get(members[index], ())):
            config = configs[candidate]
            data_driven = config.kind is JobKind.WORKBOOK and config.trigger_mode == "DATA_DRIVEN"
            if not data_driven or candidate in members or candidate in left_out:
                continue
            if runnable(candidate):
                members.append(candidate)
            else:
                left_out.add(candidate)
        index += 1
    return members


def _create_executions(
    conn: Connection,
    order: list[int],
    upstream: dict[int, set[int]],
    configs: dict[int, JobConfiguration],
    user: User,
    variables: dict[str, Any],
) -> list[PlanMember]:
    execution_of: dict[int, int] = {}
    edges: list[tuple[int, int]] = []
    plan = []
    for config_id in order:
        waits_on = [execution_of[u] for u in upstream.get(config_id, ()) if u in execution_of]
        status = JobStatus.WAITING_FOR_OTHER_JOB if waits_on else JobStatus.QUEUED
        execution_id = ex.create_execution(
            conn,
            configs[config_id],
            TriggerType.SEQUENTIAL,
            user.name,
            variables=variables,
            status=status,
        )
        execution_of[config_id] = execution_id
        edges.extend((execution_id, u) for u in waits_on)
        plan.append(PlanMember(configs[config_id].name, config_id, execution_id))
    plan_store.add_dependencies(conn, edges)
    return plan
