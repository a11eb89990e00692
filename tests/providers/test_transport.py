"""The providers' own aiohttp transport, against a real socket server on loopback.

What it must do is what httpx's own transport does, at aiohttp's cost: send the request as
httpx built it, give back status, headers (repeated ones too) and the decoded body, and turn
every way a connection can fail into the httpx exception that means it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import httpx
import pytest
from multidict import CIMultiDict
from yarl import URL

from annotation_gateway.providers.http.client import make_client
from annotation_gateway.providers.http.transport import EXCEPTIONS, AiohttpTransport, map_exception

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def client_for(base_url: str, timeout_s: float = 2.0) -> AsyncIterator[httpx.AsyncClient]:
    client = make_client(base_url, headers={"Accept": "application/json"}, timeout_s=timeout_s)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_round_trip_is_what_httpx_would_give() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):  # two requests on one kept-alive connection
            request_line, headers, body = await read_request(reader)
            seen.append((request_line, headers, body))
            payload = gzip.compress(json.dumps({"got": body.decode()}).encode())
            writer.write(
                b"HTTP/1.1 201 Created\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Encoding: gzip\r\n"
                b"X-Twice: a\r\nX-Twice: b\r\n" + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
            )
            await writer.drain()
        writer.close()

    async with serving(answer) as base, client_for(base) as client:
        first = await client.post("/v1/things", params={"x": "a b"}, json={"k": "v"})
        second = await client.get("/v1/other")
    assert first.status_code == 201
    assert first.reason_phrase == "Created"
    assert first.http_version == "HTTP/1.1"
    assert first.json() == {"got": '{"k":"v"}'}  # gzip decoded by httpx, once
    assert first.headers.get_list("x-twice") == ["a", "b"]
    assert second.json() == {"got": ""}
    (line1, headers1, _), (line2, headers2, _) = seen
    assert line1 == "POST /v1/things?x=a+b HTTP/1.1"
    assert headers1["content-type"] == "application/json"
    assert headers1["accept"] == "application/json"
    assert line2 == "GET /v1/other HTTP/1.1"
    assert "cookie" not in headers2


async def test_a_refused_connect_is_a_connect_error_caused_by_the_refusal() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client_for(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get("/x")
    chain: list[BaseException] = []
    current: BaseException | None = caught.value
    while current is not None:
        chain.append(current)
        current = current.__cause__
    assert any(isinstance(exc, ConnectionRefusedError) for exc in chain), chain
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def _close_without_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.close()


async def _truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"data')
    await writer.drain()
    writer.close()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()
    writer.close()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(5)
    writer.close()


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        pytest.param(_close_without_answer, httpx.RemoteProtocolError, id="closed-without-answer"),
        pytest.param(_truncate, (httpx.ReadError, httpx.RemoteProtocolError), id="truncated-body"),
        pytest.param(_garbage, httpx.RemoteProtocolError, id="not-http"),
        pytest.param(_reset, (httpx.ReadError, httpx.RemoteProtocolError), id="reset"),
        pytest.param(_silent, httpx.ReadTimeout, id="no-answer-in-time"),
    ],
)
async def test_each_failure_is_the_httpx_exception_that_means_it(
    handler: Handler, expected: type[Exception] | tuple[type[Exception], ...]
) -> None:
    async with serving(handler) as base, client_for(base, timeout_s=0.3) as client:
        with pytest.raises(expected) as caught:
            await client.get("/x")
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    if expected is not httpx.ReadTimeout:
        assert not isinstance(caught.value, httpx.TimeoutException)


def test_the_exception_table_maps_each_aiohttp_failure() -> None:
    info = aiohttp.RequestInfo(URL("http://h/x"), "GET", CIMultiDict(), URL("http://h/x"))
    cases: list[tuple[Exception, type[httpx.TransportError]]] = [
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ServerTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut"), httpx.ReadError),
        (aiohttp.ClientResponseError(info, ()), httpx.RemoteProtocolError),
        (aiohttp.InvalidURL("nope"), httpx.UnsupportedProtocol),
        (aiohttp.NonHttpUrlClientError("ftp://x"), httpx.UnsupportedProtocol),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (aiohttp.ClientConnectionError("lost"), httpx.ReadError),
        (aiohttp.ClientError("other"), httpx.TransportError),
    ]
    for exc, expected in cases:
        mapped = map_exception(exc)
        assert type(mapped) is expected, (exc, mapped)
    assert map_exception(ValueError("a bug")) is None
    # every row of the table is reachable: no earlier row shadows a later one entirely
    for index, (aiohttp_type, _) in enumerate(EXCEPTIONS):
        assert not any(issubclass(aiohttp_type, earlier) for earlier, _ in EXCEPTIONS[:index])


async def test_the_session_opens_on_first_use_and_closes_with_the_client() -> None:
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=4))
    client = httpx.AsyncClient(transport=transport)

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    async with serving(ok) as base:
        assert (await client.get(base)).status_code == 204
    await client.aclose()
    await transport.aclose()  # twice is fine
