"""uvicorn's HTTP protocol with a deadline on reading a request's head (slow-header defence).

Contract: :func:`header_deadline_protocol` returns a subclass of uvicorn's httptools protocol,
passed to uvicorn as ``http=``. Each connection must finish a request's line and headers within
``header_timeout_s`` of the request's first byte — and send a first byte within
``header_timeout_s`` of connecting (checked by one sweep per event loop, every quarter of the
timeout and at most every second, so a head is cut off at most that much after its deadline).
A connection that sent part of a request head in time is answered ``408`` (problem+json,
``connection: close``) and closed; one that sent nothing is closed silently (browsers open spare
connections they may never use). Bodies, the app's own time and idle keep-alive connections are
not affected (uvicorn's ``timeout_keep_alive`` closes the latter).

Why: uvicorn arms no timer between accepting a connection and the end of the request's headers,
so a client sending one header byte every few seconds held a connection — and its memory and
file descriptor — for as long as it liked (200 of them were all held). nginx's
``client_header_timeout`` and Apache's ``mod_reqtimeout`` are the same defence; behind such a
proxy this one is a second line.

This subclasses uvicorn's protocol class and extends four of its callbacks, each calling the
original; it assigns no attribute of uvicorn's (its own are ``_head_since`` and
``_head_started``). uvicorn is pinned to a minor version in ``pyproject.toml`` and
``tests/api/test_slow_clients.py`` drives the real server with raw sockets, so an upgrade that
changes these callbacks fails the suite.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from annotation_gateway.errors import RequestTimeoutError

__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "header_deadline_protocol"]

DEFAULT_HEADER_TIMEOUT_S = 10.0
"""Seconds to send a request's line and headers (nginx's default is 60; Apache's 20-40).
Real clients send a head in one packet, in milliseconds."""

_PROBLEM = orjson.dumps(
    RequestTimeoutError("the request's line and headers did not arrive in time").problem()
)
_RESPONSE_408 = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_PROBLEM)).encode("ascii") + b"\r\n"
    b"connection: close\r\n\r\n" + _PROBLEM
)


def header_deadline_protocol(header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a ``header_timeout_s`` deadline on each request head."""
    if header_timeout_s <= 0:
        raise ValueError("header_timeout_s must be positive")
    sweep_every = min(1.0, header_timeout_s / 4)

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        # A timer per request (call_later + cancel) cost ~4 % of a cache hit, and cancelled
        # timers pile up in the loop's heap at thousands of requests a second. Instead each
        # connection notes when its pending head began, and one sweep per event loop, every
        # ``sweep_every`` seconds while any head is pending, cuts off the late ones.
        _pending: ClassVar[dict[asyncio.AbstractEventLoop, set[HeaderDeadlineProtocol]]] = {}
        _sweeping: ClassVar[set[asyncio.AbstractEventLoop]] = set()
        _head_since: float | None = None
        _head_started = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_started = True
            if self._head_since is None:
                self._watch()

        def on_headers_complete(self) -> None:
            self._unwatch()
            self._head_started = False
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._unwatch()
            super().connection_lost(exc)

        def _watch(self) -> None:
            loop = self.loop
            self._head_since = loop.time()
            self._pending.setdefault(loop, set()).add(self)
            if loop not in self._sweeping:
                self._sweeping.add(loop)
                loop.call_later(sweep_every, self._sweep, loop)

        def _unwatch(self) -> None:
            if self._head_since is not None:
                self._head_since = None
                pending = self._pending.get(self.loop)
                if pending is not None:
                    pending.discard(self)

        @classmethod
        def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
            pending = cls._pending.get(loop, set())
            now = loop.time()
            for protocol in [
                p for p in pending if p._head_since is not None and now - p._head_since >= header_timeout_s
            ]:
                protocol._head_timed_out()
            if pending:
                loop.call_later(sweep_every, cls._sweep, loop)
            else:
                cls._sweeping.discard(loop)
                cls._pending.pop(loop, None)

        def _head_timed_out(self) -> None:
            self._unwatch()
            if self.transport.is_closing():
                return
            if self._head_started:
                self.transport.write(_RESPONSE_408)
            self.transport.close()

    return HeaderDeadlineProtocol
