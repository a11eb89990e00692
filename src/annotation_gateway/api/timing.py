"""The outermost ASGI middleware: ``Server-Timing``, request metrics and the last-resort 500.

Contract:
- every HTTP response carries ``Server-Timing``: one ``src-<source>;dur=<ms>`` entry per source
  the request involved (recorded by the route with :func:`record_source_timing`; a cached or
  skipped source says so in ``desc``), then ``gateway;dur=<ms>`` — the gateway's own time, i.e. the
  wall time of the request minus the slowest source (sources run concurrently, so the slowest is
  what the caller waited for upstream);
- the request counter (by route template, method and status), the duration histogram and the
  in-flight gauge of :class:`~annotation_gateway.api.routes.metrics.GatewayMetrics` are updated;
  the route label is the matched route's template (``/v1/annotations``), never the raw path, so a
  client cannot create label values (or smuggle a secret into one);
- an exception that escapes the app before the response started becomes a 500
  ``internal_error`` problem here (logged server-side with its traceback, never sent).

It is a pure ASGI middleware rather than ``BaseHTTPMiddleware``: the latter runs the app in a
separate task and copies each body chunk through a stream, which costs more than a cached query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any, Protocol

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from annotation_gateway.errors import GatewayError

__all__ = ["TIMINGS_STATE_KEY", "RequestObserver", "ServerTimingMiddleware", "record_source_timing"]

log = logging.getLogger(__name__)

TIMINGS_STATE_KEY = "server_timing"
UNMATCHED_ROUTE = "<unmatched>"


class RequestObserver(Protocol):
    """What the middleware reports each request to (the metrics)."""

    def request_started(self) -> None: ...

    def request_finished(self, route: str, method: str, status: int, seconds: float) -> None: ...


def record_source_timing(scope: Scope, source: str, elapsed_ms: float, desc: str | None = None) -> None:
    """Add a ``src-<source>`` entry to this request's ``Server-Timing`` (``scope`` = the request's
    ASGI scope; nothing when the request did not come through the middleware). The entries are
    read from the scope's state dict directly: going through ``request.state`` costs a ``State``
    object and a ``__getattr__`` per call, measurable on a cache hit."""
    state: dict[str, Any] = scope.get("state") or {}
    timings: list[tuple[str, float, str | None]] | None = state.get(TIMINGS_STATE_KEY)
    if timings is not None:
        timings.append((source, elapsed_ms, desc))


def _header(timings: list[tuple[str, float, str | None]], total_ms: float) -> bytes:
    parts: list[str] = []
    slowest = 0.0
    for source, ms, desc in timings:
        slowest = max(slowest, ms)
        # Source names match [a-z0-9._-]+ (settings), all valid token characters for the header.
        entry = f"src-{source};dur={ms:.1f}"
        if desc:
            entry += f';desc="{desc}"'
        parts.append(entry)
    parts.append(f"gateway;dur={max(0.0, total_ms - slowest):.1f}")
    return ", ".join(parts).encode("latin-1")


_INTERNAL_ERROR_BODY = orjson.dumps(GatewayError("internal error").problem())


class ServerTimingMiddleware:
    """Adds ``Server-Timing``, reports metrics, and turns escaped exceptions into a 500 problem."""

    def __init__(self, app: ASGIApp, observer: RequestObserver | None = None) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        timings: list[tuple[str, float, str | None]] = []
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state[TIMINGS_STATE_KEY] = timings
        status = 500
        started = False
        observer = self.observer
        if observer is not None:
            observer.request_started()

        async def send_with_timing(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                total_ms = (time.perf_counter() - start) * 1000.0
                headers = list(message.get("headers", ()))
                headers.append((b"server-timing", _header(timings, total_ms)))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        except Exception as exc:
            log.error("unexpected error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if started:
                # Headers are gone; the server will cut the connection, which the client sees.
                raise
            status = 500
            await send_with_timing(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(_INTERNAL_ERROR_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _INTERNAL_ERROR_BODY})
        finally:
            if observer is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or UNMATCHED_ROUTE
                observer.request_finished(
                    template, scope.get("method", ""), status, time.perf_counter() - start
                )
