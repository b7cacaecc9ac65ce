"""Status API: requests/s and p99 of GET /api/job-execution/<file-id>/status.

Against, in the same run and with the same load (same connections, same
duration, a load generator in a separate process):
- bare: uvicorn serving a plain ASGI app that answers a fixed JSON body of the
  same shape (the ceiling of uvicorn on this machine, the baseline);
- fastapi: uvicorn serving FastAPI with one sync route and a sync dependency
  that decodes Basic credentials, answering the same fixed body (no store):
  the framework's share, printed to locate where time goes.
Datamill is `datamill serve` on SQLite with the embedded worker idle; the
job has one COMPLETED execution, and the request carries HTTP Basic
credentials (the server checks them against the store on every request; the
argon2 verification itself is cached).

Load generator: wrk (`apt-get install wrk`) when it is on PATH, otherwise a
Python one (threads with keep-alive httpx clients in a child process, which
saturates earlier; the ratio is then less telling). Rounds alternate between
the servers so that other work on the machine hits all of them alike.
Target: Datamill >= 0.5 x the bare endpoint's requests/s.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

from common import (
    ADMIN,
    PYTHON,
    Result,
    StoreReader,
    define,
    free_port,
    header,
    median,
    parse_args,
    percentile,
    scratch,
    serve,
    summary,
    trigger,
    trivial_workbook,
    wait_warm,
)
from fastapi import Depends, FastAPI, Request
from starlette.responses import Response

CONNECTIONS = 16
JOB = "/Analytics/Workbooks/status.wbk"
BODY = {
    "status": "success",
    "file-id": 12,
    "job-execution-id": 1,
    "job-status": "COMPLETED",
    "start-time": "Nov 28, 2026 2:30:00 PM",
    "stop-time": "Nov 28, 2026 2:30:00 PM",
}
AUTH = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


# ---------------------------------------------------------------- reference servers


def bare_app() -> Any:
    """A plain ASGI app answering BODY as pretty JSON."""
    payload = json.dumps(BODY, indent=2).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def basic_user(request: Request) -> str:
    """The user name of Basic credentials, not checked (the reference does no store work)."""
    _scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    return base64.b64decode(encoded).decode().partition(":")[0]


def fastapi_app() -> FastAPI:
    """FastAPI with a sync route behind a sync Basic-credentials dependency."""
    app = FastAPI()

    @app.get("/api/job-execution/{reference:path}/status")
    def status(reference: str, name: Annotated[str, Depends(basic_user)]) -> Response:
        return Response(json.dumps(BODY, indent=2), media_type="application/json")

    return app


def run_reference(kind: str, port: int) -> None:
    """Serve a reference app with uvicorn like `datamill serve` does (one process)."""
    import uvicorn

    app = bare_app() if kind == "bare" else fastapi_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def reference_server(kind: str) -> Iterator[str]:
    """A reference server in a subprocess; its status URL."""
    port = free_port()
    process = subprocess.Popen([PYTHON, __file__, "--serve", kind, "--port", str(port)])
    url = f"http://127.0.0.1:{port}/api/job-execution/12/status"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, headers={"Authorization": AUTH}).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} server did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


# ---------------------------------------------------------------- load generators


_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def wrk(url: str, seconds: float) -> tuple[float, float]:
    """Requests/s and p99 latency (s) from wrk."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds:.0f}s",
            "--latency",
            "-H",
            f"Authorization: {AUTH}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    if "Non-2xx" in out or rate is None or p99 is None:
        raise RuntimeError(f"wrk saw failures:\n{out}")
    errors = re.search(r"Socket errors:.*", out)
    if errors:  # timeouts (2 s) are not in the latency percentiles: say so
        print(f"    wrk: {errors.group(0)}")
    return float(rate.group(1)), float(p99.group(1)) * _WRK_UNITS[p99.group(2)]


def python_load(url: str, seconds: float) -> tuple[float, float]:
    """Requests/s and p99 latency (s) from the Python load generator in a child process."""
    out = subprocess.run(
        [PYTHON, __file__, "--load", url, "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate, p99 = out.split()
    return float(rate), float(p99)


def run_python_load(url: str, seconds: float) -> None:
    """CONNECTIONS threads, each a keep-alive client; prints requests/s and p99."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        mine = []
        with httpx.Client(headers={"Authorization": AUTH}) as client:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                client.get(url).raise_for_status()
                mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(len(latencies) / seconds, percentile(latencies, 0.99))


# ---------------------------------------------------------------- the benchmark


def main() -> int:
    """Alternate rounds against the bare app, the FastAPI app and Datamill."""
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--serve", {"choices": ["bare", "fastapi"], "help": "internal: serve a reference"}),
            ("--port", {"type": int, "help": "internal"}),
            ("--load", {"help": "internal: run the Python load generator against a URL"}),
            ("--seconds", {"type": float, "default": 5.0, "help": "internal"}),
        ],
    )
    if args.serve:
        run_reference(args.serve, args.port)
        return 0
    if args.load:
        run_python_load(args.load, args.seconds)
        return 0
    header("api_status", args.quick)
    load = wrk if shutil.which("wrk") else python_load
    print(
        f"load generator: {'wrk' if load is wrk else 'python (wrk not found)'}, "
        f"{CONNECTIONS} connections"
    )
    seconds, rounds = (3.0, 2) if args.quick else (10.0, 3)
    figures: dict[str, list[tuple[float, float]]] = {"bare": [], "fastapi": [], "datamill": []}
    with (
        scratch("status") as folder,
        serve(folder / "sqlite") as server,
        reference_server("bare") as bare_url,
        reference_server("fastapi") as fastapi_url,
    ):
        wait_warm(server)
        reader = StoreReader(server.database_url)
        with server.client() as client:
            define(client, "workbook", trivial_workbook(JOB))
            reader.wait_terminal(trigger(client, JOB))
            file_id = client.get(f"/api/job-execution{JOB}/status").json()["file-id"]
        reader.close()
        urls = {
            "bare": bare_url,
            "fastapi": fastapi_url,
            "datamill": f"{server.base}/api/job-execution/{file_id}/status",
        }
        for url in urls.values():  # warm-up
            load(url, 1.0)
        for round_ in range(rounds):
            for name, url in urls.items():
                rate, p99 = load(url, seconds)
                figures[name].append((rate, p99))
                print(
                    f"  round {round_ + 1} {name:<8} {rate:8.0f} req/s  p99 {p99 * 1000:.2f} ms",
                    flush=True,
                )
    rates = {k: median([r for r, _ in v]) for k, v in figures.items()}
    p99s = {k: median([p for _, p in v]) * 1000 for k, v in figures.items()}
    met = rates["datamill"] >= 0.5 * rates["bare"]
    bare_rate, bare_p99 = rates["bare"], p99s["bare"]
    summary(
        [
            Result(
                "datamill status req/s",
                rates["datamill"],
                "req/s",
                bare_rate,
                "bare uvicorn",
                ">= 0.5x bare",
                met,
            ),
            Result(
                "datamill status p99", p99s["datamill"], "ms", bare_p99, "bare uvicorn", "-", None
            ),
            Result(
                "fastapi reference req/s",
                rates["fastapi"],
                "req/s",
                bare_rate,
                "bare uvicorn",
                "-",
                None,
            ),
            Result(
                "fastapi reference p99", p99s["fastapi"], "ms", bare_p99, "bare uvicorn", "-", None
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
