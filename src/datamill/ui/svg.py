"""Small inline SVG drawn on the server: a run chart and a dependency graph.

Plain numbers and escaped text in, markup out; no script, so the pages stay
fast and work without JavaScript.
"""

from __future__ import annotations

import html
from typing import Any

from markupsafe import Markup

from datamill.domain.records import Execution
from datamill.ui.format import duration_of, status_class

CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 600, 160, 4
NODE_WIDTH, NODE_HEIGHT, COLUMN_GAP, ROW_GAP = 170, 34, 50, 14


def run_chart(runs: list[Execution]) -> Markup:
    """Bars of each run's duration (coloured by status) and a line of its records, oldest left."""
    if not runs:
        return Markup("")
    durations = [duration_of(r) or 0.0 for r in runs]
    records = [r.success_count for r in runs]
    top_d, top_r = max(durations) or 1.0, max(records) or 1
    plot = CHART_HEIGHT - 30
    step = CHART_WIDTH / len(runs)
    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img"'
        f' aria-labelledby="chart-title"><title id="chart-title">Duration (bars) and records'
        f" (line) of the last {len(runs)} runs; longest {top_d:.1f} s,"
        f" most records {top_r}</title>"
    ]
    points = []
    for index, run in enumerate(runs):
        x = index * step
        height = max(1.0, durations[index] / top_d * plot)
        label = html.escape(
            f"run {run.id}: {run.status.value}, {durations[index]:.1f} s, {records[index]} records"
        )
        parts.append(
            f'<rect class="bar {status_class(run.status)}" x="{x + BAR_GAP / 2:.1f}"'
            f' y="{plot - height + 10:.1f}" width="{max(1.0, step - BAR_GAP):.1f}"'
            f' height="{height:.1f}"><title>{label}</title></rect>'
        )
        y = plot + 10 - records[index] / top_r * plot
        points.append(f"{x + step / 2:.1f},{y:.1f}")
    parts.append(f'<polyline class="records" points="{" ".join(points)}"/>')
    parts.append(
        f'<text x="0" y="{CHART_HEIGHT - 4}" class="axis">oldest</text>'
        f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT - 4}" class="axis" text-anchor="end">'
        "newest</text></svg>"
    )
    return Markup("".join(parts))


def dependency_graph(graph: dict[str, Any], centre: str) -> Markup:
    """Upstream jobs in columns to the left, downstream to the right, by distance.

    `graph` is ArtifactService.dependencies' answer: only jobs the user may
    read are in it. Each node links to its job page.
    """
    upstream: list[dict[str, Any]] = graph.get("upstream", [])
    downstream: list[dict[str, Any]] = graph.get("downstream", [])
    levels_up = max((n["level"] for n in upstream), default=0)
    levels_down = max((n["level"] for n in downstream), default=0)
    columns: list[list[dict[str, Any] | None]] = []
    for level in range(levels_up, 0, -1):
        columns.append([n for n in upstream if n["level"] == level])
    columns.append([None])  # the job itself
    for level in range(1, levels_down + 1):
        columns.append([n for n in downstream if n["level"] == level])
    rows = max(len(c) for c in columns)
    width = len(columns) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    height = rows * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    place: dict[str, tuple[float, float]] = {}
    nodes = []
    for col, members in enumerate(columns):
        offset = (height - (len(members) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP)) / 2
        for row, node in enumerate(members):
            x = float(col * (NODE_WIDTH + COLUMN_GAP))
            y = offset + row * (NODE_HEIGHT + ROW_GAP)
            key = "self" if node is None else str(node["fileId"])
            place[key] = (x, y)
            nodes.append(_node(node, centre, x, y))
    edges = []
    centre_x, centre_y = place["self"]
    for node in upstream:
        left, top = place[str(node["fileId"])]
        edges.append(_edge(left + NODE_WIDTH, top, centre_x, centre_y))
    for node in downstream:
        left, top = place[str(node["fileId"])]
        edges.append(_edge(centre_x + NODE_WIDTH, centre_y, left, top))
    return Markup(
        f'<svg class="graph" viewBox="-2 -2 {width + 4} {height + 4}" role="img"'
        f' aria-labelledby="graph-title" style="max-width:{width + 4}px">'
        f'<title id="graph-title">{len(upstream)} upstream and {len(downstream)}'
        f" downstream jobs</title>{''.join(edges)}{''.join(nodes)}</svg>"
    )


def _node(node: dict[str, Any] | None, centre: str, x: float, y: float) -> str:
    name = centre if node is None else str(node["path"]).rsplit("/", 1)[-1]
    text = html.escape(name if len(name) <= 22 else name[:21] + "…")
    box = (
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6"/>'
        f'<text x="{x + NODE_WIDTH / 2:.0f}" y="{y + NODE_HEIGHT / 2 + 5:.0f}"'
        f' text-anchor="middle">{text}</text>'
    )
    if node is None:
        return f'<g class="node self">{box}</g>'
    title = html.escape(f"{node['type']} {node['path']}")
    return f'<a href="/ui/jobs/{int(node["fileId"])}" class="node"><title>{title}</title>{box}</a>'


def _edge(x1: float, y1: float, x2: float, y2: float) -> str:
    a, b = y1 + NODE_HEIGHT / 2, y2 + NODE_HEIGHT / 2
    middle = (x1 + x2) / 2
    return (
        f'<path class="edge" d="M{x1:.0f},{a:.0f} C{middle:.0f},{a:.0f} {middle:.0f},{b:.0f}'
        f' {x2:.0f},{b:.0f}"/>'
    )
