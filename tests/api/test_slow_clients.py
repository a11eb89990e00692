"""Slow and idle clients cannot hold connections (issue 15, item 11), over raw sockets.

The gateway runs under uvicorn with the limits ``annotation-gateway serve`` uses
(:func:`~annotation_gateway.api.serving.uvicorn_limits`, the header-deadline protocol of
:mod:`~annotation_gateway.api.protocol`). These tests also pin that protocol to the uvicorn
version installed: a uvicorn whose callbacks changed fails here.

The deadline is wall-clock time by nature, so the tests use a short one (0.5 s) and bound every
wait with socket timeouts several times longer; no test sleeps longer than the deadline needs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from annotation_gateway.api.app import create_app
from annotation_gateway.api.serving import ThreadedServer
from annotation_gateway.settings import AuthConfig, GatewaySettings, ServerConfig

HEADER_TIMEOUT_S = 0.5
KEEP_ALIVE_S = 3.0
WAIT_S = 5.0
"""Longest any single socket read may wait (a bound, never the expected time)."""


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    limits = ServerConfig(
        host="127.0.0.1", port=0, header_timeout_s=HEADER_TIMEOUT_S, keep_alive_s=KEEP_ALIVE_S
    )
    settings = GatewaySettings(server=limits, auth=AuthConfig(enabled=False), sources=[])
    with ThreadedServer(create_app(settings), limits=limits) as running:
        yield running


def _connect(server: ThreadedServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (bounded by the socket timeout)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _response(sock: socket.socket) -> bytes:
    """One response to a ``GET /healthz`` (its body is known and short)."""
    data = b""
    while b'{"status":"ok"}' not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the response ended: {data!r}"
        data += chunk
    return data


def test_a_head_sent_byte_by_byte_is_cut_off_with_408(server: ThreadedServer) -> None:
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    answer = b""
    try:
        for _ in range(int(WAIT_S / 0.1)):  # one header byte every 0.1 s, as a slowloris does
            sock.sendall(b"X")
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _read_all(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    problem = orjson.loads(body)
    assert problem["code"] == "request_timeout"
    assert problem["status"] == 408
    assert elapsed < WAIT_S, "the server did not cut the slow head off"


def test_a_connection_that_sends_nothing_is_closed(server: ThreadedServer) -> None:
    sock = _connect(server)
    started = time.monotonic()
    assert _read_all(sock) == b""  # closed without a word: nothing was asked
    assert time.monotonic() - started < WAIT_S
    sock.close()


def test_many_half_open_connections_are_all_released(server: ThreadedServer) -> None:
    socks = [_connect(server) for _ in range(50)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
    answers = [_read_all(sock) for sock in socks]
    for sock in socks:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers)
    # And the server still serves a well-behaved client at once.
    sock = _connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _response(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_keep_alive_and_slow_bodies_are_not_cut_by_the_head_deadline(server: ThreadedServer) -> None:
    sock = _connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _response(sock).startswith(b"HTTP/1.1 200 ")
    # Idle longer than the head deadline but shorter than keep-alive: the connection stays
    # usable, and the next request gets a deadline of its own from its first byte.
    time.sleep(HEADER_TIMEOUT_S * 2)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _response(sock).startswith(b"HTTP/1.1 200 ")
    # A body may arrive more slowly than the head deadline: the head was complete in time.
    body = b'{"subject_ids": ["x"]}'
    sock.sendall(
        b"POST /v1/annotations/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5]
    )
    time.sleep(HEADER_TIMEOUT_S * 2)
    sock.sendall(body[5:])
    reply = sock.recv(65536)
    assert not reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    sock.close()
