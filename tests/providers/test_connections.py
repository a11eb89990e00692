"""The reads' own HTTP/1.1 connections (providers/http/connections.py), against real socket
servers on loopback: what is kept, what is closed, what is tried again, and TLS.

The same requests and failures compared with aiohttp's way are in test_direct_get.py.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trustme

from annotation_gateway.providers.http.client import SourceClient, get, make_client
from annotation_gateway.providers.http.connections import ConnectionPool
from tests.fakes import ManualClock
from tests.providers.test_transport import Handler, read_request, serving

TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}
HEADERS = [("Accept", "application/json"), ("User-Agent", "test")]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@asynccontextmanager
async def pool(**kw: object) -> AsyncIterator[ConnectionPool]:
    kw.setdefault("max_connections", 4)
    kw.setdefault("keepalive_expiry", 30.0)
    made = ConnectionPool(**kw)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        await made.aclose()


def counting(connections: list[int], *answers: bytes, then_close: bool = False) -> Handler:
    """A server answering a connection's requests with ``answers`` in turn (the last one again
    after); ``connections`` gets one entry per connection, counting its requests."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(connections)
        connections.append(0)
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            answer = answers[min(connections[index], len(answers) - 1)]
            connections[index] += 1
            writer.write(answer)
            await writer.drain()
            if then_close:
                break
        writer.close()

    return handle


async def test_a_connection_is_kept_and_used_again() -> None:
    connections: list[int] = []
    async with serving(counting(connections, OK)) as base, pool() as p:
        for _ in range(3):
            answer = await p.get(f"{base}/x?a=1", HEADERS, TIMEOUTS)
            assert (answer.status, answer.reason, answer.content) == (200, "OK", b"{}")
        assert p.open_connections == 1
    assert connections == [3]


async def test_an_answer_that_does_not_keep_its_connection_closes_it() -> None:
    connections: list[int] = []
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    async with serving(counting(connections, closing, then_close=True)) as base, pool() as p:
        for _ in range(2):
            assert (await p.get(f"{base}/x", HEADERS, TIMEOUTS)).content == b"{}"
            assert p.open_connections == 0
    assert connections == [1, 1]


async def test_bodies_chunked_or_ended_by_the_connection_come_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
    to_the_end = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    async with pool() as p:
        async with serving(counting([], chunked)) as base:
            answer = await p.get(f"{base}/x", HEADERS, TIMEOUTS)
            assert answer.content == b"[1,2]"
            assert (b"Transfer-Encoding", b"chunked") in answer.headers
        async with serving(counting([], to_the_end, then_close=True)) as base:
            assert (await p.get(f"{base}/x", HEADERS, TIMEOUTS)).content == b"all of it"
        async with serving(counting([], interim)) as base:
            answer = await p.get(f"{base}/x", HEADERS, TIMEOUTS)
            assert (answer.status, answer.content) == (200, b"{}")


async def test_a_kept_connection_the_server_closed_is_tried_again_once_on_a_new_one() -> None:
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        await read_request(reader)
        writer.write(OK)  # keep-alive, as HTTP/1.1 says...
        await writer.drain()
        if len(connections) == 1:
            await read_request(reader)  # ...but the next request gets no answer
        writer.close()

    async with serving(handle) as base, pool() as p:
        await p.get(f"{base}/x", HEADERS, TIMEOUTS)
        assert (await p.get(f"{base}/x", HEADERS, TIMEOUTS)).content == b"{}"
    assert len(connections) == 2


async def test_a_new_connection_closed_without_an_answer_is_not_tried_again() -> None:
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        await read_request(reader)
        writer.close()

    async with serving(handle) as base, pool() as p:
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await p.get(f"{base}/x", HEADERS, TIMEOUTS)
    assert len(connections) == 1


async def test_the_pool_bounds_its_connections() -> None:
    release = asyncio.Event()
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            await release.wait()
            writer.write(OK)
            await writer.drain()
        writer.close()

    async with serving(handle) as base, pool(max_connections=1) as p:
        first = asyncio.create_task(p.get(f"{base}/x", HEADERS, TIMEOUTS))
        await asyncio.sleep(0.05)
        # The one connection is in use: a request that may wait 0.1 s for it does not get it.
        with pytest.raises(httpx.ConnectTimeout):
            await p.get(f"{base}/x", HEADERS, TIMEOUTS | {"pool": 0.1})
        second = asyncio.create_task(p.get(f"{base}/x", HEADERS, TIMEOUTS))
        await asyncio.sleep(0.05)
        release.set()
        assert [a.content for a in await asyncio.gather(first, second)] == [b"{}", b"{}"]
        assert p.open_connections == 1
    assert connections == [0]  # one connection served both


async def test_a_request_cancelled_mid_exchange_closes_its_connection() -> None:
    connections: list[int] = []
    answered = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        await read_request(reader)
        if len(connections) == 1:
            await answered.wait()  # never, for the first connection
        writer.write(OK)
        await writer.drain()
        writer.close()

    async with serving(handle) as base, pool() as p:
        request = asyncio.create_task(p.get(f"{base}/x", HEADERS, TIMEOUTS))
        await asyncio.sleep(0.05)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert p.open_connections == 0
        assert (await p.get(f"{base}/x", HEADERS, TIMEOUTS)).content == b"{}"
        answered.set()
    assert len(connections) == 2


async def test_an_idle_connection_past_its_expiry_is_closed_not_used() -> None:
    clock = ManualClock()
    connections: list[int] = []
    async with serving(counting(connections, OK)) as base, pool(keepalive_expiry=5.0, clock=clock) as p:
        await p.get(f"{base}/x", HEADERS, TIMEOUTS)
        clock.advance(4)
        await p.get(f"{base}/x", HEADERS, TIMEOUTS)
        clock.advance(6)
        await p.get(f"{base}/x", HEADERS, TIMEOUTS)
        assert p.open_connections == 1
    assert connections == [2, 1]


async def test_bytes_no_request_asked_for_close_the_connection() -> None:
    connections: list[int] = []
    async with serving(counting(connections, OK + b"HTTP/1.1 200 OK\r\n")) as base, pool() as p:
        assert (await p.get(f"{base}/x", HEADERS, TIMEOUTS)).content == b"{}"
        await asyncio.sleep(0.05)  # the stray bytes have come, with the answer or after it
        assert (await p.get(f"{base}/x", HEADERS, TIMEOUTS)).content == b"{}"
    assert len(connections) == 2  # the first was not used again


async def test_the_read_timeout_counts_from_the_last_byte() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for part in (b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\n", b"{}"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.close()

    async with serving(slow) as base, pool() as p:
        # Each byte comes within 0.35 s of the last, the whole answer in 0.4 s.
        answer = await p.get(f"{base}/x", HEADERS, TIMEOUTS | {"read": 0.35})
        assert answer.content == b"{}"
        with pytest.raises(httpx.ReadTimeout):
            await p.get(f"{base}/x", HEADERS, TIMEOUTS | {"read": 0.1})


async def test_requests_the_pool_cannot_write_are_refused() -> None:
    async with pool() as p:
        with pytest.raises(httpx.UnsupportedProtocol):
            await p.get("ftp://127.0.0.1/x", HEADERS, TIMEOUTS)
        with pytest.raises(httpx.LocalProtocolError):
            await p.get("http://127.0.0.1:1/x", [("X-Bad", "a\r\nInjected: 1")], TIMEOUTS)
        assert p.open_connections == 0


@asynccontextmanager
async def serving_tls(handler: Handler, context: ssl.SSLContext) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_https_is_tls_with_the_servers_name_checked() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers, _ = await read_request(reader)
        seen.append(f"{line} host={headers['host']}")
        writer.write(OK)
        await writer.drain()
        writer.close()

    async with serving_tls(handle, server_context) as port, pool(ssl_context=client_context) as p:
        answer = await p.get(f"https://localhost:{port}/x?a=b", HEADERS, TIMEOUTS)
        assert answer.content == b"{}"
        # The certificate names localhost, not 127.0.0.1: refused, as a connect error.
        with pytest.raises(httpx.ConnectError) as caught:
            await p.get(f"https://127.0.0.1:{port}/x", HEADERS, TIMEOUTS)
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert seen == [f"GET /x?a=b HTTP/1.1 host=localhost:{port}"]


async def test_a_source_client_reads_over_its_own_connections_and_closes_them() -> None:
    connections: list[int] = []
    async with serving(counting(connections, OK)) as base:
        client = make_client(base)
        assert isinstance(client, SourceClient)
        assert client.direct is not None
        for _ in range(2):
            assert (await get(client, "/x", [("a", 1)], source="s")).json() == {}
        assert client.direct.open_connections == 1
        await client.aclose()
        assert client.direct.open_connections == 0
    assert connections == [2]


BIG = b"x" * 4_000_000


async def test_an_answer_is_freed_with_its_last_reference() -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BIG)}\r\n\r\n".encode()
    async with serving(counting([], head + BIG)) as base, pool() as p:
        await p.get(f"{base}/x", HEADERS, TIMEOUTS)  # the connection is made and kept
        # Without the cyclic collector: an answer caught in a reference cycle (a read timer
        # that closes over itself did that) would stay until a collection, however big.
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            answer = await p.get(f"{base}/x", HEADERS, TIMEOUTS)
            assert len(answer.content) == len(BIG)
            held = tracemalloc.get_traced_memory()[0]
            del answer
            await asyncio.sleep(0)  # the future that carried it is let go by the loop's next turn
            left = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            gc.enable()
        assert p.open_connections == 1
    assert held > len(BIG)
    assert left < 1_000_000  # the 4 MB answer went with its last reference
