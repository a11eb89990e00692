"""uvicorn's HTTP protocol with a deadline on reading a request's head (slow-header defence), and
each response's head written together with its first body bytes.

Contract: :func:`header_deadline_protocol` returns a subclass of uvicorn's httptools protocol,
passed to uvicorn as ``http=``. Each connection must finish a request's line and headers within
``header_timeout_s`` of the request's first byte — and send a first byte within
``header_timeout_s`` of connecting (checked by one sweep per event loop, every quarter of the
timeout and at most every second, so a head is cut off at most that much after its deadline).
A connection that sent part of a request head in time is answered ``408`` (problem+json,
``connection: close``) and closed; one that sent nothing is closed silently (browsers open spare
connections they may never use). Bodies, the app's own time and idle keep-alive connections are
not affected (uvicorn's ``timeout_keep_alive`` closes the latter).

The protocol writes through a :class:`CoalescingTransport`: a write of at most
:data:`HOLD_BYTES` (a response's head, a short chunk) waits for the next write, and the two go
out in one ``writev`` — or for the end of the event loop's current turn, when nothing follows it
there. Bytes keep their order; ``close()`` sends what is held first, ``abort()`` drops it.

Why: uvicorn arms no timer between accepting a connection and the end of the request's headers,
so a client sending one header byte every few seconds held a connection — and its memory and
file descriptor — for as long as it liked (200 of them were all held). nginx's
``client_header_timeout`` and Apache's ``mod_reqtimeout`` are the same defence; behind such a
proxy this one is a second line. And uvicorn writes a response's head and its body in two
``write`` calls, each a system call and a TCP segment of its own: on a cache hit (a 69 KB page)
the head's alone was ~20 % of the CPU py-spy saw; one ``writev`` for both made a hit 7 % cheaper
(0.098 → 0.091 ms of CPU, alternated). aiohttp's server and client coalesce a head with its body the
same way (aio-libs/aiohttp#10991).

This subclasses uvicorn's protocol class and extends four of its callbacks, each calling the
original (``connection_made`` hands it the coalescing transport); it assigns no attribute of
uvicorn's (its own are ``_head_since`` and ``_head_started``). uvicorn is pinned to a minor
version in ``pyproject.toml`` and ``tests/api/test_slow_clients.py`` drives the real server with
raw sockets, so an upgrade that changes these callbacks fails the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from annotation_gateway.errors import RequestTimeoutError

__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "HOLD_BYTES", "CoalescingTransport", "header_deadline_protocol"]

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
            super().connection_made(CoalescingTransport(transport, self.loop))
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


HOLD_BYTES = 4096
"""A write this short waits to go out with the next one (a response head is ~200-600 bytes)."""

_Data = bytes | bytearray | memoryview


class CoalescingTransport(asyncio.Transport):
    """A transport whose short writes wait for the next write, or for the end of the event
    loop's current turn, and then go out with it in one ``writelines`` (see the module
    docstring). Everything else is the wrapped transport's."""

    __slots__ = ("_flush", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: _Data) -> None:
        held = self._held
        if held is not None:
            self._release()
            self._transport.writelines((held, data))
        elif len(data) > HOLD_BYTES:
            self._transport.write(data)
        elif data:
            # bytes as they are; another buffer is copied (its owner may reuse it).
            self._held = data if type(data) is bytes else bytes(data)
            self._flush = self._loop.call_soon(self._send_held)

    def writelines(self, list_of_data: Iterable[_Data]) -> None:
        held = self._held
        if held is not None:
            self._release()
            self._transport.writelines((held, *list_of_data))
        else:
            self._transport.writelines(list_of_data)

    def _release(self) -> None:
        self._held = None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def _send_held(self) -> None:
        """Send what is held now (the end of the loop's turn, close, EOF); never to a closing
        transport. Cancelling the pending call, when this is it, is harmless."""
        held = self._held
        self._release()
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def abort(self) -> None:
        self._release()
        self._transport.abort()

    def write_eof(self) -> None:
        self._send_held()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
