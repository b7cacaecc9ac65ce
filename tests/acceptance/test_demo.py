"""The README's demo, line by line, against `datamill serve --demo` on a fresh home."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import Server

README = Path(__file__).resolve().parents[2] / "README.md"
ACTIVE = {"QUEUED", "WAITING_FOR_OTHER_JOB", "RUNNING"}


def _demo_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- demo:start -->", 1)[1].split("<!-- demo:end -->", 1)[0]
    return [line for line in block.splitlines() if line.startswith(("curl ", "cat "))]


def _curl(line: str, server: Server) -> str:
    command = shlex.split(line.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}"))
    result = subprocess.run([*command[:1], "-sS", *command[1:]], capture_output=True, check=True)
    return result.stdout.decode()


def test_the_readme_demo_works_literally(start_server: Callable[..., Server]) -> None:
    server = start_server("--demo")
    lines = _demo_lines()
    assert len(lines) >= 6, "the README demo block lost its lines"
    outputs = []
    for line in lines:
        if line.startswith("cat "):
            path = server.home / Path(line.split()[1]).relative_to(".datamill")
            outputs.append(path.read_text(encoding="utf-8"))
            continue
        answer = _curl(line, server)
        deadline = time.monotonic() + 60
        # The README says to poll a status until it has ended: so does the test.
        while line.endswith("/status") and json.loads(answer)["job-status"] in ACTIVE:
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
            answer = _curl(line, server)
        if line.endswith("/status"):
            assert json.loads(answer)["job-status"] == "COMPLETED", answer
        outputs.append(answer)

    plan = json.loads(outputs[0])
    assert [m["job-configuration-name"] for m in plan["execution-plan"]] == [
        "orders",
        "order_totals",
    ]
    exported = list(csv.DictReader(io.StringIO(outputs[4])))
    assert {row["region"] for row in exported} == {"east", "north", "south", "west"}
    sample = (Path(__file__).resolve().parents[2] / "src/datamill/demo/orders.csv").read_text()
    over = [r for r in csv.DictReader(io.StringIO(sample)) if float(r["amount"]) >= 250]
    assert sum(int(row["orders"]) for row in exported) == len(over)
    details = json.loads(outputs[5])
    assert details["jobStatus"] == "COMPLETED" and details["successCount"] == 200
    assert json.loads(outputs[6])["path"] == "/Analytics/Workbooks/order_totals.wbk"
    downloaded = outputs[7].splitlines()
    assert re.sub('"', "", downloaded[0]) == "region,orders,total"
    assert len(downloaded) == 5
