"""Read pages decoded straight from their bytes (``client.get_decoded``) give the records the
``httpx.Response`` path gives.

The providers read a page of today's shape without building an ``httpx.Response`` when they run
on their own aiohttp transport; a provider on httpx's own transport (what the respx tests use)
always takes the response path. Both ways, over real sockets, must give the same records, byte
for byte: Phoenix's recorded pages served by a socket server, the Datadog simulator's pages.
A Phoenix page too large to decode on the event loop is still decoded in a thread.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest

from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.providers.datadog import DatadogProvider
from annotation_gateway.providers.datadog import api as datadog_api
from annotation_gateway.providers.datadog import client as datadog_client
from annotation_gateway.providers.datadog.api import ANNOTATED_INTERACTIONS_PATH, DatadogApi
from annotation_gateway.providers.phoenix import PhoenixProvider
from annotation_gateway.providers.phoenix import client as phoenix_client
from annotation_gateway.records import Record
from tests.plugins.datadog import DatadogSimulator
from tests.providers.test_datadog_provider import every_label_type_seed
from tests.providers.test_direct_get import answering
from tests.providers.test_phoenix_replay import PROJECT, Replay, make_config, rows
from tests.providers.test_transport import Handler, serving


def wire(response: httpx.Response) -> bytes:
    """``response`` as an HTTP/1.1 answer on the wire."""
    head = f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"
    for name, value in response.headers.multi_items():
        if name.lower() != "content-length":
            head += f"{name}: {value}\r\n"
    head += f"Content-Length: {len(response.content)}\r\n\r\n"
    return head.encode("latin-1") + response.content


def replaying(replay: Replay, base: list[str]) -> Handler:
    """A server answering each request with what ``replay`` answers for it."""

    def respond(request_line: str, headers: dict[str, str]) -> bytes:
        method, target, _version = request_line.split(" ")
        return wire(replay(httpx.Request(method, base[0] + target, headers=headers)))

    return answering(respond)


@asynccontextmanager
async def phoenix_both_ways(replay: Replay) -> AsyncIterator[tuple[PhoenixProvider, PhoenixProvider]]:
    """Two providers reading ``replay`` over a socket: on their own transport and on httpx's."""
    base: list[str] = []
    async with serving(replaying(replay, base)) as url:
        base.append(url)
        config = make_config(base_url=url)
        direct = PhoenixProvider.from_config(config, environ={})
        routed = PhoenixProvider.from_config(config, environ={}, transport=httpx.AsyncHTTPTransport())
        try:
            yield direct, routed
        finally:
            await direct.aclose()
            await routed.aclose()


def counting(monkeypatch: pytest.MonkeyPatch, owner: type, method: str) -> list[object]:
    """The calls of ``owner.method`` from now on (each one's first argument after ``self``)."""
    calls: list[object] = []
    original = getattr(owner, method)

    def counted(self: object, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, counted)
    return calls


def spying(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    modules: Sequence[ModuleType],
    note: Callable[[Any], object] = lambda found: found,
) -> list[object]:
    """The calls from now on of the function ``name`` that ``modules`` imported (the first one's;
    patched in each), each as ``note(what it returned)``."""
    calls: list[object] = []
    original = getattr(modules[0], name)

    def spied(*args: Any) -> Any:
        found = original(*args)
        calls.append(note(found))
        return found

    for module in modules:
        monkeypatch.setattr(module, name, spied)
    return calls


def documents(records: list[Record]) -> list[bytes]:
    return [record.json for record in records]


async def test_phoenix_pages_give_the_same_records_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    # Transcript 36's cursor leads to transcript 51: two pages, the second asked for by cursor.
    replay = Replay("noauth/36", "noauth/51")
    query = SourceQuery(subject_ids=("na1-sess-A", "na1-sess-B"), subject_kinds=(SubjectKind.SESSION,))
    responses = counting(monkeypatch, PhoenixProvider, "_decode_page")
    async with phoenix_both_ways(replay) as (direct, routed):
        decoded = await direct.fetch_records(query)
        assert responses == [], "the direct provider built a response for a page of today's shape"
        classified = await routed.fetch_records(query)
    assert len(responses) == 2  # the provider on httpx's transport: both pages as responses
    assert len(decoded) == len(rows("noauth/36")) + len(rows("noauth/51"))
    assert documents(decoded) == documents(classified)


def big_page(size: int) -> dict[str, Any]:
    """A session annotation page of today's shape of at least ``size`` bytes (copies of a
    recorded row, each with its own id)."""
    row = rows("noauth/36")[0]
    copies: list[dict[str, Any]] = []
    while len(orjson.dumps(copies)) < size:
        copies.append({**row, "id": f"{row['id']}-{len(copies)}"})
    return {"data": copies, "next_cursor": None}


async def test_a_phoenix_page_too_large_for_the_loop_is_decoded_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = big_page(phoenix_client.THREAD_PARSE_MIN_BYTES)

    class BigReplay(Replay):
        def __call__(self, _: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200, headers={"content-type": "application/json"}, content=orjson.dumps(body)
            )

    decoded_on = spying(
        monkeypatch,
        "strict_rows",
        [phoenix_client],
        lambda _: threading.current_thread() is threading.main_thread(),
    )
    query = SourceQuery(subject_ids=(body["data"][0]["session_id"],), subject_kinds=(SubjectKind.SESSION,))
    async with phoenix_both_ways(BigReplay()) as (direct, _):
        records = await direct.fetch_records(query)
    assert len(records) == len(body["data"])
    assert decoded_on == [False]  # once, off the event loop's thread
    assert records[0].subject.project == PROJECT


async def test_a_phoenix_page_of_a_newer_shape_is_decoded_strictly_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page whose rows carry a field newer than this module fails the strict decoder; the
    provider then validates it with pydantic (keeping the field in ``extensions``) without
    running the strict decoder over the same bytes a second time."""
    page = {"data": [{**row, "reviewed_by_model": "v9"} for row in rows("noauth/36")], "next_cursor": None}

    class NewerReplay(Replay):
        def __call__(self, _: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200, headers={"content-type": "application/json"}, content=orjson.dumps(page)
            )

    tried = spying(monkeypatch, "strict_rows", [phoenix_client])
    query = SourceQuery(subject_ids=(page["data"][0]["session_id"],), subject_kinds=(SubjectKind.SESSION,))
    async with phoenix_both_ways(NewerReplay()) as (direct, routed):
        decoded = await direct.fetch_records(query)
        assert tried == [None]  # tried once, on the bytes; not again on the response
        classified = await routed.fetch_records(query)
    assert tried == [None, None]  # the provider on httpx's transport tries it once too
    assert len(decoded) == len(page["data"])
    assert documents(decoded) == documents(classified)
    assert b'"reviewed_by_model":"v9"' in decoded[0].json  # kept, in extensions.phoenix


async def test_datadog_pages_give_the_same_records_both_ways(
    datadog_sim: DatadogSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    datadog_sim.seed(every_label_type_seed())
    config = datadog_sim.source_config("dd")
    query = SourceQuery(subject_ids=("sess-1", "trace-1", "exp-1"))
    responses = counting(monkeypatch, DatadogApi, "read_page")
    direct = DatadogProvider.from_config(config, environ=datadog_sim.environ)
    routed = DatadogProvider.from_config(
        config, environ=datadog_sim.environ, transport=httpx.AsyncHTTPTransport()
    )
    try:
        decoded = await direct.fetch_records(query)
        assert responses == [], "the direct provider built a response for a page of today's shape"
        classified = await routed.fetch_records(query)
    finally:
        await direct.aclose()
        await routed.aclose()
    assert responses  # the provider on httpx's transport read its pages as responses
    assert len(decoded) == 7  # every set label value of the seed (test_datadog_provider lists them)
    assert documents(decoded) == documents(classified)


async def test_a_datadog_page_of_a_newer_shape_is_decoded_strictly_once(
    datadog_sim: DatadogSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page the strict decoder refuses on its bytes (an interaction with a field newer than
    this module: the simulator's page with one added, served over a socket) is validated by
    pydantic from the response that comes back, without a second strict pass; both transports
    give the same records, the field kept."""
    datadog_sim.seed(every_label_type_seed())
    query = SourceQuery(subject_ids=("sess-1", "trace-1", "exp-1"))
    params = [("contentIds", c) for c in query.subject_ids] + [("offset", "0"), ("limit", "100")]
    with httpx.Client(base_url=datadog_sim.base_url, headers=datadog_sim.headers, trust_env=False) as sim:
        page = sim.get(ANNOTATED_INTERACTIONS_PATH, params=params).json()
    for interaction in page["data"]["attributes"]["annotated_interactions"]:
        interaction["triage_score"] = 7
    served: list[str] = []

    def respond(request_line: str, _: dict[str, str]) -> bytes:
        served.append(request_line.split(" ")[1].split("?")[0])
        return wire(httpx.Response(200, headers={"content-type": "application/json"}, json=page))

    tried = spying(monkeypatch, "strict_page", [datadog_client, datadog_api])
    async with serving(answering(respond)) as url:
        config = datadog_sim.source_config("dd", base_url=url)
        direct = DatadogProvider.from_config(config, environ=datadog_sim.environ)
        routed = DatadogProvider.from_config(
            config, environ=datadog_sim.environ, transport=httpx.AsyncHTTPTransport()
        )
        try:
            decoded = await direct.fetch_records(query)
            assert tried == [None]  # one page, tried once on its bytes
            classified = await routed.fetch_records(query)
        finally:
            await direct.aclose()
            await routed.aclose()
    assert tried == [None, None]
    assert served == [ANNOTATED_INTERACTIONS_PATH] * 2
    assert len(decoded) == 7
    assert documents(decoded) == documents(classified)
    assert b'"triage_score":7' in decoded[0].json  # kept, in extensions.datadog.interaction
