"""A client of a ScriptHut portal's JSON API, for the remote ``scripthut`` command and for
notebooks and scripts::

    from scripthut_site.client import Client

    hut = Client("https://hut.example.org", token)
    run = hut.run("workflow.json", backend="hpc")  # a path, a JSON text, a list or a dict
    hut.wait(run["id"])
    print(hut.logs(run["id"], "sim.1"))

Reads (GET) are retried on connection errors, with backoff. A POST is never sent twice
unless it carries an ``Idempotency-Key``: every run-creating call sends one (a fresh UUID
unless given), so it is retried too and the portal answers a retry with the run the first
attempt created. Every failure is a :class:`ClientError` with one line to show and the exit
code of the ``scripthut`` command (see EXIT_*).
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_NOT_ALLOWED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
FINISHED = ("completed", "failed", "cancelled")
RETRIES = 4  # after the first try
BACKOFF_SECONDS = 0.5  # doubled after each failed try


class ClientError(Exception):
    """What went wrong, in one line, and the exit code that says so."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.problems = problems or []


def _exit_code(status: int) -> int:
    return EXIT_NOT_ALLOWED if status in (401, 403) else EXIT_INVALID if status < 500 else EXIT_UNREACHABLE


def _problem_lines(body: Any) -> list[str]:
    problems = body.get("problems", []) if isinstance(body, dict) else []
    lines = []
    for problem in problems:
        where = f"task {problem['task']!r}: " if problem.get("task") else ""
        field = f"{problem['field']}: " if problem.get("field") and not problem.get("task") else ""
        lines.append(f"{where}{field}{problem.get('message', '')}")
    return lines


def _workflow_body(workflow: Any) -> Any:
    """A workflow as the API takes it: a file's path, a JSON text, or the tasks themselves."""
    if isinstance(workflow, Path) or (isinstance(workflow, str) and not workflow.lstrip().startswith(("[", "{"))):
        try:
            workflow = Path(workflow).read_text()
        except OSError as exc:
            raise ClientError(f"cannot read {workflow}: {exc.strerror or exc}") from None
    if isinstance(workflow, str):
        try:
            return json.loads(workflow)
        except ValueError as exc:
            raise ClientError(f"the workflow is not valid JSON: {exc}") from None
    return workflow


class Client:
    """The JSON API of the portal at ``url``, as the owner of ``token``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = RETRIES,
        backoff: float = BACKOFF_SECONDS,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        try:
            self.http = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Token {token}", "Accept": "application/json"},
                timeout=timeout,
                verify=verify,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ClientError(f"{url!r} is not a portal URL: {exc}") from None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; retried with backoff on connection errors when it is safe to repeat."""
        headers = kwargs.get("headers") or {}
        repeatable = method == "GET" or "Idempotency-Key" in headers
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return self.http.request(method, "/api" + path, **kwargs)
            except httpx.TransportError as exc:
                if not repeatable or attempt == self.retries or isinstance(exc, httpx.UnsupportedProtocol):
                    raise self._transport_error(exc) from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _transport_error(self, exc: httpx.TransportError) -> ClientError:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLError):
                reason = getattr(cause, "reason", None) or cause
                return ClientError(f"TLS error talking to {self.url}: {reason}", EXIT_UNREACHABLE)
            cause = cause.__cause__ or cause.__context__
        if isinstance(exc, httpx.UnsupportedProtocol):
            return ClientError(f"{self.url!r} is not a portal URL: use http:// or https://", EXIT_INVALID)
        if isinstance(exc, httpx.ConnectError):
            return ClientError(f"cannot reach the portal at {self.url}: {exc}", EXIT_UNREACHABLE)
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(f"the portal at {self.url} did not answer in time", EXIT_UNREACHABLE)
        return ClientError(f"lost the connection to the portal at {self.url}: {exc}", EXIT_UNREACHABLE)

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and body is not None:
            return body
        if isinstance(body, dict) and "error" in body:
            raise ClientError(str(body["error"]), _exit_code(response.status_code), _problem_lines(body))
        if response.status_code in (404, 405) or response.is_redirect or (response.is_success and body is None):
            raise ClientError(
                f"{self.url} does not look like a ScriptHut portal (HTTP {response.status_code} from "
                f"{response.request.url.path})",
                EXIT_INVALID,
            )
        raise ClientError(f"the portal at {self.url} answered HTTP {response.status_code}", EXIT_UNREACHABLE)

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self._send("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, body: Any = None, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json(self._send("POST", path, json=body if body is not None else {}, headers=headers))

    # -- what the portal offers ----------------------------------------------------------

    def me(self) -> Any:
        return self.get("/me")

    def backends(self) -> Any:
        return self.get("/backends")

    def sources(self) -> Any:
        return self.get("/sources")

    def workflows(self) -> Any:
        return self.get("/workflows")

    def sync(self, source: str) -> Any:
        try:
            return self.post(f"/sources/{quote(source, safe='')}/sync")
        except ClientError as exc:  # a failed sync answers 502 with the source and why
            raise ClientError(f"sync of {source} failed: {exc}", EXIT_FAILED) from None

    def runs(self, status: str | None = None, limit: int = 50) -> Any:
        return self.get("/runs", status=status, limit=limit)

    def status(self, run_id: str, limit: int = 1000) -> Any:
        return self.get(f"/runs/{quote(run_id, safe='')}", limit=limit)

    def run(
        self,
        workflow: Any,
        *,
        backend: str,
        name: str | None = None,
        max_concurrent: int | None = None,
        notify: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Start a run of a workflow document (a file's path, JSON text, or the tasks)."""
        if name is None and isinstance(workflow, str | Path) and not str(workflow).lstrip().startswith(("[", "{")):
            name = Path(workflow).stem
        body: dict[str, Any] = {"backend": backend, "workflow": _workflow_body(workflow)}
        body |= {k: v for k, v in (("name", name), ("max_concurrent", max_concurrent), ("notify", notify)) if v}
        return self.post("/runs", body, idempotency_key or str(uuid.uuid4()))

    def run_source(self, source: str, file: str, **options: Any) -> Any:
        body = {"file": file} | {k: v for k, v in options.items() if k != "idempotency_key" and v}
        key = options.get("idempotency_key") or str(uuid.uuid4())
        return self.post(f"/sources/{quote(source, safe='')}/runs", body, key)

    def run_workflow(self, name: str, **options: Any) -> Any:
        body = {k: v for k, v in options.items() if k != "idempotency_key" and v}
        key = options.get("idempotency_key") or str(uuid.uuid4())
        return self.post(f"/workflows/{quote(name, safe='')}/runs", body, key)

    def dry_run(self, workflow: Any, *, backend: str) -> Any:
        return self.post("/runs/dry-run", {"backend": backend, "workflow": _workflow_body(workflow)})

    def cancel(self, run_id: str, task_id: str | None = None) -> Any:
        path = f"/runs/{quote(run_id, safe='')}"
        return self.post(f"{path}/tasks/{quote(task_id, safe='')}/cancel" if task_id else f"{path}/cancel")

    def relaunch(self, run_id: str) -> Any:
        return self.post(f"/runs/{quote(run_id, safe='')}/relaunch")

    def task(self, run_id: str, task_id: str) -> Any:
        return self.get(f"/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}")

    def wait(
        self, run_id: str, *, poll: float = 2.0, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> Any:
        """Poll the run until it has finished; returns it (with its first tasks)."""
        while True:
            run = self.status(run_id)
            if on_progress:
                on_progress(run)
            if run["status"] in FINISHED:
                return run
            time.sleep(poll)

    def logs(self, run_id: str, task_id: str, stream: str = "output", tail: int | None = None) -> str:
        """A task's log (output or error), its last ``tail`` lines if given."""
        path = f"/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}/logs/{stream}"
        response = self._send("GET", path, params={"tail": tail} if tail else {})
        if response.is_success and response.headers.get("content-type", "").startswith("text/plain"):
            return response.text
        self._json(response)
        raise ClientError(f"the portal at {self.url} did not answer with a log", EXIT_UNREACHABLE)

    def follow(self, run_id: str, task_id: str, stream: str = "output") -> Iterator[str]:
        """The log as it grows (Server-Sent Events), until the task has ended."""
        path = f"/api/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}/logs/{stream}/follow"
        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None)) as response:
                if not response.is_success:
                    response.read()
                    self._json(response)
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "log":
                        yield json.loads(line.removeprefix("data: "))["text"]
                    elif line.startswith("data: ") and event == "end":
                        return
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
