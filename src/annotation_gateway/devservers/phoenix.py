"""A real local Arize Phoenix server, and a seeder that fills it through Phoenix's own REST API.

Contract of :class:`PhoenixServer`:

- it runs Phoenix from its own virtual environment (:func:`phoenix_python`: ``$PHOENIX_PYTHON``,
  else ``<repo>/.venv-phoenix/bin/python``, which ``make phoenix`` creates) as a child process in a
  process group of its own;
- every listener is on 127.0.0.1: HTTP through ``PHOENIX_HOST``; the OTLP gRPC listener, which
  Phoenix binds to ``[::]`` whatever ``PHOENIX_HOST`` says, through a ``python -c`` bootstrap that
  rewrites grpc's ``add_insecure_port``/``add_secure_port`` addresses to 127.0.0.1 before
  ``phoenix.server.main`` runs;
- free ports picked on 127.0.0.1, its own temporary ``PHOENIX_WORKING_DIR`` (SQLite inside),
  telemetry and outbound calls off; inherited ``PHOENIX_*``/``OTEL_*`` variables are dropped so
  a developer's own Phoenix settings cannot leak in;
- ``start()`` returns once ``GET /arize_phoenix_version`` answers (13-19 s on a 2-core machine)
  or raises :class:`PhoenixStartError` with the tail of Phoenix's log; ``stop()`` terminates the
  process group, waits for it, and removes the temporary directory; both are idempotent;
- with ``auth=True``: ``PHOENIX_ENABLE_AUTH``, a random ``PHOENIX_SECRET`` and
  ``PHOENIX_ADMIN_SECRET`` (``admin_secret``), from which :meth:`create_system_api_key` mints keys.

:class:`PhoenixSeeder` is a small synchronous client for test data: projects, spans (with
``session.id``), and session/trace/span annotations written with ``sync=true``. It deliberately
does not use the gateway's provider, so tests can check the provider against data it did not write.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import httpx

__all__ = [
    "PhoenixNotInstalledError",
    "PhoenixSeeder",
    "PhoenixServer",
    "PhoenixStartError",
    "phoenix_python",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = "127.0.0.1"
LOG_TAIL_LINES = 40
STOP_GRACE_S = 15.0
READY_POLL_S = 0.25
SPAN_BATCH_SIZE = 1000
SPAN_RESEND_AFTER_S = 15.0
"""Seconds without a newly stored span after which the missing ones are posted again."""
ANNOTATION_BATCH_SIZE = 1000

# Run as `python -c BOOTSTRAP`: force every gRPC listener onto loopback, then start Phoenix.
# Phoenix calls server.add_insecure_port(f"[::]:{port}") (phoenix/server/grpc_server.py), which
# would expose the OTLP receiver on every interface.
BOOTSTRAP = r"""
import sys

def _loopback(address):
    for prefix in ("[::]:", "0.0.0.0:", "[::0]:", "[0:0:0:0:0:0:0:0]:"):
        if address.startswith(prefix):
            return "127.0.0.1:" + address[len(prefix):]
    return address

def _patch(cls, name):
    original = getattr(cls, name)
    def bind(self, address, *args, **kwargs):
        return original(self, _loopback(address), *args, **kwargs)
    setattr(cls, name, bind)

from grpc import _server as _sync_server
from grpc.aio import _server as _aio_server

for _cls in (_sync_server._Server, _aio_server.Server):
    _patch(_cls, "add_insecure_port")
    _patch(_cls, "add_secure_port")

sys.argv = ["phoenix", "serve"]
from phoenix.server.main import main
main()
"""


class PhoenixStartError(RuntimeError):
    """Phoenix could not be started; the message carries the tail of its log."""


class PhoenixNotInstalledError(PhoenixStartError):
    """Phoenix's own Python environment is missing."""


def phoenix_python() -> str:
    """The Python interpreter of Phoenix's environment: ``$PHOENIX_PYTHON`` or the repo's venv."""
    configured = os.environ.get("PHOENIX_PYTHON")
    candidate = Path(configured) if configured else REPO_ROOT / ".venv-phoenix" / "bin" / "python"
    if not candidate.exists():
        origin = "PHOENIX_PYTHON" if configured else "the default location"
        raise PhoenixNotInstalledError(
            f"Phoenix's Python not found at {candidate} ({origin}): run `make phoenix` to create "
            "the Phoenix environment, or set PHOENIX_PYTHON to a Python with arize-phoenix installed"
        )
    return str(candidate)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _random_secret() -> str:
    # Phoenix wants >= 32 characters with digits and lower case; upper case too for good measure.
    return f"Gw{secrets.token_hex(24)}7q"


def _clean_environ() -> dict[str, str]:
    """The parent's environment without anything that configures Phoenix or OpenTelemetry."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PHOENIX_", "OTEL_")) and key not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }


class PhoenixServer:
    """A real Phoenix on loopback, for tests, the demo and benchmarks. Use as a context manager."""

    def __init__(
        self,
        *,
        python: str | None = None,
        auth: bool = False,
        port: int | None = None,
        grpc_port: int | None = None,
        working_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self._python = python
        self.auth = auth
        self._fixed_ports = port is not None and grpc_port is not None
        self.port = port if port is not None else free_port()
        self.grpc_port = grpc_port if grpc_port is not None else free_port()
        self._given_working_dir = working_dir
        self._given_log_path = log_path
        self._tmp: Path | None = None
        self.working_dir: Path | None = working_dir
        self.log_path: Path | None = log_path
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.admin_secret: str | None = _random_secret() if auth else None
        self._secret: str | None = _random_secret() if auth else None
        self.version: str | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> None:
        """Spawn Phoenix without waiting for it (``start`` waits); lets callers overlap startups."""
        if self._proc is not None:
            return
        python = self._python or phoenix_python()
        if self._given_working_dir is None or self._given_log_path is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="gw-phoenix-"))
        self.working_dir = self._given_working_dir or (self._tmp_dir() / "data")
        self.working_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._given_log_path or (self._tmp_dir() / "phoenix.log")
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [python, "-c", BOOTSTRAP],
            env=self._environ(),
            cwd=str(self.working_dir),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every child
        )
        atexit.register(self.stop)

    def start(self, timeout_s: float = 120.0) -> None:
        """Start Phoenix (if not already launched) and wait until it answers."""
        try:
            self.launch()
            self._wait_ready(timeout_s)
        except PhoenixNotInstalledError:
            raise
        except PhoenixStartError as exc:
            tail = self.log_tail()
            self.stop()
            if not self._fixed_ports and "address already in use" in tail.lower():
                # Another process took a port between free_port() and Phoenix binding it.
                self.port, self.grpc_port = free_port(), free_port()
                self._proc = None
                self.launch()
                self._wait_ready(timeout_s)
                return
            raise PhoenixStartError(f"{exc}\n--- last lines of Phoenix's log ---\n{tail}") from exc

    def stop(self) -> None:
        """Terminate Phoenix's process group, wait for it, and remove the temporary directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=STOP_GRACE_S)
            # Children left behind in the group (none expected) go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> PhoenixServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of Phoenix's log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # --- auth ---------------------------------------------------------------------------------

    def create_system_api_key(self, name: str = "gateway") -> str:
        """Mint a system API key with the admin secret (auth mode only)."""
        if self.admin_secret is None:
            raise RuntimeError("create_system_api_key needs a server started with auth=True")
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=30.0) as client:
            response = client.post(
                "/v1/system/api_keys",
                json={"data": {"name": name, "description": "annotation-gateway dev server"}},
                headers={"Authorization": f"Bearer {self.admin_secret}"},
            )
        if response.status_code != 201:
            raise RuntimeError(
                f"creating a system API key failed: HTTP {response.status_code} {response.text[:200]}"
            )
        key: str = response.json()["data"]["key"]
        return key

    # --- internals ----------------------------------------------------------------------------

    def _tmp_dir(self) -> Path:
        assert self._tmp is not None
        return self._tmp

    def _environ(self) -> dict[str, str]:
        assert self.working_dir is not None
        env = _clean_environ()
        env.update(
            {
                "PHOENIX_HOST": LOOPBACK,
                "PHOENIX_PORT": str(self.port),
                "PHOENIX_GRPC_PORT": str(self.grpc_port),
                "PHOENIX_WORKING_DIR": str(self.working_dir),
                "PHOENIX_TELEMETRY_ENABLED": "false",
                "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
                "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
                "PHOENIX_ENABLE_PROMETHEUS": "false",
                "PHOENIX_LOG_MIGRATIONS": "false",  # keeps the log tail in start errors readable
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.auth:
            assert self._secret is not None
            assert self.admin_secret is not None
            env["PHOENIX_ENABLE_AUTH"] = "true"
            env["PHOENIX_SECRET"] = self._secret
            env["PHOENIX_ADMIN_SECRET"] = self.admin_secret
        return env

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=2.0) as client:
            while True:
                proc = self._proc
                if proc is None:
                    raise PhoenixStartError("Phoenix was stopped while starting")
                code = proc.poll()
                if code is not None:
                    raise PhoenixStartError(f"Phoenix exited with code {code} while starting")
                try:
                    response = client.get("/arize_phoenix_version")
                    if response.status_code == 200:
                        self.version = response.text.strip()
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise PhoenixStartError(f"Phoenix did not answer on {self.base_url} in {timeout_s:.0f} s")
                time.sleep(READY_POLL_S)


# --- seeding -----------------------------------------------------------------------------------


def new_trace_id() -> str:
    """A random 32-hex-digit OpenTelemetry trace id."""
    return secrets.token_hex(16)


def new_span_id() -> str:
    """A random 16-hex-digit OpenTelemetry span id."""
    return secrets.token_hex(8)


class PhoenixSeeder:
    """Seeds a Phoenix through its own REST API (synchronous; for tests, demo and benchmarks)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PhoenixSeeder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def span(
        *,
        trace_id: str,
        span_id: str,
        session_id: str | None = None,
        name: str = "turn",
        parent_id: str | None = None,
        start_time: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One span in the shape ``POST /v1/projects/{p}/spans`` takes."""
        start = start_time or datetime.now(UTC)
        attrs: dict[str, Any] = {"input.value": f"input of {name}", "output.value": "output"}
        if session_id is not None:
            attrs["session.id"] = session_id
        attrs.update(attributes or {})
        return {
            "name": name,
            "context": {"trace_id": trace_id, "span_id": span_id},
            "span_kind": "CHAIN",
            "parent_id": parent_id,
            "start_time": start.isoformat(),
            "end_time": (start + timedelta(milliseconds=500)).isoformat(),
            "status_code": "OK",
            "status_message": "",
            "attributes": attrs,
            "events": [],
        }

    def create_project(self, name: str, description: str | None = None) -> dict[str, Any]:
        """Create a project; returns Phoenix's ``{name, description, id}``."""
        response = self._client.post("/v1/projects", json={"name": name, "description": description})
        data: dict[str, Any] = self._ok(response, "create project")["data"]
        return data

    def add_spans(
        self,
        project: str,
        spans: Sequence[Mapping[str, Any]],
        *,
        wait: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        """Post spans in batches; with ``wait``, return only once Phoenix has stored all of them.

        Phoenix queues posted spans (202) and inserts them later; annotations on a session or trace
        that is not stored yet are refused, so seeding must wait.
        """
        self._post_spans(project, spans)
        if wait:
            by_id = {str(span["context"]["span_id"]): span for span in spans}
            self._wait_for_spans(project, by_id, timeout_s)

    def _post_spans(self, project: str, spans: Sequence[Mapping[str, Any]]) -> None:
        path = f"/v1/projects/{quote(project, safe='')}/spans"
        for batch in _batches(spans, SPAN_BATCH_SIZE):
            self._ok(self._client.post(path, json={"data": list(batch)}), "add spans")

    def span_ids(self, project: str) -> set[str]:
        """Every span id stored in ``project``."""
        seen: set[str] = set()
        cursor: str | None = None
        path = f"/v1/projects/{quote(project, safe='')}/spans"
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            body = self._ok(self._client.get(path, params=params), "list spans")
            seen.update(str(span["context"]["span_id"]) for span in body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return seen

    def annotate_sessions(
        self, annotations: Sequence[Mapping[str, Any]], *, batch_size: int = ANNOTATION_BATCH_SIZE
    ) -> list[str]:
        """Upsert session annotations (Phoenix's wire shape) with ``sync=true``; their GlobalIDs."""
        return self._annotate("/v1/session_annotations", annotations, batch_size)

    def annotate_traces(
        self, annotations: Sequence[Mapping[str, Any]], *, batch_size: int = ANNOTATION_BATCH_SIZE
    ) -> list[str]:
        """Upsert trace annotations (Phoenix's wire shape) with ``sync=true``; their GlobalIDs."""
        return self._annotate("/v1/trace_annotations", annotations, batch_size)

    def annotate_spans(
        self, annotations: Sequence[Mapping[str, Any]], *, batch_size: int = ANNOTATION_BATCH_SIZE
    ) -> list[str]:
        """Upsert span annotations (Phoenix's wire shape) with ``sync=true``; their GlobalIDs."""
        return self._annotate("/v1/span_annotations", annotations, batch_size)

    # --- internals ----------------------------------------------------------------------------

    def _annotate(self, path: str, annotations: Sequence[Mapping[str, Any]], batch_size: int) -> list[str]:
        ids: list[str] = []
        for batch in _batches(annotations, batch_size):
            response = self._client.post(path, params={"sync": "true"}, json={"data": list(batch)})
            ids.extend(str(row["id"]) for row in self._ok(response, f"POST {path}")["data"])
        return ids

    def _wait_for_spans(
        self, project: str, expected: Mapping[str, Mapping[str, Any]], timeout_s: float
    ) -> None:
        """Until every span of ``expected`` (by id) is stored. Spans still missing after
        ``SPAN_RESEND_AFTER_S`` without progress are posted again (a fresh-clone CI run once
        saw Phoenix store 900 of 1,000 queued spans and never the rest): re-posting a span that
        was not stored is harmless."""
        deadline = time.monotonic() + timeout_s
        stalled_since = time.monotonic()
        stored = 0
        while True:
            missing = expected.keys() - self.span_ids(project)
            if not missing:
                return
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"Phoenix stored {len(expected) - len(missing)}/{len(expected)} spans")
            if len(expected) - len(missing) > stored:
                stored, stalled_since = len(expected) - len(missing), now
            elif now - stalled_since > SPAN_RESEND_AFTER_S:
                log.warning(
                    "Phoenix stored %d/%d spans and no more since; posting the rest again",
                    stored,
                    len(expected),
                )
                self._post_spans(project, [expected[span_id] for span_id in sorted(missing)])
                stalled_since = now
            time.sleep(0.1)

    @staticmethod
    def _ok(response: httpx.Response, what: str) -> Any:
        if response.status_code >= 300:
            raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


if __name__ == "__main__":  # pragma: no cover - manual use: `python -m annotation_gateway.devservers.phoenix`
    with PhoenixServer(auth="--auth" in sys.argv) as server:
        print(f"Phoenix {server.version} on {server.base_url} (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
