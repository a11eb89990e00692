"""The shared HTTP edge: transport failures become the right SourceError, retries are bounded."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from annotation_gateway.errors import (
    SourceRateLimitedError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from annotation_gateway.providers.http import (
    RetryPolicy,
    chunk_values,
    encode_query,
    get_request,
    make_client,
    param_len,
    send,
    send_idempotent,
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_connection_is_unavailable_not_a_timeout() -> None:
    # A real refused connect through the production (aiohttp) transport.
    client = make_client(f"http://127.0.0.1:{closed_port()}", timeout_s=2.0)
    try:
        with pytest.raises(SourceUnavailableError, match="connection refused"):
            await send(client, client.build_request("GET", "/x"), source="s")
    finally:
        await client.aclose()


async def test_read_timeout_is_a_timeout() -> None:
    client = make_client("http://127.0.0.1:9", transport=httpx.AsyncHTTPTransport())
    with respx.mock(using="httpx") as mock:
        mock.get("http://127.0.0.1:9/slow").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(SourceTimeoutError):
            await send(client, client.build_request("GET", "/slow"), source="s")
    await client.aclose()


async def test_retries_retryable_errors_then_succeeds_and_honours_rate_limit_wait() -> None:
    calls: list[int] = []

    def classify(response: httpx.Response) -> int:
        calls.append(response.status_code)
        if response.status_code == 429:
            raise SourceRateLimitedError("slow down", source="s", retry_after=0.01)
        if response.status_code >= 500:
            raise SourceUnavailableError("down", source="s", upstream_status=response.status_code)
        return response.status_code

    client = make_client("http://127.0.0.1:9", transport=httpx.AsyncHTTPTransport())
    with respx.mock(using="httpx") as mock:
        mock.get("http://127.0.0.1:9/r").mock(
            side_effect=[httpx.Response(503), httpx.Response(429), httpx.Response(200)]
        )
        result = await send_idempotent(
            client,
            lambda: client.build_request("GET", "/r"),
            classify,
            source="s",
            policy=RetryPolicy(attempts=3, backoff_base_s=0.001),
        )
    await client.aclose()
    assert result == 200
    assert calls == [503, 429, 200]


async def test_gives_up_after_the_configured_attempts() -> None:
    client = make_client("http://127.0.0.1:9", transport=httpx.AsyncHTTPTransport())

    def classify(response: httpx.Response) -> int:
        raise SourceUnavailableError("down", source="s", upstream_status=response.status_code)

    with respx.mock(using="httpx") as mock:
        route = mock.get("http://127.0.0.1:9/r").mock(return_value=httpx.Response(500))
        with pytest.raises(SourceUnavailableError):
            await send_idempotent(
                client,
                lambda: client.build_request("GET", "/r"),
                classify,
                source="s",
                policy=RetryPolicy(attempts=2, backoff_base_s=0.001),
            )
    await client.aclose()
    assert route.call_count == 2


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:6006", "http://h:1/prefix/", "https://api.example.com"]
)
@pytest.mark.parametrize(
    "params",
    [
        [],
        [("a", "x y"), ("b", "é/?#&=%+"), ("b", "")],
        [("ids", "😀"), ("offset", 5), ("limit", 10), ("score", 0.5)],
        [("flag", True), ("other", False), ("none", None), ("ctl", "a\x00b\tc")],
    ],
)
def test_get_request_builds_what_httpx_builds(base_url: str, params: list[tuple[str, Any]]) -> None:
    client = httpx.AsyncClient(base_url=base_url, headers={"Accept": "application/json"})
    expected = client.build_request("GET", "/v1/projects/p/session_annotations", params=params)
    built = get_request(client, "/v1/projects/p/session_annotations", params)
    assert built.url == expected.url
    assert str(built.url) == str(expected.url)
    assert built.method == "GET"
    assert list(built.headers.items()) == list(expected.headers.items())


TEXT = st.one_of(
    st.text(), st.text(alphabet="abcXYZ019_.~-"), st.from_regex(r"[0-9a-f-]{36}", fullmatch=True)
)


@given(st.lists(st.tuples(TEXT, TEXT), max_size=8))
def test_encode_query_writes_what_urlencode_writes(params: list[tuple[str, str]]) -> None:
    """The unreserved-characters shortcut gives urlencode's bytes for any text (ids, names, the
    empty string, spaces, non-ASCII), and the lengths the URL budgets count are those bytes."""
    assert encode_query(params) == urlencode(params)
    for key, value in params:
        assert param_len(key, value) == len(urlencode([(key, value)]))


def test_chunk_values_keeps_order_within_the_budget_and_the_count() -> None:
    values = ["a", "b", "c", "d", "e"]
    assert chunk_values(values, [3, 3, 3, 3, 3], budget=7) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunk_values(values, [1] * 5, budget=100, max_count=2) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunk_values(["big", "x"], [50, 1], budget=10) == [["big"], ["x"]]
    assert chunk_values([], [], budget=10) == []


async def test_a_retry_waits_without_holding_a_concurrency_slot() -> None:
    """The source's cap is held per try: a read waiting out a 429 lets another read go first."""
    tries = {"/a": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/a":
            tries["/a"] += 1
            if tries["/a"] == 1:
                return httpx.Response(429)
        return httpx.Response(200)

    def classify(response: httpx.Response) -> int:
        if response.status_code == 429:
            raise SourceRateLimitedError("slow down", source="s", retry_after=0.3)
        return response.status_code

    client = make_client("http://127.0.0.1:9", transport=httpx.MockTransport(answer))
    limit = asyncio.Semaphore(1)
    policy = RetryPolicy(attempts=2, max_retry_after_s=1)
    finished: list[str] = []

    async def read(path: str) -> None:
        await send_idempotent(
            client,
            lambda: client.build_request("GET", path),
            classify,
            source="s",
            policy=policy,
            limit=limit,
        )
        finished.append(path)

    first = asyncio.create_task(read("/a"))
    await asyncio.sleep(0.05)  # /a got its 429 and is waiting
    await asyncio.wait_for(read("/b"), timeout=0.2)  # not blocked behind /a's wait
    await first
    await client.aclose()
    assert finished == ["/b", "/a"]
    assert tries["/a"] == 2
