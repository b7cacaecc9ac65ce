"""The dependency graph between jobs, derived from their definitions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.definitions import definition_model, upstream_references
from datamill.domain.records import JobConfiguration, User
from datamill.services.permissions import Access, has_access
from datamill.store import tables as t
from datamill.store.store import Store
from datamill.store.triggers import replace_dependencies


def upstream_graph(conn: Connection, store: Store) -> dict[int, set[int]]:
    """Configuration id -> ids of the configurations whose data it reads (as stored)."""
    graph: dict[int, set[int]] = {c.id: set() for c in store.jobs.list_all(conn)}
    for config_id, upstream in conn.execute(
        sa.select(
            t.job_dependencies.c.job_configuration_id,
            t.job_dependencies.c.upstream_configuration_id,
        )
    ).all():
        graph.setdefault(config_id, set()).add(upstream)
    return graph


def rebuild_dependencies(conn: Connection, store: Store) -> None:
    """Resolve every definition's references again and store the graph.

    Run whenever a job is created, changed or deleted: a reference to a job
    defined later resolves once that job exists.
    """
    edges = {c.id: upstream_ids(conn, store, c) for c in store.jobs.list_all(conn)}
    replace_dependencies(conn, edges)


def upstream_ids(conn: Connection, store: Store, config: JobConfiguration) -> list[int]:
    """Ids of the configurations one configuration reads from (unresolvable ones skipped)."""
    definition = definition_model(config.kind).model_validate(config.definition)
    ids = []
    for reference in upstream_references(definition):
        entry = store.files.find(conn, reference)
        upstream = store.jobs.for_file(conn, entry.id) if entry is not None else None
        if upstream is not None:
            ids.append(upstream.id)
    return ids


def downstream_graph(upstream: Mapping[int, Iterable[int]]) -> dict[int, set[int]]:
    """The reverse of an upstream graph."""
    downstream: dict[int, set[int]] = {node: set() for node in upstream}
    for node, sources in upstream.items():
        for source in sources:
            downstream.setdefault(source, set()).add(node)
    return downstream


def topological_order(members: list[int], upstream: Mapping[int, Iterable[int]]) -> list[int]:
    """Members ordered so each comes after its in-plan upstreams; ties keep `members` order.

    Raises CycleFound with the cycle when there is none.
    """
    inside = set(members)
    remaining = {m: {u for u in upstream.get(m, ()) if u in inside and u != m} for m in members}
    for m in members:
        if m in set(upstream.get(m, ())):
            raise CycleFound([m, m])
    order: list[int] = []
    while remaining:
        ready = [m for m in members if m in remaining and not remaining[m]]
        if not ready:
            raise CycleFound(find_cycle(remaining))
        for m in ready:
            order.append(m)
            del remaining[m]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def find_cycle(upstream: Mapping[int, Iterable[int]]) -> list[int]:
    """One cycle of the graph as a list of nodes (first = last), or [] if there is none."""
    state: dict[int, int] = {}
    stack: list[int] = []

    def visit(node: int) -> list[int]:
        state[node] = 1
        stack.append(node)
        for nxt in upstream.get(node, ()):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in list(upstream):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return []


def cycle_text(conn: Connection, store: Store, cycle: list[int], user: User) -> str:
    """A cycle as `path -> path -> ...`, naming only the jobs `user` may read."""
    names: list[str] = []
    for member in cycle:
        entry = store.files.get(conn, store.jobs.get(conn, member).file_id)
        visible = has_access(conn, user, entry, Access.READ)
        names.append(entry.path if visible else "(a job you cannot see)")
    return " -> ".join(names)


class CycleFound(Exception):
    """The jobs read from each other in a circle."""

    def __init__(self, cycle: list[int]) -> None:
        super().__init__(cycle)
        self.cycle = cycle


def reachable(
    edges: Mapping[int, Iterable[int]],
    start: int,
    max_level: int,
    passable: Callable[[int], bool],
) -> list[tuple[int, int]]:
    """(node, level) of every node within `max_level` steps of `start` along `edges`.

    Breadth first, so each node comes with its shortest distance, nearest first
    (ties by id). A node `passable` refuses is neither listed nor walked through:
    the caller cannot tell it is there.
    """
    found: list[tuple[int, int]] = []
    seen = {start}
    frontier = [start]
    for level in range(1, max_level + 1):
        following = sorted({n for node in frontier for n in edges.get(node, ()) if n not in seen})
        seen.update(following)
        frontier = [n for n in following if passable(n)]
        found.extend((n, level) for n in frontier)
        if not frontier:
            break
    return found
