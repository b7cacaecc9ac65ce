"""Status API: requests/s and p99 of the status polls clients send, errors counted as failures.

Judged (what a user experiences): a mix of the polls scripts and schedulers
send, cycled in equal shares over every connection:
`GET /api/job-execution/<reference>/status` with the reference a file id, a
file uuid and a path, each for a job whose newest run has ended (COMPLETED)
and for one that is RUNNING (an endless query in the embedded worker, which
keeps one engine thread busy for the whole benchmark, like a real running
job would; the reference servers are measured under the same load). The
figure is successful answers per second: a non-2xx answer or a socket error
is a failure, printed, and the target is missed if there is one.

Information (the favourable figure): only the file-id poll of the finished
job, which the fast path in front of FastAPI answers (api/fast_status.py).

Against, in the same run and with the same load (same connections, same
duration, same request mix, a load generator in a separate process, the
same endless query running in Datamill's engine child):
- bare: uvicorn serving a plain ASGI app that answers each URL of the mix
  with the very bytes Datamill answered it with before the rounds (body,
  content-length, content-type and an x-request-id of the same length): the
  ceiling of uvicorn on this machine for these answers, the baseline;
- fastapi: uvicorn serving FastAPI with one sync route and a sync dependency
  that decodes Basic credentials, answering the same bodies (no store):
  the framework's share, printed to locate where time goes.
Both are served with exactly the uvicorn options of `datamill serve`
(`cli/local.py uvicorn_options`: parser, loop, logging, no proxy headers).
Datamill is `datamill serve` on SQLite; the requests carry HTTP Basic
credentials (the server checks them against the store on every request; the
argon2 verification itself is cached).

Also printed, as information: each server's CPU per request (user + system
time of its own process, not its engine children, over a round, divided by
the requests answered). On a shared machine the req/s of every server swing
from round to round; CPU per request moves much less.

Load generator: wrk (`apt-get install wrk`) with a Lua script cycling the
mix when it is on PATH, otherwise a Python one (threads with keep-alive httpx
clients in a child process, which saturates earlier; the ratio is then less
telling). Rounds alternate between the servers so that other work on the
machine hits all of them alike.
Target: the Datamill mix >= 0.5 x the bare endpoint's requests/s, no failures.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import psutil
from common import (
    ADMIN,
    PYTHON,
    Result,
    Server,
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
RUNNING_JOB = "/Analytics/Workbooks/running.wbk"
# Runs for centuries on one engine thread: RUNNING for the whole benchmark.
ENDLESS_SQL = "SELECT count(*) AS n FROM range(1000000000000000000) t(i) WHERE i % 7 = 3"
# What the references answer for a path not in the mix (their start-up probe).
BODY = {
    "status": "success",
    "file-id": 12,
    "job-execution-id": 1,
    "job-status": "COMPLETED",
    "start-time": "Nov 28, 2026 2:30:00 PM",
    "stop-time": "Nov 28, 2026 2:30:00 PM",
}
# Datamill's made request ids are 32 characters; the references send one alike.
REQUEST_ID = (b"x-request-id", b"0" * 32)
AUTH = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


# ---------------------------------------------------------------- reference servers


def _answers(path: str | None) -> dict[str, bytes]:
    """The bodies Datamill answered, by request path (from --answers), and BODY for others."""
    answers: dict[str, str] = json.loads(Path(path).read_text()) if path else {}
    fixed = {p: body.encode() for p, body in answers.items()}
    fixed[""] = json.dumps(BODY, indent=2).encode()
    return fixed


def bare_app(answers: dict[str, bytes]) -> Any:
    """A plain ASGI app answering each path with Datamill's bytes for it."""
    responses = {
        path: (
            [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
                REQUEST_ID,
            ],
            body,
        )
        for path, body in answers.items()
    }
    other = responses[""]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers, body = responses.get(scope["path"], other)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def basic_user(request: Request) -> str:
    """The user name of Basic credentials, not checked (the reference does no store work)."""
    _scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    return base64.b64decode(encoded).decode().partition(":")[0]


def fastapi_app(answers: dict[str, bytes]) -> FastAPI:
    """FastAPI with a sync route behind a sync Basic-credentials dependency."""
    app = FastAPI()
    headers = {REQUEST_ID[0].decode(): REQUEST_ID[1].decode()}

    @app.get("/api/job-execution/{reference:path}/status")
    def status(reference: str, name: Annotated[str, Depends(basic_user)]) -> Response:
        body = answers.get(f"/api/job-execution/{reference}/status", answers[""])
        return Response(body, media_type="application/json", headers=headers)

    return app


def run_reference(kind: str, port: int, answers_path: str | None) -> None:
    """Serve a reference app with uvicorn exactly as `datamill serve` does (one process)."""
    import uvicorn

    from datamill.cli.local import uvicorn_options

    answers = _answers(answers_path)
    app = bare_app(answers) if kind == "bare" else fastapi_app(answers)
    # The same options as the server (parser, loop, logging, no proxy headers).
    uvicorn.Server(uvicorn.Config(app, **uvicorn_options("127.0.0.1", port, None))).run()


@contextlib.contextmanager
def reference_server(kind: str, answers: Path) -> Iterator[tuple[str, int]]:
    """A reference server in a subprocess, answering `answers`; its status URL and process id."""
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, __file__, "--serve", kind, "--port", str(port), "--answers", str(answers)]
    )
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
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


# ---------------------------------------------------------------- load generators


_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclasses.dataclass(frozen=True)
class Load:
    """What one round of load saw."""

    rate: float  # successful answers per second
    p99: float  # seconds
    failures: int  # non-2xx answers and socket errors
    requests: int  # answered, successfully or not
    cpu: float = float("nan")  # server CPU seconds (its own process) per request


def wrk(urls: list[str], seconds: float) -> Load:
    """Successful requests/s, p99 latency and failures from wrk cycling `urls` (one host)."""
    base = urls[0].split("/api/", 1)[0]
    paths = [url[len(base) :] for url in urls]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            "local paths = {" + ", ".join(json.dumps(p) for p in paths) + "}\n"
            "local i = 0\n"
            "request = function()\n"
            "  i = i % #paths + 1\n"
            '  return wrk.format("GET", paths[i])\n'
            "end\n"
        )
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{CONNECTIONS}",
                f"-d{seconds:.0f}s",
                "--latency",
                "-s",
                script.name,
                "-H",
                f"Authorization: {AUTH}",
                base,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    if total is None or p99 is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    duration = float(total.group(2)) * _WRK_UNITS[total.group(3)]
    good = int(total.group(1)) - bad
    return Load(
        good / duration,
        float(p99.group(1)) * _WRK_UNITS[p99.group(2)],
        bad + socket_errors,
        int(total.group(1)),
    )


def python_load(urls: list[str], seconds: float) -> Load:
    """Successful requests/s, p99 latency and failures from the Python load generator."""
    out = subprocess.run(
        [PYTHON, __file__, "--load", " ".join(urls), "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate, p99, failures = out.split()
    return Load(float(rate), float(p99), int(failures), round(float(rate) * seconds))


def run_python_load(urls: list[str], seconds: float) -> None:
    """CONNECTIONS threads, each a keep-alive client cycling `urls`; prints rate, p99, failures."""
    import httpx

    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(offset: int) -> None:
        mine, failed = [], 0
        with httpx.Client(headers={"Authorization": AUTH}) as client:
            index = offset
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    ok = client.get(urls[index % len(urls)]).is_success
                except httpx.HTTPError:
                    ok = False
                index += 1
                if ok:
                    mine.append(time.perf_counter() - start)
                else:
                    failed += 1
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(len(latencies) / seconds, percentile(latencies, 0.99), failures[0])


# ---------------------------------------------------------------- the benchmark


def _mix(base: str, finished: tuple[int, str], running: tuple[int, str]) -> list[str]:
    """Status URLs by file id, uuid and path of the finished and of the running job."""
    urls = []
    for (file_id, uuid), path in ((finished, JOB), (running, RUNNING_JOB)):
        for reference in (str(file_id), uuid, path.lstrip("/")):
            urls.append(f"{base}/api/job-execution/{reference}/status")
    return urls


def _prepare(server: Server) -> tuple[list[str], str, dict[str, str]]:
    """A finished and a running job; the mix of status URLs, the favourable one, the answers."""
    reader = StoreReader(server.database_url)
    with server.client() as client:
        define(client, "workbook", trivial_workbook(JOB))
        if reader.wait_terminal(trigger(client, JOB)) != "COMPLETED":
            raise RuntimeError("the finished job did not complete")
        define(client, "workbook", trivial_workbook(RUNNING_JOB, ENDLESS_SQL))
        running_id = trigger(client, RUNNING_JOB)
        deadline = time.monotonic() + 60
        while reader.status(running_id) != "RUNNING":
            if time.monotonic() > deadline:
                raise RuntimeError("the running job did not start")
            time.sleep(0.01)
        finished = reader.file_ids(JOB)
        urls = _mix(server.base, finished, reader.file_ids(RUNNING_JOB))
        # Every poll of the mix answers as a client expects before the load starts.
        answers = {}
        for url, expected in zip(urls, ["COMPLETED"] * 3 + ["RUNNING"] * 3, strict=True):
            answer = client.get(url)
            if answer.status_code != 200 or answer.json().get("job-status") != expected:
                raise RuntimeError(f"{url} answered {answer.status_code} {answer.text}")
            answers[answer.request.url.path] = answer.text
    reader.close()
    return urls, urls[0], answers


def _cpu(process: psutil.Process) -> float:
    """CPU seconds of the server process itself (not its engine children)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def _children_cpu(process: psutil.Process) -> float:
    """CPU seconds of the server's child processes (the engine's), those alive now."""
    total = 0.0
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def main() -> int:
    """Alternate rounds against the bare app, the FastAPI app and Datamill."""
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--serve", {"choices": ["bare", "fastapi"], "help": "internal: serve a reference"}),
            ("--port", {"type": int, "help": "internal"}),
            ("--answers", {"help": "internal: the bodies a reference answers, by path"}),
            ("--load", {"help": "internal: run the Python load generator against URLs"}),
            ("--seconds", {"type": float, "default": 5.0, "help": "internal"}),
        ],
    )
    if args.serve:
        run_reference(args.serve, args.port, args.answers)
        return 0
    if args.load:
        run_python_load(args.load.split(), args.seconds)
        return 0
    header("api_status", args.quick)
    load = wrk if shutil.which("wrk") else python_load
    print(
        f"load generator: {'wrk' if load is wrk else 'python (wrk not found)'}, "
        f"{CONNECTIONS} connections"
    )
    seconds, rounds = (3.0, 2) if args.quick else (10.0, 3)
    figures: dict[str, list[Load]] = {"bare": [], "fastapi": [], "datamill": [], "by id": []}
    with scratch("status") as folder, serve(folder / "sqlite") as server:
        wait_warm(server)
        mix, favourable, answers = _prepare(server)
        (folder / "answers.json").write_text(json.dumps(answers))
        with (
            reference_server("bare", folder / "answers.json") as (bare_url, bare_pid),
            reference_server("fastapi", folder / "answers.json") as (fastapi_url, fastapi_pid),
        ):
            print("mix: " + ", ".join(url.split("/api/job-execution/", 1)[1] for url in mix))
            references = [url.split("/api/", 1)[1] for url in mix]
            urls = {
                "bare": [f"{bare_url.split('/api/', 1)[0]}/api/{r}" for r in references],
                "fastapi": [f"{fastapi_url.split('/api/', 1)[0]}/api/{r}" for r in references],
                "datamill": mix,
                "by id": [favourable],
            }
            processes = {
                "bare": psutil.Process(bare_pid),
                "fastapi": psutil.Process(fastapi_pid),
                "datamill": psutil.Process(server.process.pid),
                "by id": psutil.Process(server.process.pid),
            }
            sizes = sorted({len(body.encode()) for body in answers.values()})
            print(f"answers: {', '.join(map(str, sizes))} bytes (the references send the same)")
            for each in urls.values():  # warm-up
                load(each, 1.0)
            engine, started = _children_cpu(processes["datamill"]), time.monotonic()
            for round_ in range(rounds):
                for name, each in urls.items():
                    before = _cpu(processes[name])
                    seen = load(each, seconds)
                    used = _cpu(processes[name]) - before
                    seen = dataclasses.replace(seen, cpu=used / max(seen.requests, 1))
                    figures[name].append(seen)
                    print(
                        f"  round {round_ + 1} {name:<8} {seen.rate:8.0f} req/s  "
                        f"p99 {seen.p99 * 1000:.2f} ms  failures {seen.failures}  "
                        f"server CPU {seen.cpu * 1e6:.0f} us/req",
                        flush=True,
                    )
            cores = (_children_cpu(processes["datamill"]) - engine) / (time.monotonic() - started)
            print(f"the running job's engine used {cores:.2f} cores in the rounds (all servers')")
    rates = {k: median([x.rate for x in v]) for k, v in figures.items()}
    p99s = {k: median([x.p99 for x in v]) * 1000 for k, v in figures.items()}
    failures = {k: sum(x.failures for x in v) for k, v in figures.items()}
    cpus = {k: median([x.cpu for x in v]) * 1e6 for k, v in figures.items()}
    met = rates["datamill"] >= 0.5 * rates["bare"] and failures["datamill"] == 0
    bare_rate, bare_p99 = rates["bare"], p99s["bare"]
    summary(
        [
            Result(
                f"datamill status mix req/s ({failures['datamill']} failed)",
                rates["datamill"],
                "req/s",
                bare_rate,
                "bare uvicorn",
                ">= 0.5x bare, 0 failed",
                met,
            ),
            Result(
                "datamill status mix p99",
                p99s["datamill"],
                "ms",
                bare_p99,
                "bare uvicorn",
                "-",
                None,
            ),
            Result(
                f"(info) by id, finished req/s ({failures['by id']} failed)",
                rates["by id"],
                "req/s",
                bare_rate,
                "bare uvicorn",
                "-",
                None,
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
            Result(
                "(info) datamill mix server CPU per request",
                cpus["datamill"],
                "us",
                cpus["bare"],
                "bare uvicorn",
                "-",
                None,
            ),
            Result(
                "(info) by id, server CPU per request",
                cpus["by id"],
                "us",
                cpus["bare"],
                "bare uvicorn",
                "-",
                None,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
