"""A typed, synchronous client for a Datamill (or Datameer X) server, on httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from datamill.client.errors import ApiError, TransportError, api_error
from datamill.client.models import (
    KIND_ROUTES,
    Details,
    Entry,
    Folder,
    HistoryItem,
    Page,
    PlanMember,
    RunningJob,
    Status,
    Triggered,
)
from datamill.client.waiting import DEFAULT_POLL, Poll, ProgressCallback, wait_for_execution
from datamill.domain.status import JobKind

# A file reference (spec §2): a file id, a uuid or an absolute path.
Reference = int | str
DEFAULT_URL = "http://127.0.0.1:8080"


def reference_path(reference: Reference) -> str:
    """A file reference as it goes into a URL: ids and uuids as they are, paths encoded.

    Slashes stay (the routes take raw paths) but the leading one goes, as the
    README's curl lines write them; spaces and other characters are
    percent-encoded, so a `+` in a real name is never read as a space.
    """
    text = str(reference)
    if not text.startswith("/"):
        return quote(text, safe="")
    return quote(text.lstrip("/"), safe="/")


class Client:
    """One server and one user; use as a context manager, or call `close()`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        auth: tuple[str, str] | httpx.Auth | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, auth=auth, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # ------------------------------------------------------------ plumbing

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: str | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send one request; a failure answer raises the matching ApiError."""
        if json_body is not None:
            content = json.dumps(json_body)
        try:
            response = self._http.request(method, path, content=content, **kw)
        except httpx.HTTPError as error:
            raise TransportError(f"cannot reach {self.url}: {error}") from error
        _raise_for_failure(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    # ------------------------------------------------------------ job commands

    def status(self, reference: Reference) -> Status:
        """The newest execution of a job file (never ran: `status` is None)."""
        return Status.from_wire(
            self._json("GET", f"/api/job-execution/{reference_path(reference)}/status")
        )

    def trigger(
        self, reference: Reference, variables: Mapping[str, Any] | None = None
    ) -> Triggered:
        """Queue a run of a job file.

        With `variables` the run is a sequential plan of this one file (the
        only route that takes variables, spec §4.6): the file runs with them,
        and so do the data-driven workbooks downstream of it, which would
        run after it anyway. The answer is then the file's own member.
        """
        if variables:
            first = self.sequential_trigger([reference], variables)[0]
            if first.execution_id is None:
                raise ApiError(first.reason or "the job was not triggered", 200, first.raw)
            return Triggered(first.execution_id, None, "SEQUENTIAL", first.raw)
        return Triggered.from_wire(
            self._json("POST", f"/api/job-execution/{reference_path(reference)}/trigger")
        )

    def sequential_trigger(
        self, references: Sequence[Reference], variables: Mapping[str, Any] | None = None
    ) -> list[PlanMember]:
        """Trigger files and their data-driven downstream as one ordered plan."""
        body: dict[str, Any] = {"fileIds": list(references)}
        if variables:
            body["variables"] = dict(variables)
        answer = self._json("POST", "/api/job-execution/sequential-trigger", json_body=body)
        return [PlanMember.from_wire(m) for m in answer["execution-plan"]]

    def stop(self, reference: Reference) -> None:
        """Stop the file's active execution; returns once it no longer runs."""
        self.request("POST", f"/api/job-execution/{reference_path(reference)}/stop")

    def details(self, execution_id: int) -> Details:
        """Times, status, counts, counters (and failure and warnings) of one execution."""
        body = self._json("GET", f"/rest/job-execution/job-details/{int(execution_id)}")
        return Details.from_wire(int(execution_id), body)

    def history(self, configuration_id: int, start: int = 0, length: int = 10) -> list[HistoryItem]:
        """One page of a job configuration's executions, newest first."""
        body = self._json(
            "GET",
            f"/rest/job-configuration/job-history/{int(configuration_id)}",
            params={"start": start, "length": length},
        )
        return [HistoryItem.from_wire(item) for item in body]

    def iter_history(self, configuration_id: int, page_size: int = 100) -> Iterator[HistoryItem]:
        """Every execution of a job configuration, newest first, page by page."""
        start = 0
        while True:
            page = self.history(configuration_id, start, page_size)
            yield from page
            if len(page) < page_size:
                return
            start += page_size

    def list_running(self) -> list[RunningJob]:
        """Every queued, waiting and running execution the user may read."""
        body = self._json("GET", "/api/job-execution/list-running")
        return [RunningJob.from_wire(item) for item in body]

    def log(self, execution_id: int, since: int | str | None = None) -> list[dict[str, Any]]:
        """The run's log events in order (`seq`, `time`, `event`, details), after `since`."""
        params = {} if since is None else {"since": str(since)}
        body = self._json("GET", f"/api/job-execution/{int(execution_id)}/log", params=params)
        return list(body)

    def lineage(self, execution_id: int) -> dict[str, Any]:
        """What the run read and wrote, and the configuration version it ran."""
        body: dict[str, Any] = self._json("GET", f"/api/job-execution/{int(execution_id)}/lineage")
        return body

    def wait(
        self,
        execution_id: int,
        timeout: float | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        poll: Poll = DEFAULT_POLL,
    ) -> Details:
        """Poll until the execution ends and return its details; WaitTimeout after `timeout` s."""
        return wait_for_execution(self, execution_id, timeout, on_progress, poll)

    # ------------------------------------------------------------ definitions

    def create_job(self, kind: JobKind | str, path: str, definition: Mapping[str, Any]) -> int:
        """Create a job file at `path`; returns its configuration id."""
        document = {**definition, "path": path}
        body = self._json("POST", f"/rest/{_route(kind)}", json_body=document)
        return int(body["configuration-id"])

    def read_job(self, kind: JobKind | str, configuration_id: int) -> dict[str, Any]:
        """A job's document: its definition plus `path`; can be sent back to `update_job`."""
        body: dict[str, Any] = self._json("GET", f"/rest/{_route(kind)}/{int(configuration_id)}")
        return body

    def update_job(
        self, kind: JobKind | str, configuration_id: int, document: Mapping[str, Any]
    ) -> None:
        """Replace a job's definition."""
        self.request(
            "PUT", f"/rest/{_route(kind)}/{int(configuration_id)}", json_body=dict(document)
        )

    def delete_job(self, kind: JobKind | str, configuration_id: int) -> None:
        """Delete a job file and its configuration."""
        self.request("DELETE", f"/rest/{_route(kind)}/{int(configuration_id)}")

    def list_jobs(self, kind: JobKind | str) -> list[dict[str, Any]]:
        """Every job of a kind the user may read: `{"path", "id", ...}`."""
        return list(self._json("GET", f"/rest/{_route(kind)}"))

    # ------------------------------------------------------------ file tree

    def file(self, reference: Reference) -> Entry:
        """A job file (or folder) by id, uuid or path, with its configuration id."""
        path = reference_path(reference)
        return Entry.from_wire(self._json("GET", f"/api/filesystem/files/{path}"))

    def folder(self, reference: Reference | None = None) -> Folder:
        """A folder with the children the user may read; the root if no reference."""
        if reference is None or str(reference) in ("", "/"):
            return Folder.from_wire(self._json("GET", "/api/filesystem/root-folder"))
        path = reference_path(reference)
        return Folder.from_wire(self._json("GET", f"/api/filesystem/folders/{path}"))

    # ------------------------------------------------------------ data

    def list_data(self, kind: JobKind | str, configuration_id: int) -> list[dict[str, Any]]:
        """Stored results of an import job or workbook, newest first (spec §6)."""
        return list(self._json("GET", f"/rest/data/{_route(kind)}/{int(configuration_id)}"))

    def iter_download(
        self, kind: JobKind | str, configuration_id: int, sheet: str | None = None
    ) -> Iterator[bytes]:
        """The newest data of an import job, or of a workbook's kept sheet, as CSV chunks."""
        kind = JobKind(kind)
        if kind is JobKind.IMPORT:
            url = f"/rest/data/import-job/{int(configuration_id)}/download"
        elif kind is JobKind.WORKBOOK and sheet:
            url = f"/rest/data/workbook/{int(configuration_id)}/{quote(sheet, safe='')}/download"
        else:
            raise ValueError("data comes from an import job, or a workbook's kept sheet")
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_failure(response)
                yield from response.iter_bytes()
        except httpx.HTTPError as error:
            raise TransportError(f"cannot reach {self.url}: {error}") from error

    def download(
        self, kind: JobKind | str, configuration_id: int, target: Path, sheet: str | None = None
    ) -> int:
        """Write the newest data as CSV to `target`; returns the bytes written."""
        written = 0
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as out:
            for chunk in self.iter_download(kind, configuration_id, sheet):
                out.write(chunk)
                written += len(chunk)
        partial.replace(target)
        return written

    def delete_data(self, data_id: int) -> bool:
        """Mark a data result for deletion: True now, False if it already was."""
        return bool(self._json("DELETE", f"/rest/data/{int(data_id)}")["status"])

    # ------------------------------------------------------------ users

    def users(self, max_results: int = 10, start_index: int = 0) -> Page:
        """One page of users (ADMIN)."""
        params = {"maxResults": max_results, "startIndex": start_index}
        return Page.from_wire(self._json("GET", "/rest/user-management/users", params=params))

    def user(self, name: str) -> dict[str, Any]:
        """One user: `{"username", "email", "groups", "roles"}`."""
        body: dict[str, Any] = self._json("GET", f"/rest/user-management/users/{_name(name)}")
        return body

    def add_user(
        self,
        name: str,
        password: str,
        *,
        email: str | None = None,
        groups: Sequence[str] = (),
        roles: Sequence[str] | None = None,
    ) -> None:
        """Create a user (ADMIN); roles default to the server's (ANALYST)."""
        body: dict[str, Any] = {"name": name, "password": password, "groups": list(groups)}
        if email is not None:
            body["email"] = email
        if roles is not None:
            body["roles"] = list(roles)
        self.request("POST", "/rest/user-management/users", json_body=body)

    def set_password(self, name: str, password: str) -> None:
        """Change a password (one's own, or anyone's as ADMIN)."""
        self.request("PUT", f"/rest/user-management/password/{_name(name)}", content=password)

    def delete_user(self, name: str) -> None:
        """Delete a user (ADMIN); their files go to the caller."""
        self.request("DELETE", f"/rest/user-management/users/{_name(name)}")


def _route(kind: JobKind | str) -> str:
    return KIND_ROUTES[JobKind(kind)]


def _name(name: str) -> str:
    # A `+` in a user name is a plus sign (docs/users.md), so encode everything.
    return quote(name, safe="")


def _raise_for_failure(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    raise api_error(response.status_code, body, response.text)
