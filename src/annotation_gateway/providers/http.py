"""Vendor-neutral HTTP plumbing shared by the provider adapters.

- :func:`make_client` builds the one shared ``httpx.AsyncClient`` of a source: explicit timeouts
  and pool limits, with aiohttp underneath (``httpx-aiohttp``) because httpx's own async
  transport costs 3-4x the CPU per request (SPEC §4). Tests may pass their own ``transport``;
  respx intercepts with ``respx.mock(using="httpx")``, which works whatever the transport.
- :func:`send` sends one request and translates transport failures into ``SourceError``s
  (``raise ... from exc``); the caller classifies the *response* by status and content type.
  A body that echoes one of the request's credentials comes back with it redacted.
- :class:`RetryPolicy` / :func:`send_idempotent` retry only idempotent reads, only on retryable
  errors (connect errors, resets, timeouts, 5xx, 429), honouring the vendor's requested wait
  (capped) and otherwise backing off exponentially with full jitter (tenacity).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from annotation_gateway.errors import (
    SourceError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceTimeoutError,
    SourceUnavailableError,
)

__all__ = [
    "RetryPolicy",
    "chunk_values",
    "get_request",
    "is_json",
    "make_client",
    "parse_json",
    "send",
    "send_idempotent",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_CONNECTIONS = 32


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
        keepalive_expiry=30.0,
    )
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0))
    if transport is None:
        transport = _reading_transport(limits)
    client = httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers or {}),
        timeout=timeout,
        limits=limits,
        transport=transport,
        trust_env=False,
        follow_redirects=False,
    )
    # The public ``cookies`` setter copies into a plain ``Cookies``; the client's jar itself is
    # swapped for one that skips answers setting no cookie (every vendor answer so far).
    client._cookies = _Cookies()
    return client


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, which only looks at answers that set a cookie.

    httpx hands every response to ``http.cookiejar`` through two compatibility wrappers (a
    ``urllib`` request parsing the URL again and an ``email`` message of all the headers):
    ~3 % of a cache miss's CPU, for answers that carry no ``Set-Cookie`` at all. The jar's
    outcome is the same: with no such header it stores nothing.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def _reading_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """httpx-aiohttp's transport, reading each answer's body in one call.

    The stock transport hands httpx a stream that reads the body in 16 KiB chunks through two
    async iterators (httpx's and aiohttp's); :func:`send` always reads the whole body anyway.
    Here aiohttp reads it at once, under the same exception mapping (so a refused connect, a
    timeout or a reset mid-body become the same httpx exceptions), and httpx gets it as a
    one-chunk stream, which it still decodes per ``Content-Encoding`` as before.
    """
    from aiohttp import ClientSession, ClientTimeout
    from httpx_aiohttp import AiohttpTransport
    from httpx_aiohttp.transport import map_aiohttp_exceptions

    class ReadingTransport(AiohttpTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            client = self.client
            if not isinstance(client, ClientSession):
                client = self.client = self.get_client()
            timeout = request.extensions.get("timeout", {})
            with map_aiohttp_exceptions():
                data: bytes | httpx.AsyncByteStream | None
                try:
                    data = request.content or None
                except httpx.RequestNotRead:
                    data = request.stream  # type: ignore[assignment]
                    request.headers.pop("transfer-encoding", None)  # handled by aiohttp
                async with client.request(
                    method=request.method,
                    url=str(request.url),
                    headers=request.headers,
                    data=data,
                    allow_redirects=False,
                    auto_decompress=False,
                    compress=False,
                    timeout=ClientTimeout(
                        sock_connect=timeout.get("connect"),
                        sock_read=timeout.get("read"),
                        connect=timeout.get("pool"),
                    ),
                    server_hostname=request.extensions.get("sni_hostname"),
                ) as response:
                    body = await response.read()
            extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
            if response.reason:
                extensions["reason_phrase"] = response.reason.encode()
            return httpx.Response(
                status_code=response.status,
                headers=response.raw_headers,
                stream=httpx.ByteStream(body),
                request=request,
                extensions=extensions,
            )

    return ReadingTransport(limits=limits, trust_env=False)


QueryParams = Sequence[tuple[str, str | int | float | bool | None]]
"""Query parameters in order, keys repeated."""


def _query_value(value: str | int | float | bool | None) -> str:
    # As httpx writes them: booleans in lower case, None as the empty string.
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


def get_request(client: httpx.AsyncClient, path: str, params: QueryParams) -> httpx.Request:
    """The GET of ``path`` (relative to the client's ``base_url``) with ``params``: the same
    request as ``client.build_request("GET", path, params=params)``, at under half its cost.

    httpx parses and re-validates the whole URL character by character when it merges a
    relative path and a parameter list into its base URL (~80 µs for a short query, more with
    every id); here the query is encoded once by ``urlencode`` — exactly as httpx encodes
    parameters — and the absolute URL parsed once.
    """
    query = urlencode([(key, _query_value(value)) for key, value in params])
    url = f"{str(client.base_url).rstrip('/')}/{path.lstrip('/')}"
    return client.build_request("GET", f"{url}?{query}" if query else url)


async def send(client: httpx.AsyncClient, request: httpx.Request, *, source: str) -> httpx.Response:
    """Send ``request`` and read the whole body; transport failures become ``SourceError``s.

    The error messages name the method and path but never headers, so credentials cannot leak.
    """
    where = f"{request.method} {request.url.path}"
    try:
        response = await client.send(request)
        await response.aread()
        response = _without_credentials(response, request, source=source)
    except httpx.TimeoutException as exc:
        if _is_connection_failure(exc):
            what = "connection refused" if _is_refused(exc) else f"connection failed ({_cause_name(exc)})"
            raise SourceUnavailableError(f"{source}: {what} on {where}", source=source) from exc
        raise SourceTimeoutError(f"{source}: no answer to {where} in time", source=source) from exc
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise SourceUnavailableError(
            f"{source}: connection failed on {where}: {type(exc).__name__}", source=source
        ) from exc
    except httpx.TransportError as exc:
        raise SourceUnavailableError(
            f"{source}: transport error on {where}: {type(exc).__name__}", source=source
        ) from exc
    return response


CREDENTIAL_HEADER_WORDS = ("authorization", "key", "token", "secret")
"""A request header whose name contains one of these carries a credential."""
REDACTED = b"[redacted]"
MIN_CREDENTIAL_CHARS = 8
"""Shorter header values (a scheme name, a flag) are not searched for."""


def _credentials(request: httpx.Request) -> list[bytes]:
    """The credential values sent with ``request``: whole header values and, for
    ``Authorization: <scheme> <token>``, the token alone; longest first."""
    found: set[bytes] = set()
    for name, value in request.headers.items():
        if not any(word in name.lower() for word in CREDENTIAL_HEADER_WORDS):
            continue
        whole = value.strip()
        token = whole.partition(" ")[2].strip()
        found.update(v.encode() for v in (whole, token) if len(v) >= MIN_CREDENTIAL_CHARS)
    return sorted(found, key=len, reverse=True)


def _without_credentials(response: httpx.Response, request: httpx.Request, *, source: str) -> httpx.Response:
    """``response``, with any credential of ``request`` it echoes replaced by ``[redacted]``.

    A vendor (or a proxy in front of it) may echo the request, headers included, in an error
    page; its text reaches problem details, health reports and logs, so the credentials would
    leave the gateway with it (SPEC §3: never in a response, a log line or a metric). A search
    for a few short byte strings in the body costs microseconds next to parsing it."""
    content = response.content
    leaked = [c for c in _credentials(request) if c in content]
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


def _is_connection_failure(exc: httpx.TimeoutException) -> bool:
    """httpx-aiohttp maps *every* aiohttp connection error (a refused connect, a server that
    closes the connection without answering...) to ``httpx.ConnectTimeout``; only a cause that
    is itself a timeout really is one."""
    cause = exc.__cause__
    return isinstance(exc, httpx.ConnectTimeout) and cause is not None and not isinstance(cause, TimeoutError)


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


def _cause_name(exc: BaseException) -> str:
    return type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__


def is_json(response: httpx.Response) -> bool:
    """True for ``application/json`` and ``application/*+json`` (problem+json, vnd.api+json)."""
    ctype: str = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a source retries idempotent reads."""

    attempts: int = 3
    """Total tries, the first included."""
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    max_retry_after_s: float = 5.0
    """Cap on a vendor's requested wait (``Retry-After`` / ``X-RateLimit-Reset``)."""

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, SourceRateLimitedError) and exc.retry_after is not None:
            return max(0.0, min(exc.retry_after, self.max_retry_after_s))
        jitter = wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s)
        return float(jitter(state))

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` with retries on retryable ``SourceError``s; re-raise the last one."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, SourceError) and e.retryable),
            reraise=True,
            before_sleep=_log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises")  # pragma: no cover


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    source = getattr(exc, "source", "?")
    log.info(
        "retrying read",
        extra={"source": source, "attempt": state.attempt_number, "error": type(exc).__name__},
    )


async def send_idempotent(
    client: httpx.AsyncClient,
    build: Callable[[], httpx.Request],
    classify: Callable[[httpx.Response], T],
    *,
    source: str,
    policy: RetryPolicy,
) -> T:
    """Send a GET built by ``build`` and classify its response, retrying per ``policy``.

    ``classify`` turns the response into a result or raises a ``SourceError`` (a retryable one,
    such as a 5xx or 429, is retried).
    """

    async def once() -> T:
        response = await send(client, build(), source=source)
        return classify(response)

    return await policy.run(once)
