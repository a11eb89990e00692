"""The reads' GET (``providers/http/client.get``, ``get_decoded``) against a real socket server on
loopback.

``get`` skips httpx's client when it adds nothing; what it must give is exactly what
``send(client, get_request(client, path, params))`` — the same client, through httpx — gives:
the same request on the wire, the same response (status, reason, headers, decoded body), the
same ``SourceError`` for every way a connection fails, the same redaction of echoed credentials,
and cookies kept and sent as httpx keeps and sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from annotation_gateway.errors import SourceError
from annotation_gateway.providers.http.client import (
    DirectResponse,
    SourceClient,
    get,
    get_decoded,
    get_request,
    make_client,
    send,
)
from tests.providers.test_transport import (
    Handler,
    _close_without_answer,
    _garbage,
    _reset,
    _silent,
    _truncate,
    read_request,
    serving,
)

PATH = "/v1/projects/p/session_annotations"
PARAMS = [("session_ids", "s-1"), ("session_ids", "a b/é"), ("limit", 100)]
SECRETS = {"DD-API-KEY": "api-key-0123456789", "DD-APPLICATION-KEY": "app-key-0123456789"}

Seen = list[tuple[str, dict[str, str]]]


@asynccontextmanager
async def source_client(base: str, timeout_s: float = 2.0) -> AsyncIterator[httpx.AsyncClient]:
    client = make_client(base, headers={"Accept": "application/json", **SECRETS}, timeout_s=timeout_s)
    try:
        yield client
    finally:
        await client.aclose()


def answering(respond: Callable[[str, dict[str, str]], bytes]) -> Handler:
    """A server answering every request of a connection with ``respond(its line, its headers)``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request_line, headers, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(respond(request_line, headers))
            await writer.drain()
        writer.close()

    return answer


def recording(seen: Seen, *, body: bytes = b'{"data": [1, 2]}', head: bytes = b"") -> Handler:
    """A server answering every request with a gzipped JSON ``body``; ``seen`` gets each
    request's line and headers."""

    def respond(request_line: str, headers: dict[str, str]) -> bytes:
        seen.append((request_line, headers))
        payload = gzip.compress(body)
        return (
            b"HTTP/1.1 200 Fine Thanks\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + head
            + b"X-Twice: a\r\nX-Twice: b\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    return answering(respond)


async def both_ways(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
    direct = await get(client, PATH, PARAMS, source="s")
    routed = await send(client, get_request(client, PATH, PARAMS), source="s")
    return direct, routed


async def test_the_same_request_goes_out_and_the_same_response_comes_back() -> None:
    seen: Seen = []
    async with serving(recording(seen)) as base, source_client(base) as client:
        direct, routed = await both_ways(client)
    assert isinstance(direct, DirectResponse)  # the direct way was taken...
    assert not isinstance(routed, DirectResponse)  # ...and the other one went through httpx
    (line1, sent1), (line2, sent2) = seen
    # (both httpx's URL and aiohttp's leave a "/" in a query as it is)
    assert line1 == line2 == f"GET {PATH}?session_ids=s-1&session_ids=a+b/%C3%A9&limit=100 HTTP/1.1"
    assert sent1 == sent2  # every header, Host, User-Agent and Accept-Encoding included
    assert sent1["dd-api-key"] == SECRETS["DD-API-KEY"]
    assert sent1["accept"] == "application/json"
    for response in (direct, routed):
        assert response.status_code == 200
        assert response.reason_phrase == "Fine Thanks"
        assert response.http_version == "HTTP/1.1"
        assert response.json() == {"data": [1, 2]}  # gzip decoded, once
    assert direct.headers.multi_items() == routed.headers.multi_items()
    assert direct.headers.get_list("x-twice") == ["a", "b"]
    assert direct.content == routed.content


async def test_the_request_of_a_direct_answer_is_the_request_sent() -> None:
    seen: Seen = []
    async with serving(recording(seen)) as base, source_client(base) as client:
        direct, routed = await both_ways(client)
    assert direct.request.method == routed.request.method == "GET"
    assert direct.request.url == routed.request.url
    assert direct.url == routed.url
    assert direct.request.headers.multi_items() == routed.request.headers.multi_items()


def refused_base() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(None, id="refused"),
        pytest.param(_close_without_answer, id="closed-without-answer"),
        pytest.param(_truncate, id="truncated-body"),
        pytest.param(_garbage, id="not-http"),
        pytest.param(_reset, id="reset"),
        pytest.param(_silent, id="no-answer-in-time"),
    ],
)
async def test_each_failure_is_the_same_source_error(handler: Handler | None) -> None:
    async def failure(direct: bool) -> SourceError:
        server = serving(handler) if handler is not None else contextlib.nullcontext(refused_base())
        async with server as base, source_client(base, timeout_s=0.3) as client:
            if direct:
                read = lambda: get(client, PATH, PARAMS, source="s")  # noqa: E731
            else:
                read = lambda: send(client, get_request(client, PATH, PARAMS), source="s")  # noqa: E731
            with pytest.raises(SourceError) as caught:
                await read()
        return caught.value

    direct, routed = await failure(True), await failure(False)
    assert type(direct) is type(routed)
    assert str(direct) == str(routed)  # the same words, the same method and path
    assert f"GET {PATH}" in str(direct)
    assert type(direct.__cause__) is type(routed.__cause__)  # the same httpx exception beneath


async def test_echoed_credentials_are_redacted_on_both_ways() -> None:
    def echo(_: str, headers: dict[str, str]) -> bytes:
        body = "\n".join(f"{k}: {v}" for k, v in sorted(headers.items())).encode()
        return (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async with serving(answering(echo)) as base, source_client(base) as client:
        direct, routed = await both_ways(client)
    for response in (direct, routed):
        assert response.status_code == 401
        for secret in SECRETS.values():
            assert secret.encode() not in response.content
        assert response.content.count(b"[redacted]") == 2
    assert direct.content == routed.content


async def test_a_cookie_set_on_a_direct_answer_is_kept_and_then_sent() -> None:
    seen: Seen = []
    handler = recording(seen, head=b"Set-Cookie: lb=node-7; Path=/\r\n")
    async with serving(handler) as base, source_client(base) as client:
        first = await get(client, PATH, PARAMS, source="s")
        assert isinstance(first, DirectResponse)
        assert client.cookies.get("lb") == "node-7"  # stored as httpx's client stores it
        second = await get(client, PATH, PARAMS, source="s")
    assert not isinstance(second, DirectResponse)  # a client with cookies sends through httpx
    assert "cookie" not in seen[0][1]
    assert seen[1][1]["cookie"] == "lb=node-7"


async def test_a_client_on_another_transport_goes_through_httpx() -> None:
    answer = lambda request: httpx.Response(200, json={"path": request.url.path})  # noqa: E731
    client = make_client("http://vendor.test", transport=httpx.MockTransport(answer))
    try:
        assert isinstance(client, SourceClient)
        assert client.direct is None
        response = await get(client, PATH, PARAMS, source="s")
    finally:
        await client.aclose()
    assert not isinstance(response, DirectResponse)
    assert response.json() == {"path": PATH}


async def test_a_direct_answer_is_freed_when_dropped(no_cyclic_gc: None) -> None:
    seen: Seen = []
    async with serving(recording(seen)) as base, source_client(base) as client:
        response = await get(client, PATH, PARAMS, source="s")
        assert response.json() == {"data": [1, 2]}
        assert response.request.method == "GET"  # the request, once made, is no cycle either
        freed = weakref.ref(response)
        del response
        assert freed() is None


# --- get_decoded: a page decoded from its bytes, every other answer as get() gives it ---------

BODY = b'{"data": [{"id": "a"}], "next_cursor": null}'


def plain(
    *, status: bytes = b"200 OK", ctype: bytes = b"application/json", head: bytes = b"", body: bytes = BODY
) -> Handler:
    """A server answering every request with ``body`` as it is."""

    def respond(_: str, __: dict[str, str]) -> bytes:
        return (
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\n" + head
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )  # fmt: skip

    return answering(respond)


class Decoder:
    """A ``decode`` that records what it was given and answers ``answer`` (None: cannot say)."""

    def __init__(self, answer: object = "decoded") -> None:
        self.answer = answer
        self.given: list[bytes] = []

    def __call__(self, content: bytes) -> object:
        self.given.append(content)
        return self.answer


@pytest.mark.parametrize(
    "ctype", [b"application/json", b"application/json; charset=utf-8", b"application/vnd.api+json"]
)
async def test_a_plain_json_page_is_decoded_from_its_bytes(ctype: bytes) -> None:
    decode = Decoder()
    async with serving(plain(ctype=ctype)) as base, source_client(base) as client:
        answer = await get_decoded(client, PATH, PARAMS, decode, source="s")
        response = await get(client, PATH, PARAMS, source="s")
    assert answer == "decoded"
    assert decode.given == [response.content] == [BODY]  # the very bytes get() reads


async def test_a_decoded_page_was_asked_for_with_the_same_request() -> None:
    seen: Seen = []

    def respond(request_line: str, headers: dict[str, str]) -> bytes:
        seen.append((request_line, headers))
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    async with serving(answering(respond)) as base, source_client(base) as client:
        assert await get_decoded(client, PATH, PARAMS, Decoder(), source="s") == "decoded"
        await get(client, PATH, PARAMS, source="s")
    assert seen[0] == seen[1]


ECHO = BODY[:-1] + b', "key": "' + SECRETS["DD-API-KEY"].encode() + b'"}'


@pytest.mark.parametrize(
    ("handler", "max_bytes"),
    [
        pytest.param(recording([]), None, id="content-encoding"),
        pytest.param(plain(head=b"Set-Cookie: lb=node-7; Path=/\r\n"), None, id="set-cookie"),
        pytest.param(plain(body=ECHO), None, id="echoes-a-credential"),
        pytest.param(plain(ctype=b"text/plain"), None, id="not-json"),
        pytest.param(plain(head=b"Content-Type: text/plain\r\n"), None, id="two-content-types"),
        pytest.param(plain(status=b"404 Not Found"), None, id="not-200"),
        pytest.param(plain(), len(BODY) - 1, id="larger-than-max-bytes"),
    ],
)
async def test_an_answer_httpx_would_change_comes_back_as_get_gives_it(
    handler: Handler, max_bytes: int | None
) -> None:
    decode = Decoder()
    async with serving(handler) as base:
        async with source_client(base) as client:
            answer = await get_decoded(client, PATH, PARAMS, decode, source="s", max_bytes=max_bytes)
            kept = dict(client.cookies)
        async with source_client(base) as client:
            response = await get(client, PATH, PARAMS, source="s")
            assert kept == dict(client.cookies)  # a cookie is stored all the same
    assert decode.given == []
    assert isinstance(answer, httpx.Response)
    assert (answer.status_code, answer.content) == (response.status_code, response.content)
    assert answer.headers.multi_items() == response.headers.multi_items()
    assert SECRETS["DD-API-KEY"].encode() not in answer.content  # redacted, as get() redacts


async def test_an_answer_decode_cannot_read_comes_back_as_a_response() -> None:
    decode = Decoder(answer=None)
    async with serving(plain()) as base, source_client(base) as client:
        answer = await get_decoded(client, PATH, PARAMS, decode, source="s")
    assert decode.given == [BODY]
    assert isinstance(answer, DirectResponse)
    assert answer.json() == {"data": [{"id": "a"}], "next_cursor": None}


async def test_a_client_holding_cookies_decodes_nothing() -> None:
    seen: Seen = []

    def respond(request_line: str, headers: dict[str, str]) -> bytes:
        seen.append((request_line, headers))
        cookie = b"" if seen[1:] else b"Set-Cookie: lb=node-7; Path=/\r\n"
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + cookie + b"Content-Length: 2\r\n\r\n{}"
        )

    decode = Decoder()
    async with serving(answering(respond)) as base, source_client(base) as client:
        first = await get_decoded(client, PATH, PARAMS, decode, source="s")
        second = await get_decoded(client, PATH, PARAMS, decode, source="s")
    assert isinstance(first, DirectResponse)  # it set a cookie: stored through httpx's jar
    assert isinstance(second, httpx.Response)
    assert not isinstance(second, DirectResponse)  # sent by httpx, with the cookie
    assert seen[1][1]["cookie"] == "lb=node-7"
    assert decode.given == []


async def test_a_client_on_another_transport_decodes_nothing() -> None:
    answer = lambda request: httpx.Response(200, json={"path": request.url.path})  # noqa: E731
    decode = Decoder()
    client = make_client("http://vendor.test", transport=httpx.MockTransport(answer))
    try:
        got = await get_decoded(client, PATH, PARAMS, decode, source="s")
    finally:
        await client.aclose()
    assert decode.given == []
    assert isinstance(got, httpx.Response)
    assert got.json() == {"path": PATH}
