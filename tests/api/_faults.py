"""Fault injection for the API tests: a misbehaving loopback upstream and a gateway with short
resilience settings.

- :class:`FaultProxy` is a real HTTP/1.1 server on 127.0.0.1 (raw asyncio streams, in a thread)
  placed in front of a real upstream (Phoenix or the Datadog simulator). With no fault set it
  forwards every request unchanged; with one it misbehaves the way a broken vendor or network
  does: waits too long, resets the connection half-way through the body, sends a truncated JSON
  body, a 200 HTML page, a 5xx, a 429 with rate-limit headers, or a JSON body with a field
  removed, added or of the wrong type. :meth:`FaultProxy.refuse` closes its listening socket (a
  refused connection on the very URL the source is configured with) and :meth:`FaultProxy.accept`
  re-opens it, so a test can watch a source go down and come back.
- :func:`start_gateway` serves ``create_app`` for given source configs with a
  :class:`~annotation_gateway.federation.Federation` built here, so tests choose the circuit
  breaker's threshold and reset timeout and the per-source deadline (the settings file has no
  such knobs); the app's Prometheus metrics still observe it and the federation is closed on the
  server's own event loop at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from annotation_gateway.api.app import create_app
from annotation_gateway.api.routes.metrics import GatewayMetrics
from annotation_gateway.api.serving import ThreadedServer
from annotation_gateway.federation import Federation
from annotation_gateway.providers import AnnotationProvider, build_provider
from annotation_gateway.providers.datadog import DatadogSourceConfig
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.resilience import Clock
from annotation_gateway.settings import CacheConfig, GatewaySettings

__all__ = ["Fault", "FaultProxy", "GatewayHandle", "start_gateway"]

HOP_BY_HOP = frozenset(
    {"host", "connection", "keep-alive", "content-length", "transfer-encoding", "accept-encoding", "te"}
)
MAX_HEAD_BYTES = 64 * 1024
MAX_LATENCY_S = 10.0


@dataclass
class Fault:
    """What the proxy does to the next requests (``times=None``: to every one until cleared).

    kind: ``close`` (read the request, close without a word), ``echo`` (``status``/``headers``
    and ``body`` followed by every request header, credentials included; ``body=b"json"``: a
    JSON error body ``{"errors": [...], "detail": ...}`` made of them), ``latency`` (wait ``latency_s``,
    then forward), ``reset`` (headers and half the body,
    then a TCP RST), ``truncate`` (a complete response whose JSON body is cut in half), ``answer``
    (``status``/``headers``/``body`` instead of the upstream's answer), ``mutate`` (forward, then
    ``mutate`` the parsed JSON body in place before sending it on).
    """

    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    latency_s: float = 0.0
    mutate: Callable[[Any], None] | None = None
    times: int | None = None


class FaultProxy:
    """A loopback HTTP server forwarding to ``upstream`` unless told to fail (module docstring)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self.requests = 0
        """Requests that reached the proxy (faulted or not)."""
        self.faulted = 0
        """Requests answered with a fault."""
        self.errors: list[BaseException] = []
        """Exceptions the proxy itself raised (tests assert there are none)."""
        self._fault: Fault | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control (from the test's thread) ------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._open())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._close(final=True))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def set(self, fault: Fault | None) -> None:
        with self._lock:
            self._fault = fault

    def clear(self) -> None:
        self.set(None)

    def refuse(self) -> None:
        """Close the listening socket: connections to :attr:`base_url` are refused."""
        self._call(self._close(final=False))

    def accept(self) -> None:
        """Listen again on the same port."""
        self._call(self._open())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- the server (on its own loop) ----------------------------------------------------------

    async def _open(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.upstream, trust_env=False, timeout=30)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=MAX_HEAD_BYTES)

    async def _close(self, *, final: bool) -> None:
        if self._server is not None:
            self._server.close()
            # Connections already accepted finish on their own (each carries one request).
            self._server = None
        if final:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    def _take(self) -> Fault | None:
        with self._lock:
            self.requests += 1
            fault = self._fault
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = None
            self.faulted += 1
            return fault

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = [tuple(h.split(":", 1)) for h in header_lines if ":" in h]
            length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
            body = await reader.readexactly(length) if length else b""
            fault = self._take()
            if fault is not None and fault.kind == "close":
                return  # read the request, answer nothing, close the connection
            if fault is not None and fault.kind == "echo":
                # A careless vendor (or a debugging proxy) that echoes the request it got,
                # credentials included, in its error body.
                lines = [f"{k.strip()}: {v.strip()}" for k, v in headers]
                if fault.body == b"json":  # as a well-formed JSON:API / FastAPI error body
                    echoed = orjson.dumps({"errors": lines, "detail": " | ".join(lines)})
                else:
                    echoed = fault.body + "\n".join(lines).encode()
                await self._send(writer, fault.status, list(fault.headers.items()), echoed)
                return
            if fault is not None and fault.kind == "answer":
                await self._send(writer, fault.status, list(fault.headers.items()), fault.body)
                return
            if fault is not None and fault.kind == "latency":
                await asyncio.sleep(min(fault.latency_s, MAX_LATENCY_S))
            status, out_headers, content = await self._forward(method, target, headers, body)
            if fault is None or fault.kind == "latency":
                await self._send(writer, status, out_headers, content)
            elif fault.kind == "reset":
                await self._reset_mid_body(writer, status, out_headers, content)
            elif fault.kind in ("truncate", "mutate") and not _json_success(status, out_headers):
                await self._send(writer, status, out_headers, content)  # only JSON successes change
            elif fault.kind == "truncate":
                await self._send(writer, status, out_headers, content[: max(1, len(content) // 2)])
            elif fault.kind == "mutate":
                assert fault.mutate is not None
                document = orjson.loads(content)
                fault.mutate(document)
                await self._send(writer, status, out_headers, orjson.dumps(document))
            else:
                raise AssertionError(f"unknown fault kind {fault.kind!r}")
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            httpx.TransportError,
        ):
            # The client went away (it timed out while we waited), or the upstream did (the
            # proxy is stopping): nothing to answer, the connection just closes.
            pass
        except Exception as exc:  # a bug here must show, not pass for a vendor fault
            self.errors.append(exc)
            raise
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(
        self, method: str, target: str, headers: Sequence[tuple[str, ...]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._client is not None
        sent = [(k.strip(), v.strip()) for k, v in headers if k.strip().lower() not in HOP_BY_HOP]
        response = await self._client.request(method, target, headers=sent, content=body)
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"
        ]
        return response.status_code, kept, response.content

    @staticmethod
    def _head(status: int, headers: Sequence[tuple[str, str]], length: int) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in HOP_BY_HOP]
        lines += [f"Content-Length: {length}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> None:
        writer.write(self._head(status, headers, len(body)) + body)
        await writer.drain()

    async def _reset_mid_body(
        self, writer: asyncio.StreamWriter, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> None:
        """Promise the whole body, send half of it, then reset the connection (RST, not FIN)."""
        writer.write(self._head(status, headers, len(body)) + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.05)  # let the client read the headers and start on the body
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


def _json_success(status: int, headers: Sequence[tuple[str, str]]) -> bool:
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
    return status == 200 and "json" in ctype


def _reason(status: int) -> str:
    with contextlib.suppress(ValueError):
        from http import HTTPStatus

        return HTTPStatus(status).phrase
    return "Unknown"


# --- a gateway with short resilience settings -----------------------------------------------------


class _ForwardingObserver:
    """The federation's observer, forwarding to the app's metrics once the app exists."""

    def __init__(self) -> None:
        self.target: GatewayMetrics | None = None

    def on_upstream(self, source: str, operation: Any, elapsed_s: float, outcome: str) -> None:
        if self.target is not None:
            self.target.on_upstream(source, operation, elapsed_s, outcome)

    def on_cache(self, source: str, result: Any) -> None:
        if self.target is not None:
            self.target.on_cache(source, result)

    def on_inflight(self, source: str, delta: int) -> None:
        if self.target is not None:
            self.target.on_inflight(source, delta)

    def on_circuit(self, source: str, state: Any) -> None:
        if self.target is not None:
            self.target.on_circuit(source, state)


class _ClosesFederation:
    """ASGI wrapper: closes the federation on the server's loop when the lifespan shuts down."""

    def __init__(self, app: ASGIApp, federation: Federation) -> None:
        self.app = app
        self.federation = federation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def closing_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.federation.aclose()
            await send(message)

        await self.app(scope, receive, closing_send)


@dataclass
class GatewayHandle:
    server: ThreadedServer
    federation: Federation
    providers: list[AnnotationProvider]

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def stop(self) -> None:
        self.server.stop()


def start_gateway(
    settings: GatewaySettings,
    configs: Sequence[PhoenixSourceConfig | DatadogSourceConfig],
    *,
    failure_threshold: int = 1,
    reset_timeout_s: float = 0.5,
    deadline_s: float = 5.0,
    cache: CacheConfig | None = None,
    clock: Clock | None = None,
) -> GatewayHandle:
    """A started gateway over ``configs`` whose breaker opens after ``failure_threshold``
    retryable failures and half-opens after ``reset_timeout_s`` (of ``clock``: a test may pass
    a manual clock to decide when that is, instead of sleeping and racing the server)."""
    providers = [build_provider(config) for config in configs]
    observer = _ForwardingObserver()
    federation = Federation(
        providers,
        cache or settings.cache,
        cursor_secret=secrets.token_bytes(32),
        observer=observer,
        breaker_failure_threshold=failure_threshold,
        breaker_reset_timeout_s=reset_timeout_s,
        source_deadline_s=deadline_s,
        **({"clock": clock} if clock is not None else {}),
    )
    app = create_app(settings, federation=federation)
    observer.target = app.state.metrics
    server = ThreadedServer(_ClosesFederation(app, federation)).start()
    return GatewayHandle(server=server, federation=federation, providers=providers)
