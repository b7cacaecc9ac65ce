"""1,000 requests waiting on one run: server memory, other requests' latency, wake-up.

`datamill serve` (SQLite, embedded worker) runs one endless workbook; 1,000
clients (one connection each) ask its status with `?wait=600`. Measured:
the server's RSS before and while they wait, the latency of 200 plain status
polls and 50 job-details requests sent meanwhile (against the same requests
with nobody waiting), the re-reads the watch made, and how long after the
stop every waiter had its answer. Run: `.venv/bin/python bench/waits.py`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from typing import Any

import httpx
from common import ADMIN, header, ms, percentile, scratch, serve, trivial_workbook

WAITERS = 1_000
ENDLESS = "SELECT sum(hash(x)) AS s FROM range(1000000000000) AS t(x)"


async def _latencies(client: httpx.AsyncClient, urls: list[str]) -> list[float]:
    times = []
    for url in urls:
        start = time.perf_counter()
        response = await client.get(url)
        assert response.status_code == 200, response.text
        times.append(time.perf_counter() - start)
    return times


def _rss(pid: int) -> float:
    """Resident memory in MB, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def main() -> None:
    header("waits", quick=False)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"commit: {commit or 'unknown'}")
    # One user (admin) holds all the waits: above the per-user cap's default of 100.
    cap = str(WAITERS + 10)
    with scratch("waits") as folder, serve(folder / "home", max_waits_per_user=cap) as server:
        with server.client() as client:
            made = client.post(
                "/rest/workbook", json=trivial_workbook("/Data/endless.wbk", ENDLESS)
            )
            config = made.json()["configuration-id"]
            file_id = "Data/endless.wbk"
            run = client.post(f"/rest/job-execution?configuration={config}").json()["id"]
            while (
                client.get(f"/rest/job-configuration/job-status/{config}?wait=1").json()[
                    "jobStatus"
                ]
                != "RUNNING"
            ):
                pass
        limits = httpx.Limits(max_connections=WAITERS + 20, max_keepalive_connections=WAITERS + 20)
        async with httpx.AsyncClient(
            base_url=server.base, auth=ADMIN, timeout=900, limits=limits
        ) as client:
            polls = [f"/api/job-execution/{file_id}/status"] * 200
            details = [f"/rest/job-execution/job-details/{run}"] * 50
            await _latencies(client, polls[:20])  # warm
            quiet_polls = await _latencies(client, polls)
            quiet_details = await _latencies(client, details)
            before = _rss(server.process.pid)
            url = f"/api/job-execution/{file_id}/status?wait=600"
            answered_at: list[float] = []

            async def wait_once() -> dict[str, Any]:
                # A bare HTTP/1.1 exchange: httpx's pool of 1,000 connections
                # costs the client itself seconds, which is not the server's time.
                host, port = server.base.removeprefix("http://").split(":")
                reader, writer = await asyncio.open_connection(host, int(port))
                token = base64.b64encode(":".join(ADMIN).encode()).decode()
                writer.write(
                    f"GET {url} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                answer = await reader.read()
                answered_at.append(time.perf_counter())
                writer.close()
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), answer
                document: dict[str, Any] = json.loads(body)
                return document

            waits = [asyncio.ensure_future(wait_once()) for _ in range(WAITERS)]
            await asyncio.sleep(3)  # all connected and waiting
            during = _rss(server.process.pid)
            busy_polls = await _latencies(client, polls)
            busy_details = await _latencies(client, details)
            assert not any(w.done() for w in waits)
            stopped = time.perf_counter()
            kill = await client.post(f"/rest/job-execution/job-kill/{run}")
            assert kill.status_code == 200
            answers = await asyncio.gather(*waits)
            woken = time.perf_counter() - stopped
    statuses = {a["job-status"] for a in answers}
    print(f"{WAITERS} waiting requests on one run (SQLite, embedded worker)")
    print(
        f"  server RSS before {before:.0f} MB, while waiting {during:.0f} MB"
        f" (+{(during - before) * 1024 / WAITERS:.0f} kB per waiting request)"
    )
    for name, quiet, busy in (
        ("status poll", quiet_polls, busy_polls),
        ("job details", quiet_details, busy_details),
    ):
        print(
            f"  {name}: p50 {ms(percentile(quiet, 0.5))} -> {ms(percentile(busy, 0.5))},"
            f" p99 {ms(percentile(quiet, 0.99))} -> {ms(percentile(busy, 0.99))}"
        )
    print(
        f"  all {WAITERS} answered {statuses} {ms(woken)} after the stop was sent"
        f" (the first {ms(min(answered_at) - stopped)} after it)"
    )


if __name__ == "__main__":
    asyncio.run(main())
