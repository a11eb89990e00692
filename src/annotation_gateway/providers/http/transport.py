"""The providers' own httpx transport, written directly on aiohttp (no adapter library).

Contract:

- :class:`AiohttpTransport` is an ``httpx.AsyncBaseTransport`` (httpx's public extension point):
  httpx builds, authenticates and classifies requests; aiohttp sends them over its pooled
  keep-alive connections (``limits.max_connections`` at most, ``keepalive_expiry`` idle).
  :meth:`AiohttpTransport.exchange` is that one send, for a request given as its method, URL
  string, headers and body; ``handle_async_request`` is it for httpx's client. (The reads' GET
  goes over the providers' own connections instead, :mod:`.connections`, which answer the same
  :class:`Exchange`.)
- Each answer's body is read in **one** aiohttp call before the transport returns, and handed to
  httpx as one ``httpx.ByteStream`` (every provider reads whole bodies); httpx still decodes the
  ``Content-Encoding`` itself (aiohttp's ``auto_decompress`` is off), so the response is the one
  httpx's own transport would give.
- Every aiohttp failure becomes the httpx exception it means (:data:`EXCEPTIONS`, first match
  wins, the aiohttp error kept as ``__cause__``): a refused connect is ``httpx.ConnectError``, a
  connect or pool timeout ``httpx.ConnectTimeout``, a read timeout ``httpx.ReadTimeout``, a
  server that hangs up without answering ``httpx.RemoteProtocolError``, a reset or truncated body
  ``httpx.ReadError``. No other exception type leaves the transport for an aiohttp failure.
- httpx's client jar is the only cookie jar (aiohttp's is a ``DummyCookieJar``); no proxies, no
  environment (``trust_env`` off), no redirects followed (httpx decides, and providers never
  follow).
- The aiohttp session is opened on first use, inside the running event loop, and closed by
  :meth:`aclose` (``httpx.AsyncClient.aclose`` calls it).

Why aiohttp: httpx 0.28's own async transport (httpcore) costs 3-4x the CPU per upstream
request (SPEC §4). Why our own code rather than ``httpx-aiohttp``: its transport streamed each
body in 16 KiB chunks through two async iterators and mapped every aiohttp connection error to
``ConnectTimeout``; the gateway had subclassed it and copied its request method to change both.
Owning these ~100 lines (tested in ``tests/providers/test_transport.py`` against a real socket
server) removes the copied library method and the dependency.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import aiohttp
import httpx

__all__ = ["EXCEPTIONS", "AiohttpTransport", "Exchange", "map_exception"]

EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # connecting, or waiting for the pool
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # no byte within the read timeout
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, unreachable, DNS, TLS handshake
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed without (a whole) answer
    (aiohttp.ClientPayloadError, httpx.ReadError),  # a body cut short or badly chunked
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # a status line or headers that are not HTTP
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),  # reset by peer, any other lost connection
    (aiohttp.ClientError, httpx.TransportError),
)
"""aiohttp exception → the httpx exception raised in its place (in order: the first match wins)."""

HTTP_11 = b"HTTP/1.1"


class Exchange(NamedTuple):
    """One answer as aiohttp read it: what an ``httpx.Response`` is made of."""

    status: int
    reason: str | None
    headers: Sequence[tuple[bytes, bytes]]
    """As received: raw names and values, repeated headers repeated."""
    content: bytes
    """As received (still ``Content-Encoding``-encoded: httpx decodes it)."""

    def extensions(self) -> dict[str, Any]:
        """The response extensions httpx's own transport sets."""
        extensions: dict[str, Any] = {"http_version": HTTP_11}
        if self.reason:
            extensions["reason_phrase"] = self.reason.encode()
        return extensions


def map_exception(exc: Exception) -> httpx.TransportError | None:
    """The httpx exception ``exc`` (an aiohttp failure) means, or None for anything else."""
    for aiohttp_type, httpx_type in EXCEPTIONS:
        if isinstance(exc, aiohttp_type):
            return httpx_type(str(exc) or type(exc).__name__)
    return None


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent through one aiohttp session (see the module docstring)."""

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limits = limits
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context(trust_env=False)
        keepalive = self._limits.keepalive_expiry
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=15.0 if keepalive is None else keepalive,
            ssl=self._ssl_context,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
        )
        return self._session

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
        server_hostname: str | None = None,
    ) -> Exchange:
        """Send one request and read its whole answer: the one aiohttp call of this module.

        ``timeouts`` is httpx's timeout as a dict (``httpx.Timeout.as_dict()``, a request's
        ``timeout`` extension). Raises the httpx exception an aiohttp failure means."""
        session = self._session or self._open()
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
                server_hostname=server_hostname,
            ) as answer:
                content = await answer.read()
        except Exception as exc:
            mapped = map_exception(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return Exchange(answer.status, answer.reason, answer.raw_headers, content)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body: bytes = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        got = await self.exchange(
            request.method,
            str(request.url),
            request.headers.multi_items(),
            body or None,
            request.extensions.get("timeout", {}),
            request.extensions.get("sni_hostname"),
        )
        return httpx.Response(
            status_code=got.status,
            headers=got.headers,
            stream=httpx.ByteStream(got.content),
            request=request,
            extensions=got.extensions(),
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
