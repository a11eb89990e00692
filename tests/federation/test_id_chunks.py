"""A query over listed ids streamed a chunk of subjects at a time
(:mod:`annotation_gateway.federation.id_chunks`): chunk sizes follow the density seen, pages come
in subject order whatever order the chunks end in, a few chunks are in flight, and a stream
closed early cancels them at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.federation import limits as federation_limits
from annotation_gateway.federation.answers import QueryPage, SourceStatus
from annotation_gateway.federation.id_chunks import Chunker, stream_chunks
from annotation_gateway.federation.merge import Merged
from annotation_gateway.model import Annotation, ProviderKind
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.records import Record, record_of
from annotation_gateway.settings import CacheConfig
from tests.fakes import FakeProvider, ManualClock, make_annotation

IDS = tuple(f"s{i:03d}" for i in range(40))


def test_chunks_start_small_then_follow_the_density_seen() -> None:
    chunker = Chunker(IDS, first=1, target=100, most=8)
    first = chunker.next()
    assert first == ("s000",)
    chunker.observe(1, 50)  # 50 annotations a subject: two subjects make the target
    assert chunker.next() == ("s001", "s002")
    chunker.observe(2, 0)  # 50 over 3 subjects: 6 subjects, under the most
    assert chunker.next() == IDS[3:9]
    chunker.observe(6, 0)  # ~5.6 a subject: 17, capped at 8
    assert chunker.next() == IDS[9:17]
    rest = []
    while (chunk := chunker.next()) is not None:
        rest.extend(chunk)
    assert tuple(rest) == IDS[17:], "every id once, in order"


def test_an_identifier_only_query_is_one_empty_chunk() -> None:
    chunker = Chunker((), first=1, target=100, most=8)
    assert chunker.next() == ()
    assert chunker.next() is None


def _merged(chunk: tuple[str, ...]) -> Merged:
    records: tuple[Record, ...] = tuple(record_of(make_annotation("p", s)) for s in chunk)
    status = SourceStatus("p", ProviderKind.PHOENIX, "ok", count=len(records))
    return Merged(records=records, statuses=(status,), partial=False, expires_at=0.0)


async def test_pages_come_in_subject_order_with_a_few_chunks_in_flight() -> None:
    started: list[tuple[str, ...]] = []
    release: dict[tuple[str, ...], asyncio.Event] = {}
    in_flight = 0
    most_in_flight = 0

    async def fan_out(part: FederatedQuery) -> Merged:
        nonlocal in_flight, most_in_flight
        chunk = part.subject_ids
        started.append(chunk)
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        gate = release.setdefault(chunk, asyncio.Event())
        await gate.wait()
        in_flight -= 1
        return _merged(chunk)

    query = FederatedQuery(subject_ids=IDS[:6])
    pages = stream_chunks(query, fan_out, Chunker(query.subject_ids, first=1, target=1, most=1))
    got: list[str] = []
    async with aclosing(pages):
        reader = asyncio.ensure_future(_collect(pages, got))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(started) == federation_limits.EXPORT_CHUNKS_IN_FLIGHT
        for chunk in reversed(started):  # the later chunks end first
            release[chunk].set()
        while not reader.done():
            for chunk in started:
                release.setdefault(chunk, asyncio.Event()).set()
            await asyncio.sleep(0)
        totals = await reader
    assert got == list(IDS[:6]), "subject order, whatever order the chunks ended in"
    assert most_in_flight <= federation_limits.EXPORT_CHUNKS_IN_FLIGHT
    assert totals == 6, "the last page's sources cover the whole stream"


async def _collect(pages: AsyncIterator[QueryPage], got: list[str]) -> int:
    last = 0
    async for page in pages:
        got.extend(r.subject_id for r in page.records)
        last = page.sources[0].count
    return last


async def test_a_stream_closed_early_cancels_the_chunks_in_flight_at_once() -> None:
    waiting: list[asyncio.Task[object]] = []
    never = asyncio.Event()

    async def fan_out(part: FederatedQuery) -> Merged:
        if part.subject_ids != IDS[:1]:
            task = asyncio.current_task()
            assert task is not None
            waiting.append(task)
            await never.wait()
        return _merged(part.subject_ids)

    query = FederatedQuery(subject_ids=IDS)
    pages = stream_chunks(query, fan_out, Chunker(query.subject_ids, first=1, target=1, most=1))
    first = await anext(pages)
    assert [r.subject_id for r in first.records] == ["s000"]
    await asyncio.sleep(0)
    assert waiting
    assert not any(t.done() for t in waiting)
    await pages.aclose()
    assert all(t.cancelled() for t in waiting), "no chunk is left running for the collector"


class _HoldsAllButTheFirst(FakeProvider):
    """Answers the first subject's chunk; every other fetch waits until the test ends."""

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        if "s000" not in query.subject_ids:
            await asyncio.Event().wait()
        return await super().fetch(query)


def _fan_outs() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "") == "Federation._fan_out"
    ]


async def test_closing_a_federation_stream_cancels_its_chunks_before_aclose_returns() -> None:
    provider = _HoldsAllButTheFirst("p", [make_annotation("p", s) for s in IDS])
    federation = Federation(
        [provider], CacheConfig(ttl_s=30, max_stale_s=300), cursor_secret=b"0" * 32, clock=ManualClock()
    )
    try:
        stream = federation.stream(FederatedQuery(subject_ids=IDS))
        first = await anext(stream)
        assert [r.subject_id for r in first.records] == ["s000"]
        await asyncio.sleep(0)
        assert _fan_outs(), "later chunks are in flight"
        await stream.aclose()
        assert _fan_outs() == [], "cancelled when the stream closed, not when it is collected"
    finally:
        await federation.aclose()
