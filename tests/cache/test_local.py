"""The per-source cache: per-subject entries, single flight, bypass, stale-on-error, invalidation."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import pytest

from annotation_gateway.cache import AnnotationCache, CacheAnswer, Fetch, Waiting, filter_key, may_serve_stale
from annotation_gateway.errors import (
    CircuitOpenError,
    SourceNotFoundError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from annotation_gateway.model import Annotation, SubjectKind
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.settings import CacheConfig
from tests.fakes import FakeProvider, ManualClock, make_annotation


# The cache is generic in its item type; these tests cache canonical annotations.
def SUBJECT_ID(annotation: Annotation) -> str:
    return annotation.subject.id


SRC = "phoenix-a"


def provider(*subjects: tuple[str, int]) -> FakeProvider:
    """A source with ``n`` annotations on each given subject."""
    items = [
        make_annotation(SRC, subject, name=f"n{i}", updated_at=i) for subject, n in subjects for i in range(n)
    ]
    return FakeProvider(SRC, items)


def cache(
    clock: ManualClock, *, ttl: float = 30, max_stale: float = 300, enabled: bool = True
) -> AnnotationCache:
    return AnnotationCache(
        CacheConfig(enabled=enabled, ttl_s=ttl, max_stale_s=max_stale), subject_of=SUBJECT_ID, clock=clock
    )


def ids(items: Sequence[Annotation]) -> set[str]:
    return {a.id for a in items}


def q(*subjects: str, **kw: object) -> SourceQuery:
    return SourceQuery(subject_ids=subjects, **kw)  # type: ignore[arg-type]


async def test_hit_after_miss_and_per_subject_reuse() -> None:
    clock = ManualClock()
    c = cache(clock)
    p = provider(("s1", 2), ("s2", 3), ("s3", 1))

    first = await c.get(SRC, q("s1", "s2"), p.fetch)
    assert not first.cached
    assert len(first.items) == 5
    assert len(p.calls) == 1

    again = await c.get(SRC, q("s2", "s1"), p.fetch)
    assert again.cached
    assert ids(again.items) == ids(first.items)
    assert len(p.calls) == 1

    # Overlap: only the missing subject goes upstream, in one call.
    overlap = await c.get(SRC, q("s1", "s3", "s4"), p.fetch)
    assert not overlap.cached
    assert len(overlap.items) == 3
    assert len(p.calls) == 2
    assert set(p.calls[1].subject_ids) == {"s3", "s4"}

    # The subject with no annotations was cached as an empty answer.
    empty = await c.get(SRC, q("s4"), p.fetch)
    assert empty.cached
    assert empty.items == []
    assert len(p.calls) == 2


async def test_filters_are_part_of_the_key() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 3))
    all_names = await c.get(SRC, q("s1"), p.fetch)
    only_n0 = await c.get(SRC, q("s1", names=("n0",)), p.fetch)
    assert len(all_names.items) == 3
    assert [a.name for a in only_n0.items] == ["n0"]
    assert len(p.calls) == 2
    # Same filter in another order is the same key.
    assert filter_key(q("s1", names=("a", "b"))) == filter_key(q("s2", names=("b", "a", "a")))
    assert filter_key(q("s1", include_raw=True)) != filter_key(q("s1"))
    kinds = q("s1", subject_kinds=(SubjectKind.TRACE, SubjectKind.SESSION))
    assert filter_key(kinds) == filter_key(q("s1", subject_kinds=(SubjectKind.SESSION, SubjectKind.TRACE)))


async def test_expiry_after_ttl() -> None:
    clock = ManualClock()
    c = cache(clock, ttl=10)
    p = provider(("s1", 1))
    await c.get(SRC, q("s1"), p.fetch)
    clock.advance(9.9)
    assert (await c.get(SRC, q("s1"), p.fetch)).cached
    clock.advance(0.2)
    assert not (await c.get(SRC, q("s1"), p.fetch)).cached
    assert len(p.calls) == 2


async def test_single_flight_identical_concurrent_misses_make_one_call() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 2), ("s2", 2))
    p.gate = asyncio.Event()
    waiters = [asyncio.create_task(c.get(SRC, q("s1", "s2"), p.fetch)) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert p.started == 1
    assert c.in_flight == 1
    p.gate.set()
    answers = await asyncio.gather(*waiters)
    assert len(p.calls) == 1
    assert all(ids(a.items) == ids(answers[0].items) and len(a.items) == 4 for a in answers)
    assert sum(not a.cached for a in answers) == 50  # everyone waited for upstream
    assert (await c.get(SRC, q("s1", "s2"), p.fetch)).cached


async def test_single_flight_overlapping_subjects_join_and_fetch_the_rest() -> None:
    c = cache(ManualClock())
    p = provider(("a", 1), ("b", 1), ("c", 1))
    p.gate = asyncio.Event()
    first = asyncio.create_task(c.get(SRC, q("a", "b"), p.fetch))
    await asyncio.sleep(0)
    second = asyncio.create_task(c.get(SRC, q("b", "c"), p.fetch))
    await asyncio.sleep(0.01)
    p.gate.set()
    one, two = await asyncio.gather(first, second)
    assert {a.subject.id for a in one.items} == {"a", "b"}
    assert {a.subject.id for a in two.items} == {"b", "c"}
    assert sorted(tuple(sorted(call.subject_ids)) for call in p.calls) == [("a", "b"), ("c",)]


async def test_failure_reaches_every_waiter_and_does_not_poison() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    p.gate = asyncio.Event()
    p.fail = SourceUnavailableError("phoenix-a: 503", source=SRC)
    waiters = [asyncio.create_task(c.get(SRC, q("s1"), p.fetch)) for _ in range(10)]
    await asyncio.sleep(0.01)
    p.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, SourceUnavailableError) for r in results)
    assert p.started == 1
    assert len(c) == 0

    p.fail = None
    answer = await c.get(SRC, q("s1"), p.fetch)
    assert not answer.cached
    assert len(answer.items) == 1
    assert p.started == 2


async def test_cancelled_caller_does_not_cancel_the_shared_call() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    p.gate = asyncio.Event()
    owner = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0)
    joiner = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0.01)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    p.gate.set()
    answer = await joiner
    assert len(answer.items) == 1
    assert p.started == 1
    # The call finished for the cache too, though its starter went away.
    assert (await c.get(SRC, q("s1"), p.fetch)).cached


async def test_all_callers_cancelled_still_fills_the_cache() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    p.gate = asyncio.Event()
    task = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    p.gate.set()
    await asyncio.sleep(0.01)
    assert c.in_flight == 0
    assert (await c.get(SRC, q("s1"), p.fetch)).cached
    assert p.started == 1


async def test_failure_with_no_waiter_left_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
    try:
        c = cache(ManualClock())
        p = provider(("s1", 1))
        p.gate = asyncio.Event()
        p.fail = SourceUnavailableError("down", source=SRC)
        task = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        del task  # drop every reference to the flight, so only the cache could keep it alive
        p.gate.set()
        await asyncio.sleep(0.01)
        assert c.in_flight == 0
        p.fail = None  # the raised error's traceback reaches the flight's future
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


async def test_no_cache_bypasses_reads_but_refreshes() -> None:
    clock = ManualClock()
    c = cache(clock)
    p = provider(("s1", 1))
    await c.get(SRC, q("s1"), p.fetch)
    p.annotations.append(make_annotation(SRC, "s1", name="new"))
    bypass = await c.get(SRC, q("s1"), p.fetch, use_cache=False)
    assert not bypass.cached
    assert len(bypass.items) == 2
    assert len(p.calls) == 2
    refreshed = await c.get(SRC, q("s1"), p.fetch)
    assert refreshed.cached
    assert len(refreshed.items) == 2


async def test_a_refresh_that_answers_the_same_keeps_the_items_held() -> None:
    compared: list[tuple[int, int]] = []

    def same(held: Sequence[Annotation], new: Sequence[Annotation]) -> bool:
        compared.append((len(held), len(new)))
        return [a.model_dump() for a in held] == [a.model_dump() for a in new]

    c = AnnotationCache(
        CacheConfig(ttl_s=30, max_stale_s=300), subject_of=SUBJECT_ID, clock=ManualClock(), same_items=same
    )
    p = provider(("s1", 2), ("s2", 1))

    async def fetch(query: SourceQuery) -> list[Annotation]:  # new objects on every call
        return [a.model_copy() for a in await p.fetch(query)]

    first = await c.get(SRC, q("s1", "s2"), fetch)
    assert compared == []  # nothing held yet: nothing to compare
    again = await c.get(SRC, q("s1", "s2"), fetch, use_cache=False)
    assert not again.cached
    assert compared == [(2, 2), (1, 1)]  # per subject
    assert all(x is y for x, y in zip(again.items, first.items, strict=True))
    # s2 changed: its new items are answered and kept; s1's held ones stay.
    p.annotations[2] = p.annotations[2].model_copy(update={"label": "changed"})
    changed = await c.get(SRC, q("s1", "s2"), fetch, use_cache=False)
    by_subject = {a.subject.id: a for a in changed.items}
    assert by_subject["s2"].label == "changed"
    assert by_subject["s2"] is not first.items[2]
    assert all(x is y for x, y in zip(changed.items[:2], first.items[:2], strict=True))
    held = await c.get(SRC, q("s1", "s2"), fetch)
    assert held.cached
    assert held.items[2] is by_subject["s2"]


async def test_no_cache_does_not_join_an_older_flight() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    p.gate = asyncio.Event()
    normal = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0)
    fresh = asyncio.create_task(c.get(SRC, q("s1"), p.fetch, use_cache=False))
    await asyncio.sleep(0.01)
    assert p.started == 2
    p.gate.set()
    await asyncio.gather(normal, fresh)


@pytest.mark.parametrize(
    "error",
    [
        SourceUnavailableError("503", source=SRC),
        SourceTimeoutError("slow", source=SRC),
        SourceRateLimitedError("429", source=SRC, retry_after=1),
        CircuitOpenError("open", source=SRC),
    ],
    ids=["unavailable", "timeout", "rate_limited", "circuit_open"],
)
async def test_stale_on_retryable_error_within_max_stale(error: Exception) -> None:
    clock = ManualClock()
    c = cache(clock, ttl=10, max_stale=100)
    p = provider(("s1", 2), ("s2", 1))
    first = await c.get(SRC, q("s1", "s2"), p.fetch)
    clock.advance(50)
    p.fail = error
    stale = await c.get(SRC, q("s1", "s2"), p.fetch)
    assert stale.stale
    assert not stale.cached
    assert ids(stale.items) == ids(first.items)
    assert stale.fetched_at == 1000.0

    clock.advance(51)  # now older than max_stale
    with pytest.raises(type(error)):
        await c.get(SRC, q("s1", "s2"), p.fetch)


async def test_stale_needs_every_subject() -> None:
    clock = ManualClock()
    c = cache(clock, ttl=10, max_stale=100)
    p = provider(("s1", 1), ("s2", 1))
    await c.get(SRC, q("s1"), p.fetch)
    clock.advance(20)
    p.fail = SourceUnavailableError("503", source=SRC)
    with pytest.raises(SourceUnavailableError):
        await c.get(SRC, q("s1", "s2"), p.fetch)


async def test_fresh_and_stale_subjects_mix_on_error() -> None:
    clock = ManualClock()
    c = cache(clock, ttl=10, max_stale=100)
    p = provider(("s1", 1), ("s2", 1))
    await c.get(SRC, q("s1"), p.fetch)
    clock.advance(20)
    await c.get(SRC, q("s2"), p.fetch)  # s2 fresh, s1 stale-but-usable
    p.fail = SourceTimeoutError("slow", source=SRC)
    answer = await c.get(SRC, q("s1", "s2"), p.fetch)
    assert answer.stale
    assert {a.subject.id for a in answer.items} == {"s1", "s2"}
    assert [set(call.subject_ids) for call in p.calls][-1] == {"s1"}


@pytest.mark.parametrize(
    "error",
    [SourceNotFoundError("no project", source=SRC), SourceProtocolError("html", source=SRC)],
    ids=["not_found", "protocol"],
)
async def test_permanent_errors_are_never_papered_over(error: Exception) -> None:
    clock = ManualClock()
    c = cache(clock, ttl=10, max_stale=100)
    p = provider(("s1", 1))
    await c.get(SRC, q("s1"), p.fetch)
    clock.advance(20)
    p.fail = error
    with pytest.raises(type(error)):
        await c.get(SRC, q("s1"), p.fetch)
    assert not may_serve_stale(error)


async def test_no_cache_still_serves_stale_on_error() -> None:
    clock = ManualClock()
    c = cache(clock, ttl=10, max_stale=100)
    p = provider(("s1", 1))
    await c.get(SRC, q("s1"), p.fetch)
    p.fail = SourceUnavailableError("503", source=SRC)
    answer = await c.get(SRC, q("s1"), p.fetch, use_cache=False)
    assert answer.stale
    assert len(answer.items) == 1


async def test_invalidate_drops_subjects_and_identifier_answers() -> None:
    c = cache(ManualClock())
    items = [
        make_annotation(SRC, "s1", identifier="run-1"),
        make_annotation(SRC, "s2", identifier="run-1"),
    ]
    p = FakeProvider(SRC, items)
    await c.get(SRC, q("s1", "s2"), p.fetch)
    await c.get(SRC, q("s1", names=("correctness",)), p.fetch)
    by_identifier = SourceQuery(identifiers=("run-1",))
    ident = await c.get(SRC, by_identifier, p.fetch)
    assert len(ident.items) == 2
    assert len(p.calls) == 3

    c.invalidate(SRC, ["s1"])
    assert not (await c.get(SRC, q("s1"), p.fetch)).cached
    assert not (await c.get(SRC, q("s1", names=("correctness",)), p.fetch)).cached
    assert (await c.get(SRC, q("s2"), p.fetch)).cached
    assert not (await c.get(SRC, by_identifier, p.fetch)).cached
    # Another source's entries are untouched.
    other = FakeProvider("other", [make_annotation("other", "s1")])
    await c.get("other", q("s1"), other.fetch)
    c.invalidate(SRC, ["s1"])
    assert (await c.get("other", q("s1"), other.fetch)).cached


async def test_flight_started_before_invalidation_does_not_store() -> None:
    c = cache(ManualClock())
    old = make_annotation(SRC, "s1", label="before the write")
    new = make_annotation(SRC, "s1", label="after the write")
    slow_old_read = asyncio.Event()
    calls = 0

    async def fetch(query: SourceQuery) -> list[Annotation]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await slow_old_read.wait()
            return [old]
        return [new]

    before_write = asyncio.create_task(c.get(SRC, q("s1"), fetch))
    await asyncio.sleep(0.01)
    c.invalidate(SRC, ["s1"])
    # A read after the write must not join the pre-write call; it stores the new answer.
    after_write = await c.get(SRC, q("s1"), fetch)
    assert [a.label for a in after_write.items] == ["after the write"]
    slow_old_read.set()
    assert [a.label for a in (await before_write).items] == ["before the write"]
    # The pre-write answer, finishing last, did not overwrite the post-write one.
    cached = await c.get(SRC, q("s1"), fetch)
    assert cached.cached
    assert [a.label for a in cached.items] == ["after the write"]
    assert calls == 2


async def test_identifier_only_queries_are_cached_by_identifier_set() -> None:
    c = cache(ManualClock())
    items = [make_annotation(SRC, f"s{i}", identifier=f"run-{i % 2}") for i in range(4)]
    p = FakeProvider(SRC, items)
    a = await c.get(SRC, SourceQuery(identifiers=("run-0", "run-1")), p.fetch)
    b = await c.get(SRC, SourceQuery(identifiers=("run-1", "run-0")), p.fetch)
    only = await c.get(SRC, SourceQuery(identifiers=("run-0",)), p.fetch)
    assert len(a.items) == 4
    assert b.cached
    assert not only.cached
    assert len(only.items) == 2
    assert len(p.calls) == 2


async def test_disabled_cache_never_stores_but_still_single_flights() -> None:
    c = cache(ManualClock(), enabled=False)
    p = provider(("s1", 1))
    await c.get(SRC, q("s1"), p.fetch)
    assert not (await c.get(SRC, q("s1"), p.fetch)).cached
    assert len(p.calls) == 2
    assert len(c) == 0
    p.gate = asyncio.Event()
    waiters = [asyncio.create_task(c.get(SRC, q("s1"), p.fetch)) for _ in range(5)]
    await asyncio.sleep(0.01)
    p.gate.set()
    await asyncio.gather(*waiters)
    assert len(p.calls) == 3


async def test_unrequested_subjects_from_a_provider_are_dropped() -> None:
    c = cache(ManualClock())

    async def sloppy(query: SourceQuery) -> list[Annotation]:
        return [make_annotation(SRC, "s1"), make_annotation(SRC, "elsewhere")]

    answer = await c.get(SRC, q("s1"), sloppy)
    assert [a.subject.id for a in answer.items] == ["s1"]


async def test_duplicate_subject_ids_are_answered_once() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 2))
    answer = await c.get(SRC, q("s1", "s1"), p.fetch)
    assert len(answer.items) == 2
    assert p.calls[0].subject_ids == ("s1",)


async def test_max_entries_bounds_subject_groups() -> None:
    c = AnnotationCache(CacheConfig(max_entries=3), subject_of=SUBJECT_ID, clock=ManualClock())
    p = provider(*((f"s{i}", 1) for i in range(10)))
    for i in range(10):
        await c.get(SRC, q(f"s{i}"), p.fetch)
    assert len(c) == 3


async def test_the_group_stored_longest_ago_is_evicted_first_even_if_read_since() -> None:
    clock = ManualClock()
    c = AnnotationCache(CacheConfig(max_entries=2), subject_of=SUBJECT_ID, clock=clock)
    p = provider(("s1", 1), ("s2", 1), ("s3", 1))
    await c.get(SRC, q("s1"), p.fetch)
    clock.advance(1)
    await c.get(SRC, q("s2"), p.fetch)
    assert (await c.get(SRC, q("s1"), p.fetch)).cached  # a read does not renew s1's place
    await c.get(SRC, q("s3"), p.fetch)  # a third group: s1 (stored first) goes
    assert len(p.calls) == 3
    assert (await c.get(SRC, q("s2"), p.fetch)).cached
    assert not (await c.get(SRC, q("s1"), p.fetch)).cached
    assert len(p.calls) == 4


async def test_groups_are_released_once_too_old_even_to_serve_stale() -> None:
    clock = ManualClock()
    c = cache(clock, ttl=30, max_stale=300)
    p = provider(*((f"s{i}", 1) for i in range(5)))
    await c.get(SRC, q("s0", "s1", "s2"), p.fetch)
    clock.advance(200)
    await c.get(SRC, q("s3"), p.fetch)
    assert len(c) == 4  # past the ttl but still usable on error: kept
    clock.advance(101)  # s0-s2 are 301 s old, s3 101 s
    assert len(c) == 1
    # A store renews a group's time: s3 stored again lives on after s4 is stored.
    await c.get(SRC, q("s3"), p.fetch, use_cache=False)
    clock.advance(250)
    await c.get(SRC, q("s4"), p.fetch)
    assert len(c) == 2
    clock.advance(100)
    assert len(c) == 1


async def test_aclose_cancels_running_calls() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    p.gate = asyncio.Event()
    waiter = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0.01)
    await c.aclose()
    with pytest.raises(SourceUnavailableError, match="cancelled"):
        await waiter
    assert c.in_flight == 0


async def test_a_caller_cancelled_as_its_flight_is_cancelled_is_cancelled() -> None:
    c = cache(ManualClock())
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()
    waiter: asyncio.Task[object] | None = None

    async def fetch(query: SourceQuery) -> list[Annotation]:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            # The shared call is being cancelled (shutdown). In the same turn — after the call
            # has woken its waiting requests, before they resume — the request is cancelled too.
            assert waiter is not None
            loop.call_soon(waiter.cancel)
            raise
        return []

    waiter = asyncio.create_task(c.get(SRC, q("s1"), fetch))
    await asyncio.sleep(0.01)
    await c.aclose()
    # The request's own cancellation is not turned into the shared call's error (which a
    # request that was not cancelled gets: test_aclose_cancels_running_calls).
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_aclose_before_a_call_has_started_still_answers_its_waiters() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    waiter = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0)  # the request has started its call's task, which has not run yet
    assert p.started == 0
    await c.aclose()  # cancelled before its first step
    with pytest.raises(SourceUnavailableError, match="cancelled"):
        await asyncio.wait_for(waiter, timeout=5)


async def led_read(
    c: AnnotationCache[Annotation], fetch: Fetch[Annotation], p: FakeProvider
) -> CacheAnswer[Annotation]:
    """A read of s1 that runs the call it starts itself (*Leading*); ``fetch`` reads ``p``."""
    started = c.start(SRC, q("s1"), fetch, lead=True)
    assert isinstance(started, Waiting)
    assert p.started == 0  # nothing runs before the request finishes it itself
    return await c.finish(started)


async def test_a_led_call_runs_in_its_requests_task_and_is_shared() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    p.gate = asyncio.Event()
    tasks: list[asyncio.Task[Any] | None] = []

    async def fetch(query: SourceQuery) -> list[Annotation]:
        tasks.append(asyncio.current_task())
        return await p.fetch(query)

    leader = asyncio.create_task(led_read(c, fetch, p))
    await asyncio.sleep(0.01)
    joined = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0.01)
    p.gate.set()
    led, other = await leader, await joined
    assert tasks == [leader]
    assert p.started == 1
    assert led.items == other.items
    assert not led.cached


async def test_aclose_before_a_led_call_runs_answers_those_who_joined_it() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    started = c.start(SRC, q("s1"), p.fetch, lead=True)  # its request never finishes it
    assert isinstance(started, Waiting)
    joined = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0)
    await c.aclose()
    with pytest.raises(SourceUnavailableError, match="cancelled"):
        await asyncio.wait_for(joined, timeout=5)
    assert p.started == 0


async def test_aclose_while_a_request_runs_its_led_call_ends_it_for_everyone() -> None:
    c = cache(ManualClock())
    p = provider(("s1", 1))
    p.gate = asyncio.Event()
    leader = asyncio.create_task(led_read(c, p.fetch, p))
    await asyncio.sleep(0.01)
    joined = asyncio.create_task(c.get(SRC, q("s1"), p.fetch))
    await asyncio.sleep(0.01)
    await c.aclose()  # the led call runs in the leader's task, which aclose does not cancel
    with pytest.raises(SourceUnavailableError, match="cancelled"):
        await asyncio.wait_for(joined, timeout=5)
    p.gate.set()  # the call answers after its end: the leader gets the same end, nothing is kept
    with pytest.raises(SourceUnavailableError, match="cancelled"):
        await asyncio.wait_for(leader, timeout=5)
    assert len(c) == 0
