"""uvicorn's HTTP protocol with a deadline on reading a request's head (slow-header defence).

Contract: :func:`header_deadline_protocol` returns a subclass of uvicorn's httptools protocol,
passed to uvicorn as ``http=``. Each connection must finish a request's line and headers within
``header_timeout_s`` of the request's first byte — and send a first byte within
``header_timeout_s`` of connecting. A connection that sent part of a request head in time is
answered ``408`` (problem+json, ``connection: close``) and closed; one that sent nothing is
closed silently (browsers open spare connections they may never use). Bodies, the app's own
time and idle keep-alive connections are not affected (uvicorn's ``timeout_keep_alive`` closes
the latter).

Why: uvicorn arms no timer between accepting a connection and the end of the request's headers,
so a client sending one header byte every few seconds held a connection — and its memory and
file descriptor — for as long as it liked (200 of them were all held). nginx's
``client_header_timeout`` and Apache's ``mod_reqtimeout`` are the same defence; behind such a
proxy this one is a second line.

This subclasses uvicorn's protocol class and extends four of its callbacks, each calling the
original; it assigns no private attribute. uvicorn is pinned to a minor version in
``pyproject.toml`` and ``tests/api/test_slow_clients.py`` drives the real server with raw
sockets, so an upgrade that changes these callbacks fails the suite.
"""

from __future__ import annotations

import asyncio

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

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _head_started = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_started = True
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._head_started = False
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _head_timed_out(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self._head_started:
                self.transport.write(_RESPONSE_408)
            self.transport.close()

    return HeaderDeadlineProtocol
