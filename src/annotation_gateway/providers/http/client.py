"""One source's HTTP client: the pool, the request builder, one send, and what a body is.

Contract:

- :func:`make_client` builds the one shared ``httpx.AsyncClient`` of a source: explicit timeouts
  and pool limits, no environment, no redirects, and the providers' own aiohttp transport
  (:mod:`.transport`) unless a test passes its own (respx intercepts with
  ``respx.mock(using="httpx")``, whatever the transport); with that transport, also the reads'
  own HTTP/1.1 connections (:mod:`.connections`), which :func:`get` sends through.
- The client's cookie jar only looks at answers that set a cookie: :class:`SourceClient`
  overrides httpx's public ``cookies`` property with a :class:`SetCookieOnlyJar`. httpx runs
  every answer through ``http.cookiejar`` by way of two compatibility wrappers (a ``urllib``
  request that parses the URL again and an ``email`` message of all the headers): 24-33 µs per
  answer measured (``Cookies.extract_cookies`` on a 6-header answer to a short / a 100-id URL,
  Python 3.11, httpx 0.28.1), ~3 % of a cache miss's CPU, for answers that carry no
  ``Set-Cookie`` and so store nothing; the header check costs 1.6 µs. Cookies that *are* set are
  kept exactly as httpx keeps them. ``tests/providers/test_fences.py`` fails if an httpx release
  stops reading the jar through the property.
- :func:`get_request` builds a GET with query parameters at under half httpx's cost.
- :func:`send` sends one request and reads the whole body; transport failures become
  ``SourceError``s (``raise ... from exc``, one table: :func:`transport_error`) whose messages
  name the method and path, never a header. A body that echoes one of the request's credentials
  comes back with it redacted. The *status* is classified by the caller, through
  :mod:`.outcomes`. :func:`get` is ``send(get_request(...))``: the same answer and errors, sent
  straight through the providers' transport when httpx's client has nothing to add (the reads'
  hot path). :func:`get_decoded` is :func:`get` for a read page: a 200 JSON answer that an
  ``httpx.Response`` would change nothing in goes to the caller's decoder as bytes, without one.
- :func:`is_json` / :func:`parse_json`: what counts as a JSON answer, and its parse or a
  ``SourceProtocolError`` saying why not.
- :func:`chunk_values` splits id lists so that URLs stay within a vendor's length limit.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote_plus

import httpx
import orjson

from annotation_gateway.errors import (
    SourceError,
    SourceProtocolError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from annotation_gateway.providers.http.connections import ConnectionPool
from annotation_gateway.providers.http.transport import AiohttpTransport, Exchange

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT_S",
    "DirectResponse",
    "QueryParams",
    "SetCookieOnlyJar",
    "SourceClient",
    "chunk_values",
    "encode_query",
    "get",
    "get_decoded",
    "get_request",
    "is_json",
    "make_client",
    "param_len",
    "parse_json",
    "send",
    "transport_error",
]

log = logging.getLogger(__name__)

D = TypeVar("D")

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_CONNECTIONS = 32
KEEPALIVE_EXPIRY_S = 30.0
"""How long an idle upstream connection is kept (httpx's pool and the reads' own alike)."""


def chunk_values(
    values: Sequence[str], cost: Sequence[int], *, budget: int, max_count: int | None = None
) -> list[list[str]]:
    """Split ``values``, in order, into runs of at most ``max_count`` whose ``cost`` sums stay ≤ ``budget``.

    For keeping request URLs (ids as query parameters) within a length limit. A value costlier than
    ``budget`` on its own still gets a run of its own; ``max_count=None`` means no count limit.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for value, size in zip(values, cost, strict=True):
        full = max_count is not None and len(current) >= max_count
        if current and (full or used + size > budget):
            chunks.append(current)
            current, used = [], 0
        current.append(value)
        used += size
    if current:
        chunks.append(current)
    return chunks


class SetCookieOnlyJar(httpx.Cookies):
    """httpx's cookie jar, which only looks at answers that set a cookie (module docstring)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class SourceClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose ``cookies`` (a public property) is a :class:`SetCookieOnlyJar`,
    and which holds the reads' own connections (``direct``: what :func:`get` sends through) when
    it is on the providers' transport; closing the client closes them."""

    def __init__(self, *, direct: ConnectionPool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = SetCookieOnlyJar(kwargs.get("cookies"))
        self.direct = direct

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self.direct is not None:
                await self.direct.aclose()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = SetCookieOnlyJar(cookies)


def make_client(
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The shared connection pool of one source."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    direct = None
    if transport is None:
        transport = AiohttpTransport(limits=limits)
        direct = ConnectionPool(max_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY_S)
    return SourceClient(
        base_url=base_url,
        headers=dict(headers or {}),
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
        limits=limits,
        transport=transport,
        direct=direct,
        trust_env=False,
        follow_redirects=False,
    )


QueryParams = Sequence[tuple[str, str | int | float | bool | None]]
"""Query parameters in order, keys repeated."""


def _query_value(value: str | int | float | bool | None) -> str:
    # As httpx writes them: booleans in lower case, None as the empty string.
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
"""What ``quote_plus`` leaves as it is: most ids, names and numbers."""


def _quote(text: str) -> str:
    # urllib's quote_plus encodes byte by byte in Python (~1.5-3 µs an id); a string of
    # unreserved characters only - nearly every id - is its own encoding (one regex in C). A
    # 10,000-id search encodes each id two or three times (URL budgets, then every page's URL).
    return text if _UNRESERVED.fullmatch(text) else quote_plus(text)


def encode_query(params: QueryParams) -> str:
    """``params`` as a URL query, byte for byte what ``urlencode`` (and so httpx) writes."""
    return "&".join(f"{_quote(key)}={_quote(_query_value(value))}" for key, value in params)


def param_len(key: str, value: str) -> int:
    """Bytes ``key=value`` takes in a query :func:`encode_query` writes (without the ``&``)."""
    return len(_quote(key)) + 1 + len(_quote(value))


def get_request(client: httpx.AsyncClient, path: str, params: QueryParams) -> httpx.Request:
    """The GET of ``path`` (relative to the client's ``base_url``) with ``params``: the same
    request as ``client.build_request("GET", path, params=params)``, at under half its cost.

    httpx parses and re-validates the whole URL character by character when it merges a
    relative path and a parameter list into its base URL (~80 µs for a short query, more with
    every id); here the query is encoded once by :func:`encode_query` — exactly as httpx encodes
    parameters — and the absolute URL parsed once.
    """
    return client.build_request("GET", _absolute_url(client, path, params))


def _absolute_url(client: httpx.AsyncClient, path: str, params: QueryParams) -> str:
    """``path`` under the client's ``base_url`` with ``params`` as its query, as a string."""
    query = encode_query(params)
    url = f"{str(client.base_url).rstrip('/')}/{path.lstrip('/')}"
    return f"{url}?{query}" if query else url


async def send(client: httpx.AsyncClient, request: httpx.Request, *, source: str) -> httpx.Response:
    """Send ``request`` and read the whole body; transport failures become ``SourceError``s.

    The error messages name the method and path but never headers, so credentials cannot leak.
    """
    try:
        response = await client.send(request)
        await response.aread()
    except httpx.TransportError as exc:
        raise transport_error(exc, where=f"{request.method} {request.url.path}", source=source) from exc
    await _release(response)
    return _without_credentials(response, request.headers.multi_items(), source=source)


async def get(client: httpx.AsyncClient, path: str, params: QueryParams, *, source: str) -> httpx.Response:
    """``send(client, get_request(client, path, params))``, without httpx's client when it adds
    nothing: the same answer, at ~60 % of the CPU.

    httpx's client is skipped when the client is a :class:`SourceClient` on the providers' own
    transport (what :func:`make_client` builds unless a test gives another) with an empty cookie
    jar (a client that holds cookies sends them through httpx). Per request, httpx builds and
    parses the URL (~65 µs with five ids), runs its auth, redirect and hook machinery and wraps
    the body in two streams (~130 µs); here the URL is written as :func:`get_request` writes it,
    the request goes out with the client's headers and timeouts over the reads' own connections
    (:class:`~annotation_gateway.providers.http.connections.ConnectionPool`, ~35 µs a GET where
    aiohttp's client took ~95), and the answer is a :class:`DirectResponse`, decoded and read as
    httpx reads it, through the client's cookie jar like every answer. Measured against a local
    server (a 50-row page, five ids), CPU a retrying GET: 513 → 250-305 µs through aiohttp's
    client. ``tests/providers/test_direct_get.py`` holds the two ways to the same requests on the
    wire and the same responses and errors (error messages name httpx's exception, not the
    client's beneath it).
    """
    return await _get(client, path, params, None, source=source)


async def get_decoded(
    client: httpx.AsyncClient,
    path: str,
    params: QueryParams,
    decode: Callable[[bytes], D | None],
    *,
    source: str,
    max_bytes: int | None = None,
) -> D | httpx.Response:
    """:func:`get`, with a 200 JSON answer handed to ``decode`` straight from its bytes when
    httpx's response would add nothing to it: no ``Content-Encoding`` to undo, no cookie to
    store, none of the request's credentials echoed in it, at most ``max_bytes`` long (a caller
    that decodes large answers elsewhere, off the event loop, says so). ``decode`` returns what
    the bytes mean, or None when it cannot say (an answer of another shape); that answer, and
    every other, comes back as the ``httpx.Response`` :func:`get` gives.

    The reads' pages are such answers: building and reading an ``httpx.Response`` for one cost
    ~35 µs of a ~250 µs GET (measured against a local server, a 50-row page).
    """
    return await _get(client, path, params, decode, source=source, max_bytes=max_bytes)


async def _get(
    client: httpx.AsyncClient,
    path: str,
    params: QueryParams,
    decode: Callable[[bytes], D | None] | None,
    *,
    source: str,
    max_bytes: int | None = None,
) -> D | httpx.Response:
    """:func:`get_decoded`; with no ``decode``, :func:`get`."""
    direct = client.direct if isinstance(client, SourceClient) else None
    if direct is None or client.cookies:
        return await send(client, get_request(client, path, params), source=source)
    url = _absolute_url(client, path, params)
    headers = client.headers.multi_items()
    try:
        exchange = await direct.get(url, headers, client.timeout.as_dict())
    except httpx.TransportError as exc:
        raise transport_error(exc, where=f"GET {httpx.URL(url).path}", source=source) from exc
    content = exchange.content
    if (
        decode is not None
        and (max_bytes is None or len(content) <= max_bytes)
        and _plain_json(exchange)
        and not _echoed(content, headers)
    ):
        decoded = decode(content)
        if decoded is not None:
            return decoded
    response = DirectResponse(exchange, "GET", url, headers)
    response.read()  # decodes Content-Encoding as httpx does; nothing to wait for
    client.cookies.extract_cookies(response)
    return _without_credentials(response, headers, source=source)


_NOT_PLAIN = frozenset({b"content-encoding", b"set-cookie", b"set-cookie2"})


def _plain_json(exchange: Exchange) -> bool:
    """A 200 answer whose bytes are its JSON as they are (see :func:`get_decoded`): one JSON
    content type (:func:`is_json`'s rule), nothing to decode, no cookie."""
    if exchange.status != 200:
        return False
    ctype: bytes | None = None
    for name, value in exchange.headers:
        lowered = name.lower()
        if lowered == b"content-type":
            if ctype is not None:
                return False  # repeated: httpx would join them
            ctype = value.split(b";", 1)[0].strip().lower()
        elif lowered in _NOT_PLAIN:
            return False
    return ctype is not None and _is_json_type(ctype.decode("latin-1"))


def _echoed(content: bytes, headers: list[tuple[str, str]]) -> bool:
    """Whether ``content`` holds one of the credentials sent with ``headers``."""
    return any(c in content for c in _credentials(tuple(headers)))


class DirectResponse(httpx.Response):
    """An answer :func:`get` read without httpx's client: its ``request`` (an ``httpx.Request``,
    ~45 µs to build, its URL parsed character by character) is made when something reads it —
    an error message naming the path, a cookie being stored — not for every answer."""

    def __init__(self, exchange: Exchange, method: str, url: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(
            exchange.status,
            headers=exchange.headers,
            stream=httpx.ByteStream(exchange.content),
            extensions=exchange.extensions(),
        )
        self._sent = (method, url, headers)
        self._made: httpx.Request | None = None

    @property
    def request(self) -> httpx.Request:
        if self._made is None:
            method, url, headers = self._sent
            self._made = httpx.Request(method, url, headers=headers)
        return self._made

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._made = value


def transport_error(exc: httpx.TransportError, *, where: str, source: str) -> SourceError:
    """The ``SourceError`` a transport failure of the request ``where`` (method and path) is.
    Its message names httpx's exception only: the one beneath it (aiohttp's or the OS's) stays
    in the cause chain, so the reads' own connections and httpx's way give the same words."""
    if isinstance(exc, httpx.TimeoutException):
        return SourceTimeoutError(f"{source}: no answer to {where} in time", source=source)
    if isinstance(exc, httpx.ConnectError) and _is_refused(exc):
        return SourceUnavailableError(f"{source}: connection refused on {where}", source=source)
    failed = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return SourceUnavailableError(f"{source}: connection failed on {where}: {failed}", source=source)
    return SourceUnavailableError(f"{source}: transport error on {where}: {failed}", source=source)


async def _release(response: httpx.Response) -> None:
    """Break the reference cycle httpx 0.28 puts every response in, once its body is read.

    httpx's client wraps each body in a stream that points back at its response (to set
    ``elapsed`` when it closes: encode/httpx#3733), so a response — and its whole body — is
    freed only by the cyclic garbage collector, not when the last reference goes. With pages
    decoded into untracked msgspec Structs the collector runs rarely, and the cold export of
    1,000,000 annotations grew the RSS by 117 MiB instead of 52 (responses of 1 MB waiting for
    a collection). Once the body is read and the response closed (which sets ``elapsed``;
    ``aclose`` does nothing more when ``aread`` already closed it), the response gets a plain
    stream of its content — the public ``stream`` attribute, the stream httpx itself gives a
    response built from bytes. ``tests/providers/test_fences.py`` checks that a response is
    freed as soon as it is dropped, and pins the cycle.
    """
    await response.aclose()
    response.stream = httpx.ByteStream(response.content)


def _is_refused(exc: BaseException) -> bool:
    """True when a ``ConnectionRefusedError`` is in the cause chain (aiohttp's connector error
    wraps it), so a disconnect after connecting is not reported as "refused"."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ConnectionRefusedError):
            return True
        current = current.__cause__
        seen += 1
    return False


CREDENTIAL_HEADER_WORDS = ("authorization", "key", "token", "secret")
"""A request header whose name contains one of these carries a credential."""
REDACTED = b"[redacted]"
MIN_CREDENTIAL_CHARS = 8
"""Shorter header values (a scheme name, a flag) are not searched for."""
CREDENTIAL_SETS_REMEMBERED = 64
"""Header sets whose credentials are remembered (about one a source)."""


@functools.lru_cache(maxsize=CREDENTIAL_SETS_REMEMBERED)
def _credentials(headers: tuple[tuple[str, str], ...]) -> tuple[bytes, ...]:
    """The credential values among the ``headers`` a request was sent with: whole header values
    and, for ``Authorization: <scheme> <token>``, the token alone; longest first.

    Remembered per header set (a source sends the same headers with every request: working them
    out cost ~35 µs an answer)."""
    found: set[bytes] = set()
    for name, value in headers:
        if not any(word in name.lower() for word in CREDENTIAL_HEADER_WORDS):
            continue
        whole = value.strip()
        token = whole.partition(" ")[2].strip()
        found.update(v.encode() for v in (whole, token) if len(v) >= MIN_CREDENTIAL_CHARS)
    return tuple(sorted(found, key=len, reverse=True))


def _without_credentials(
    response: httpx.Response, headers: Sequence[tuple[str, str]], *, source: str
) -> httpx.Response:
    """``response``, with any credential its request was sent with (``headers``) it echoes
    replaced by ``[redacted]``.

    A vendor (or a proxy in front of it) may echo the request, headers included, in an error
    page; its text reaches problem details, health reports and logs, so the credentials would
    leave the gateway with it (SPEC §3: never in a response, a log line or a metric). A search
    for a few short byte strings in the body costs microseconds next to parsing it."""
    content = response.content
    leaked = [c for c in _credentials(tuple(headers)) if c in content]
    if not leaked:
        return response
    for credential in leaked:
        content = content.replace(credential, REDACTED)
    log.warning("a source echoed the gateway's credentials in its answer; redacted", extra={"source": source})
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=content,
        request=response.request,
        extensions=response.extensions,
    )


def is_json(response: httpx.Response) -> bool:
    """True for ``application/json`` and ``application/*+json`` (problem+json, vnd.api+json)."""
    return _is_json_type(response.headers.get("content-type", "").split(";", 1)[0].strip().lower())


def _is_json_type(ctype: str) -> bool:
    """A media type (lower case, no parameters) :func:`is_json` takes for JSON."""
    return ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))


def parse_json(response: httpx.Response, *, source: str) -> Any:
    """Parse a JSON body or raise ``SourceProtocolError`` saying why."""
    if not is_json(response):
        ctype = response.headers.get("content-type", "none")
        raise SourceProtocolError(
            f"{source}: expected JSON but got {ctype!r} (HTTP {response.status_code})",
            source=source,
            upstream_status=response.status_code,
        )
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise SourceProtocolError(
            f"{source}: malformed JSON body (HTTP {response.status_code}): {exc}",
            source=source,
            upstream_status=response.status_code,
        ) from exc
