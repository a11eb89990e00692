"""The reads' GET over the gateway's own HTTP/1.1 keep-alive connections.

Contract:

- :meth:`ConnectionPool.get` sends a GET and reads its whole answer as the providers' aiohttp
  transport (:mod:`.transport`, which httpx's client sends everything else through) would: the
  same request on the wire — the request line and ``Host`` as aiohttp writes them (yarl's URL),
  then the given headers in order — and the same
  :class:`~annotation_gateway.providers.http.transport.Exchange` back (status, reason, headers as
  received, the body de-chunked and still ``Content-Encoding``-encoded).
- Every failure is the httpx exception aiohttp's would be mapped to: a refused or unreachable
  connect, or a failed TLS handshake, is ``httpx.ConnectError`` (the OS's error as its cause);
  no connection within the ``connect`` timeout, or no free one within ``pool``,
  ``httpx.ConnectTimeout``; no byte for the ``read`` timeout, ``httpx.ReadTimeout``; a server that
  hangs up before a whole answer's head, or answers something that is not HTTP/1.x,
  ``httpx.RemoteProtocolError``; a connection reset, or a body cut short, ``httpx.ReadError``.
- Connections are kept per origin (scheme, host, port), at most ``max_connections`` open in all;
  a request past it waits for one to be released (within the ``pool`` timeout), closing an idle
  connection of another origin when there is one. An idle connection is used again, newest
  first, within ``keepalive_expiry`` of the injected clock and closed after it. An answer that
  does not keep its connection alive (``Connection: close``, HTTP/1.0) closes it; so does a
  request cancelled mid-exchange (its state is unknown). A kept connection that the server closed
  meanwhile is tried again once, on a new connection, when no byte of an answer came (a GET is
  idempotent).
- ``https`` is TLS with the given context (the server's name checked), by default httpx's.
  No proxies, no redirects (the providers never follow one), no HTTP/2; GET only.

Why not aiohttp's client here: per request it builds a ``ClientRequest`` and a
``ClientResponse``, merges headers into multidicts and runs its trace, timer and payload
machinery — 90-106 µs of CPU a GET, against 31-40 µs for a protocol that writes the request in
one call and feeds the answer to httptools' parser (llhttp, the one uvicorn uses), measured alone
against a local server answering 30 KB (two GETs at a time, 4,000 GETs). Two such GETs are a
cache miss's upstream calls: served, the bench's miss went 0.964 → 0.836 ms of CPU. The parsing
is the library's; what is owned here is the pool, the request's head and the error table,
tested against real socket servers (``tests/providers/test_connections.py``) and, for parity
with aiohttp's way on the same requests and failures, ``tests/providers/test_direct_get.py``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import httptools
import httpx
from yarl import URL

from annotation_gateway.providers.http.transport import Exchange

__all__ = ["ConnectionPool"]

_Origin = tuple[str, str, int]
_SCHEMES = frozenset({"http", "https"})


class _Lost(Exception):
    """The connection ended before its answer did."""

    def __init__(self, reason: str, *, answered: bool, in_body: bool, cause: BaseException | None) -> None:
        super().__init__(reason)
        self.answered = answered
        """Whether a byte of an answer came (a request with none may be sent again)."""
        self.in_body = in_body
        """Whether the answer's head had come whole (its body was cut short)."""
        self.cause = cause


class _Connection(asyncio.Protocol):
    """One connection: one exchange at a time, its answer fed to httptools' parser."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        """Taken from the idle connections (the server may have closed it meanwhile)."""
        self.idle_since = 0.0
        self.last_read = 0.0
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Exchange] | None = None
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._status = 0
        self._head_done = False
        self._answered = False
        self._keep_alive = False
        self._read_timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- one exchange -------------------------------------------------------------------------

    def send(self, request: bytes, read_timeout: float | None) -> asyncio.Future[Exchange]:
        """Write ``request``; the future is its answer (or why there is none): a
        ``httpx.ReadTimeout`` when no byte came for ``read_timeout`` seconds."""
        self._waiter = waiter = self._loop.create_future()
        self._forget_answer()
        self._status, self._answered, self._keep_alive = 0, False, False
        self.last_read = self._loop.time()
        cast(asyncio.Transport, self.transport).write(request)
        if read_timeout is not None:
            self._read_timeout = read_timeout
            self._timer = self._loop.call_at(self.last_read + read_timeout, self._check_read)
        return waiter

    def _check_read(self) -> None:
        # One timer per exchange, moved on only when it fires (not at every read). A method,
        # not a closure: a closure that schedules itself is a reference cycle, and each one
        # held its exchange's answer until the cyclic collector ran (the cold export of
        # 1,000,000 annotations grew the RSS by 254 MiB instead of 11).
        self._timer = None
        if self._waiter is None:
            return
        due = self.last_read + self._read_timeout
        if self._loop.time() >= due:
            self.fail(httpx.ReadTimeout(f"no byte of the answer for {self._read_timeout} s"))
        else:
            self._timer = self._loop.call_at(due, self._check_read)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reusable(self) -> bool:
        """Whether the last exchange ended with the connection fit for another."""
        return self._waiter is None and self._keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def fail(self, error: Exception) -> None:
        """End the exchange with ``error`` (its cause already set, or carried by a ``_Lost``)
        and close."""
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass

    def data_received(self, data: bytes) -> None:
        self.last_read = self._loop.time()
        if self._waiter is None:
            self.close()  # bytes no request asked for: the connection cannot be trusted again
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            error = httpx.RemoteProtocolError("the server switched protocols")
            error.__cause__ = exc
            self.fail(error)
        except httptools.HttpParserError as exc:
            error = httpx.RemoteProtocolError(f"the answer is not HTTP/1.x: {exc}")
            error.__cause__ = exc
            self.fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self._head_done and not self._length_given():
            self._complete()  # an answer whose body ends with its connection
            return
        if not self._answered:
            reason = "the server closed the connection without answering"
        elif not self._head_done:
            reason = "the server closed the connection in the middle of the answer's head"
        else:
            reason = "the connection closed before the end of the answer's body"
        self.fail(_Lost(reason, answered=self._answered, in_body=self._head_done, cause=exc))

    # --- httptools' callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:  # an answer after the answer, in the same read: nobody asked
            self.close()

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._forget_answer()
            return
        self._complete()

    def _complete(self) -> None:
        self._stop_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        exchange = Exchange(self._status, self._reason.decode("latin-1") or None, self._headers, body)
        self._forget_answer()  # an idle connection holds nothing of its last answer (megabytes)
        waiter.set_result(exchange)

    def _forget_answer(self) -> None:
        self._reason, self._headers, self._body, self._head_done = b"", [], [], False

    def _length_given(self) -> bool:
        """Whether the answer said where its body ends (else the connection's end does)."""
        return self._status in (204, 304) or any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers
        )


class ConnectionPool:
    """GETs over kept-alive HTTP/1.1 connections (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._clock = clock
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open = 0
        """Connections open (idle or in an exchange) or being opened."""
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def get(
        self, url: str, headers: Sequence[tuple[str, str]], timeouts: Mapping[str, float | None]
    ) -> Exchange:
        """GET ``url`` with ``headers``; the whole answer. ``timeouts`` is httpx's timeout as a
        dict (``httpx.Timeout.as_dict()``: ``connect``, ``read`` and ``pool`` are used). Raises
        httpx's exceptions (module docstring)."""
        origin, request = _request(url, headers)
        for attempt in (1, 2):
            connection = await self._acquire(origin, timeouts)
            try:
                exchange = await connection.send(request, timeouts.get("read"))
            except _Lost as lost:
                self._release(connection)
                if attempt == 1 and connection.reused and not lost.answered:
                    continue  # a kept connection the server had closed: once more, on a new one
                raise _lost_error(lost) from lost.cause
            except BaseException:
                connection.close()  # cancelled or failed mid-exchange: its state is unknown
                self._release(connection)
                raise
            self._release(connection)
            return exchange
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close the idle connections; those in an exchange close when it ends."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                self._drop(connection)
        self._idle.clear()
        self._wake()

    # --- the pool -----------------------------------------------------------------------------

    async def _acquire(self, origin: _Origin, timeouts: Mapping[str, float | None]) -> _Connection:
        connection = self._idle_connection(origin)
        if connection is not None:
            return connection
        if self._open >= self._max:
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    while self._open >= self._max:
                        if self._close_any_idle():
                            continue
                        await self._wait_for_release()
                        connection = self._idle_connection(origin)
                        if connection is not None:
                            return connection
            except TimeoutError as exc:
                raise httpx.ConnectTimeout("no connection was free in time") from exc
        self._open += 1
        try:
            return await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = self._clock()
        while idle:
            connection = idle.pop()
            if connection.closed or now - connection.idle_since > self._expiry:
                self._drop(connection)
                continue
            connection.reused = True
            return connection
        return None

    def _close_any_idle(self) -> bool:
        """Close the idle connection kept longest (of any origin): False if there is none."""
        oldest: list[_Connection] | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].idle_since < oldest[0].idle_since):
                oldest = connections
        if oldest is None:
            return False
        self._drop(oldest.pop(0))
        return True

    async def _wait_for_release(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken, but leaving: the release goes to the next in line
            raise

    def _wake(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, connection: _Connection) -> None:
        if connection.reusable() and not self._closed:
            connection.idle_since = self._clock()
            self._idle.setdefault(connection.origin, []).append(connection)
        else:
            self._drop(connection)
        self._wake()

    def _drop(self, connection: _Connection) -> None:
        """Close ``connection`` and stop counting it."""
        connection.close()
        self._open -= 1

    async def _connect(self, origin: _Origin, connect_s: float | None) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context(trust_env=False)
            context = self._ssl_context
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, origin), host, port, ssl=context
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
        except OSError as exc:  # refused, unreachable, an unknown name, a TLS handshake (SSLError)
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection


def _request(url: str, headers: Sequence[tuple[str, str]]) -> tuple[_Origin, bytes]:
    """The origin of ``url`` and the GET's head, as aiohttp writes it (yarl re-quotes the query
    as httpx and aiohttp both do; ``Host`` carries the port unless it is the scheme's own)."""
    parsed = URL(url)  # yarl keeps its parses: a polled URL is parsed once
    scheme, host, port, authority = parsed.scheme, parsed.raw_host, parsed.port, parsed.host_port_subcomponent
    if scheme not in _SCHEMES:
        raise httpx.UnsupportedProtocol(f"unsupported protocol {scheme!r} in {url!r}")
    if not host or port is None or authority is None:
        raise httpx.UnsupportedProtocol(f"no host in {url!r}")
    lines = [f"GET {parsed.raw_path_qs} HTTP/1.1\r\nHost: {authority}\r\n"]
    for name, value in headers:
        if not name or any(c in name for c in ":\r\n") or "\r" in value or "\n" in value:
            raise httpx.LocalProtocolError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return (scheme, host, port), "".join(lines).encode()


def _lost_error(lost: _Lost) -> httpx.TransportError:
    """A connection reset, or a body cut short, is a read error; a clean close before a whole
    head a protocol error — as aiohttp's ``ClientOSError`` / ``ClientPayloadError`` against
    ``ServerDisconnectedError`` are mapped."""
    if isinstance(lost.cause, OSError) or lost.in_body:
        return httpx.ReadError(str(lost))
    return httpx.RemoteProtocolError(str(lost))
