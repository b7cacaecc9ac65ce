"""The demo workspace: a sample dataset, an import job, a workbook and an export."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from datamill.bootstrap import Node
from datamill.domain.records import User
from datamill.domain.status import JobKind
from datamill.errors import AlreadyExists

IMPORT_PATH = "/Data/ImportJobs/orders.imp"
WORKBOOK_PATH = "/Analytics/Workbooks/order_totals.wbk"
EXPORT_PATH = "/Data/ExportJobs/order_totals.exp"


def demo_definitions(files_root: Path) -> list[tuple[str, JobKind, dict[str, Any]]]:
    """The three demo jobs, reading and writing below `files_root`."""
    return [
        (
            IMPORT_PATH,
            JobKind.IMPORT,
            {
                "description": "Orders from the shipped sample CSV",
                "source": {"kind": "csv", "path": str(files_root / "demo" / "orders.csv")},
                "schema": [
                    {"name": "order_id", "type": "BIGINT"},
                    {"name": "customer", "type": "VARCHAR"},
                    {"name": "region", "type": "VARCHAR"},
                    {"name": "amount", "type": "DOUBLE"},
                    {"name": "ordered_on", "type": "DATE"},
                ],
                "errorMode": "DROP_RECORD",
            },
        ),
        (
            WORKBOOK_PATH,
            JobKind.WORKBOOK,
            {
                "description": "Order totals per region above a minimum amount",
                "triggering": {"mode": "DATA_DRIVEN"},
                "variables": {"min_amount": {"type": "DOUBLE", "default": 100}},
                "sheets": [
                    {"kind": "data", "name": "orders", "source": {"importJob": IMPORT_PATH}},
                    {
                        "kind": "sql",
                        "name": "totals",
                        "keep": True,
                        "sql": (
                            "SELECT region, count(*) AS orders, round(sum(amount), 2) AS total\n"
                            "FROM orders WHERE amount >= ${min_amount}\n"
                            "GROUP BY region ORDER BY region"
                        ),
                    },
                ],
            },
        ),
        (
            EXPORT_PATH,
            JobKind.EXPORT,
            {
                "description": "Order totals as CSV",
                "source": {"workbook": WORKBOOK_PATH, "sheet": "totals"},
                "sink": {"kind": "csv", "path": str(files_root / "exports" / "order_totals.csv")},
            },
        ),
    ]


def install_demo(node: Node, owner: User) -> list[str]:
    """Copy the sample data and define the demo jobs; returns the paths created."""
    files_root = Path(node.settings.local_file_roots[0])
    (files_root / "demo").mkdir(parents=True, exist_ok=True)
    (files_root / "exports").mkdir(parents=True, exist_ok=True)
    sample = resources.files("datamill.demo").joinpath("orders.csv")
    with resources.as_file(sample) as source:
        shutil.copyfile(source, files_root / "demo" / "orders.csv")
    created = []
    for path, kind, definition in demo_definitions(files_root):
        try:
            node.jobs.define_job(path, kind, definition, owner.name)
            created.append(path)
        except AlreadyExists:
            pass
    return created
