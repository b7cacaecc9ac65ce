"""Many requests waiting on one run of the real server, all woken by its end."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from collections.abc import Callable

import httpx

from tests.acceptance.conftest import DATAMILL, Server

ADMIN = ("admin", "pw")
ENDLESS = "SELECT sum(hash(x)) AS s FROM range(1000000000000) AS t(x)"
WAITERS = 200


def _endless_run(client: httpx.Client) -> tuple[int, int]:
    document = {
        "path": "/Data/endless.wbk",
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": ENDLESS}],
    }
    made = client.post("/rest/workbook", json=document)
    assert made.status_code == 200, made.text
    config_id = made.json()["configuration-id"]
    run = client.post(f"/rest/job-execution?configuration={config_id}").json()["id"]
    # Until it runs: the status route waits a second at a time and says so.
    while (
        client.get(f"/rest/job-configuration/job-status/{config_id}?wait=1").json()["jobStatus"]
        != "RUNNING"
    ):
        pass
    return config_id, run


async def _wait_all(base: str, config_id: int, stop: Callable[[], None]) -> list[str]:
    limits = httpx.Limits(max_connections=WAITERS + 10)
    async with httpx.AsyncClient(base_url=base, auth=ADMIN, timeout=900, limits=limits) as client:
        url = f"/rest/job-configuration/job-status/{config_id}?wait=600"
        waits = [asyncio.ensure_future(client.get(url)) for _ in range(WAITERS)]
        await asyncio.sleep(0)  # every request is on its way
        # The run still runs while they wait: a plain status says so.
        assert (await client.get(url.replace("wait=600", "wait=0"))).json()[
            "jobStatus"
        ] == "RUNNING"
        assert not any(w.done() for w in waits)
        await asyncio.get_running_loop().run_in_executor(None, stop)
        answers = await asyncio.gather(*waits)
    return [a.json()["jobStatus"] for a in answers]


def test_two_hundred_waits_on_one_run_all_wake_when_it_ends(
    start_server: Callable[..., Server],
) -> None:
    # All the waits are admin's: above the per-user cap's default (docs/waiting.md).
    server = start_server(
        DATAMILL_ADMIN_PASSWORD="pw", DATAMILL_MAX_WAITS_PER_USER=str(WAITERS + 10)
    )
    with httpx.Client(base_url=server.base, auth=ADMIN, timeout=60) as client:
        config_id, run = _endless_run(client)

        def stop() -> None:
            assert client.post(f"/rest/job-execution/job-kill/{run}").status_code == 200

        statuses = asyncio.run(_wait_all(server.base, config_id, stop))
    assert statuses == ["CANCELED"] * WAITERS


def test_a_wait_on_an_api_node_ends_when_a_worker_process_finishes_the_run(
    start_server: Callable[..., Server],
) -> None:
    """SQLite, no NOTIFY: the API node learns of the other process's commits by data_version."""
    server = start_server("--no-worker", DATAMILL_ADMIN_PASSWORD="pw")
    document = {
        "path": "/Data/one.wbk",
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS one"}],
    }
    with httpx.Client(base_url=server.base, auth=ADMIN, timeout=900) as client:
        made = client.post("/rest/workbook", json=document)
        assert made.status_code == 200, made.text
        config_id = made.json()["configuration-id"]
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(
                client.post(f"/rest/job-execution?configuration={config_id}&wait=300")
            )
        )
        waiting.start()
        # No worker anywhere: the run stays queued, the trigger keeps waiting.
        while (
            queued := client.get(f"/rest/job-configuration/job-status/{config_id}").json()
        ) == {}:
            pass
        assert queued["jobStatus"] == "QUEUED"
        assert waiting.is_alive()
        log = (server.home.parent / "worker.log").open("w")
        worker = subprocess.Popen(
            [*DATAMILL, "worker"], env=server.env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            waiting.join()
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json() == {"id": queued["id"], "jobStatus": "COMPLETED"}
