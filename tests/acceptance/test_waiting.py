"""Many requests waiting on one run of the real server, all woken by its end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.acceptance.conftest import Server

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
    server = start_server(DATAMILL_ADMIN_PASSWORD="pw")
    with httpx.Client(base_url=server.base, auth=ADMIN, timeout=60) as client:
        config_id, run = _endless_run(client)

        def stop() -> None:
            assert client.post(f"/rest/job-execution/job-kill/{run}").status_code == 200

        statuses = asyncio.run(_wait_all(server.base, config_id, stop))
    assert statuses == ["CANCELED"] * WAITERS
