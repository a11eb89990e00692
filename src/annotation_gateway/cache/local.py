r"""The per-source answer cache with single flight and stale-on-error (SPEC §4).

Design
------
*What is cached.* A provider's answer to a pushed-down :class:`SourceQuery`, split per subject:
one entry per (source, subject id, filter key), where the filter key is everything of the
``SourceQuery`` except ``subject_ids`` (kinds, identifiers, names, excluded names, include_raw).
A multi-subject query looks up each subject, fetches only the missing subjects in **one**
provider call (the provider chunks long id lists), splits the answer by ``subject.id`` and
stores one entry per requested subject, an empty tuple for subjects with no annotations (a
negative answer is as worth caching as a positive one). So overlapping queries share upstream
work. An identifier-only query (no subject ids) is cached as one entry under the subject slot
``None`` with the identifier set in its filter key.

*Layout.* an :class:`~annotation_gateway.cache.expiring.ExpiringMap` keyed by
``(source, subject id | None)``; each value is a small dict
``filter key -> _Entry(items, stored_at)``. Grouping the filter variants of one subject
under one key makes :meth:`AnnotationCache.invalidate` a handful of ``pop`` calls, with no
secondary index to keep in step with expiry. ``max_entries`` bounds the number of
(source, subject) groups; past it, the group stored longest ago goes first. Items are tuples
of immutable items (the federation's compact :class:`~annotation_gateway.records.Record`\ s):
no copies. The cache is generic in the item type; ``subject_of`` tells it an item's subject id.

*Freshness.* A group is kept for ``max(ttl, max_stale)`` after its last store; an
entry is *fresh* while younger than ``ttl`` (served on a hit) and *usable* while younger than
``max_stale`` (served, marked stale, only when the source fails). ``stored_at`` is when the
upstream call *started*, so an entry never claims to be fresher than it is.

*Single flight.* Concurrent misses for the same (source, subject, filter key) share one upstream
call: the first creates a :class:`_Flight` (one future for the whole provider call) and registers
it under each subject it fetches; later callers await that flight for those subjects and fetch
only the rest themselves. The provider call runs in its own task (unless led, below), so a
caller that is cancelled neither cancels the call for the others nor leaves a half-resolved
future. Each waiter waits on a future of its own, which the call sets from its own step when it ends (a
cancelled caller cancels only that one): a request resumes the turn after its last call ends —
under load each turn of the event loop waits behind the other requests' work, and a shield and a
gather per source made it four turns. A failure is set on the flight's future, so every waiter
receives it, and nothing is stored (the cache is never poisoned by an error).

*Reading in two halves.* :meth:`AnnotationCache.start` looks up and starts or joins the flights
without waiting; :meth:`AnnotationCache.finish` waits for them. The federation starts every
source's read, then finishes each in turn (the calls run meanwhile): no task per source.

*Leading.* A request may run one call it starts in its own task instead (``start(lead=True)``,
run by ``finish``, which the request awaits at once): the federation leads the source it expects
to answer last. Two turns of the event loop leave that call's path — its task's first step, and
the wake of the request when it ends — and under load each turn waits behind the other requests'
work (16 clients at 100 ms upstreams: 0.3 ms a request at the median from the start of a call to
its request sent, ~0.7 ms from its records to the page). Others join a led call as any other.
Unlike a call in its own task, it ends with its request: cancelled with it — which the server
does only at shutdown (a request whose client left runs to its end) — it ends as a cancelled
call for those who joined it, as at shutdown (*Stale on error*, ``aclose``).

*Writes.* :meth:`invalidate` drops the written subjects' groups and the source's identifier
group, detaches in-flight flights of that source (later readers start a fresh call), and bumps
the source's generation: a flight that started before the invalidation does not store its
answer, which may predate the write (read-your-write).

*Bypass.* ``use_cache=False`` (``Cache-Control: no-cache``) neither reads fresh entries nor joins
flights, but stores what it fetched (a refresh) and may still serve stale on error.

*Unchanged refreshes.* With ``same_items`` (the federation's ``records.same_documents``), a
fetch whose answer for a subject is the same as the entry held for it keeps and answers the
held items, not the new copies: what was derived from them (the federation's merged result and
its page's JSON) stays valid and is renewed rather than built again.

*Shared tier.* With a :class:`SharedTier` (``[cache] backend = "redis"``, see
:mod:`annotation_gateway.cache.redis_tier`) this cache is the process's short-lived local tier: its
``ttl`` is ``min(ttl_s, local_ttl_s)`` and a flight asks the shared tier (which looks up its
store, coordinates with other processes and calls the source only for what it lacks) instead of
calling the source itself. An answer the shared tier already held is ``cached`` (no upstream call
was made or awaited). Entries it hands over keep two times: ``stored_at``, from which the local
tier counts its short freshness (never past the answer's real ``ttl``), and ``fetched_at``, when
the source was really asked, from which every stale limit is counted, so a stale answer is never
older than the caller allowed. Stale-on-error also uses the shared tier's entries older than
``ttl``. Without a shared tier none of this runs: the memory backend is unchanged.

*Stale on error.* When a fetch fails with an error that allows it (see :func:`may_serve_stale`)
and **every** subject of the request has a usable entry, the answer is served with
``stale=True``; otherwise the error is raised. The caller says how old a usable entry may be
(``max_stale_s``, at most the configured ``max_stale``; ``0`` turns stale answers off): the
federation turns them off when the client asked for fresh or complete data.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from annotation_gateway.cache.expiring import ExpiringMap
from annotation_gateway.cache.tier import (
    Confirm,
    FilterKey,
    Known,
    Prefetched,
    SharedTier,
    Slot,
    TierEntry,
)
from annotation_gateway.errors import CircuitOpenError, SourceError, SourceUnavailableError
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.resilience import Clock
from annotation_gateway.settings import CacheConfig

__all__ = [
    "MAX_IDENTIFIER_ENTRIES_PER_SOURCE",
    "AnnotationCache",
    "CacheAnswer",
    "Fetch",
    "Waiting",
    "filter_key",
    "may_serve_stale",
]

log = logging.getLogger(__name__)

MAX_IDENTIFIER_ENTRIES_PER_SOURCE = 1024
"""Identifier-only answers kept per source (they share one group; oldest dropped first)."""

T = TypeVar("T")
Fetch = Callable[[SourceQuery], Awaitable[Sequence[T]]]
"""The guarded upstream call for one source (breaker, deadline, metrics already wrapped)."""

_GroupKey = tuple[str, Slot]
_FlightKey = tuple[str, FilterKey, Slot]


def filter_key(query: SourceQuery) -> FilterKey:
    """The cache key part of ``query`` other than its subject ids (order-insensitive)."""
    return (
        tuple(sorted(set(query.subject_kinds))),
        tuple(sorted(set(query.identifiers))),
        tuple(sorted(set(query.names))),
        tuple(sorted(set(query.exclude_names))),
        query.include_raw,
    )


def may_serve_stale(exc: BaseException) -> bool:
    """Whether a cached answer may stand in for a failed fetch.

    Retryable failures (timeouts, unavailability, throttling) are transient, so an older answer
    is better than none. An open circuit is not retryable (retrying it is pointless) but it only
    opens after retryable failures, so it allows stale answers too. A permanent error (the vendor
    refused the request) must be shown, not papered over.
    """
    return isinstance(exc, SourceError) and (exc.retryable or isinstance(exc, CircuitOpenError))


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    items: tuple[T, ...]
    stored_at: float


@dataclass(frozen=True, slots=True)
class _HeldEntry(_Entry[T]):
    """An entry handed over by the shared tier: fresh from ``stored_at`` for the local ttl,
    usable (stale) from ``fetched_at``, when the source was really asked; ``version`` names the
    shared tier's copy (see :attr:`TierEntry.version`)."""

    fetched_at: float
    version: bytes | None


def _no_group(key: _GroupKey) -> None:
    return None


def _born(entry: _Entry[T]) -> float:
    return entry.fetched_at if isinstance(entry, _HeldEntry) else entry.stored_at


_Group = dict[FilterKey, _Entry[Any]]
"""One (source, subject)'s answers by filter key."""


@dataclass(slots=True)
class CacheAnswer(Generic[T]):
    """What :meth:`AnnotationCache.get` returns for one source."""

    items: list[T]
    """Every annotation of the requested subjects (each subject's answer once)."""
    cached: bool
    """True when no upstream call was made or awaited for this request."""
    stale: bool
    """True when served from entries older than ``ttl`` because the source failed."""
    fetched_at: float
    """Clock time the oldest part of the answer was fetched (for derived caches' expiry)."""
    ready_at: float = field(default_factory=time.perf_counter)
    """``perf_counter`` time the answer was ready (its flights' end), for the caller's timing:
    a caller may collect it later than that (:meth:`AnnotationCache.finish`)."""


class _Flight(Generic[T]):
    """One upstream call, shared by every request that needs one of its subjects."""

    __slots__ = ("ended", "future", "keys", "oldest", "run", "upstream", "usable", "waiters")

    def __init__(self, future: asyncio.Future[dict[Slot, tuple[T, ...]]]) -> None:
        self.future = future
        self.keys: list[_FlightKey] = []
        self.waiters: list[asyncio.Future[None]] = []
        """One per request waiting for this call, woken by :meth:`end` (module docstring)."""
        self.ended = 0.0
        """``perf_counter`` time the call ended (0 while it runs)."""
        self.upstream = True
        """False when the shared tier answered without an upstream call."""
        self.oldest = float("inf")
        """The oldest ``stored_at`` of what the shared tier handed over."""
        self.usable: dict[Slot, _HeldEntry[T]] | None = None
        """The shared tier's entries for stale-on-error, when the call failed."""
        self.run: Callable[[], Coroutine[Any, Any, None]] | None = None
        """The call, until the request leading it runs it itself (*Leading*); ``None`` for a
        call in a task of its own."""

    async def wait(self) -> None:
        """Until :attr:`future` is done. A cancelled caller cancels only its own wait."""
        while not self.future.done():
            waiter = self.future.get_loop().create_future()
            self.waiters.append(waiter)
            await waiter

    def fail(self, error: BaseException) -> None:
        """Every waiter gets ``error`` — unless the call was ended already (``aclose``, while a
        request ran its led call); reading it back once marks it retrieved, so that asyncio does
        not log "exception was never retrieved" when all waiters are gone."""
        if not self.future.done():
            self.future.set_exception(error)
            self.future.exception()

    def end(self) -> None:
        """The call is over: its future cancelled if it got neither an answer nor an error (so
        that no request waits for ever), its waiters woken."""
        if not self.future.done():
            self.future.cancel()
        # At once, from the call's own step: each waiting request resumes the next turn.
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Waiting(NamedTuple, Generic[T]):
    """An answer waiting for its flights (:meth:`AnnotationCache.start`)."""

    source: str
    slots: list[Slot]
    parts: dict[Slot, tuple[T, ...]]
    """The subjects already answered (fresh entries)."""
    usable: dict[Slot, _Entry[T]]
    """Entries that may stand in for a failed fetch (stale on error)."""
    oldest: float
    waits: dict[int, _Flight[T]]
    slot_flight: dict[Slot, _Flight[T]]
    stale_limit: float
    led: _Flight[T] | None
    """The flight this request runs itself in :meth:`AnnotationCache.finish` (*Leading*)."""

    def ready_at(self) -> float:
        """``perf_counter`` time the last of its flights ended (0 while one runs)."""
        return max(flight.ended for flight in self.waits.values())


class AnnotationCache(Generic[T]):
    """Per-(source, subject, filter key) answers with TTL, single flight and stale-on-error."""

    def __init__(
        self,
        config: CacheConfig,
        *,
        subject_of: Callable[[T], str],
        clock: Clock = time.monotonic,
        shared: SharedTier[T] | None = None,
        same_items: Callable[[Sequence[T], Sequence[T]], bool] | None = None,
    ) -> None:
        """``shared``: the shared tier this cache is the local tier of (``None``: memory only).
        ``same_items``: whether a held answer and a new one are the same (see *Unchanged
        refreshes*); ``None`` stores every new answer."""
        self._subject_of = subject_of
        self._same_items = same_items
        self._clock = clock
        self._enabled = config.enabled
        self._shared = shared if config.enabled else None
        self._ttl = config.ttl_s if self._shared is None else min(config.ttl_s, config.local_ttl_s)
        self._max_stale = max(config.ttl_s, config.max_stale_s)
        self._store_enabled = config.enabled and self._max_stale > 0
        # Reads need no expiry check: a group past its time holds only entries older than
        # max_stale, which the age checks of get() never serve; its expiry is about memory.
        self._groups: ExpiringMap[_GroupKey, _Group] = ExpiringMap(
            ttl=max(self._max_stale, 1e-9), max_weight=config.max_entries, clock=clock
        )
        self._flights: dict[_FlightKey, _Flight[T]] = {}
        self._generation: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- reading ------------------------------------------------------------------------------

    async def get(
        self,
        source: str,
        query: SourceQuery,
        fetch: Fetch[T],
        *,
        use_cache: bool = True,
        max_stale_s: float | None = None,
        store: bool = True,
        prefetched: Prefetched | None = None,
    ) -> CacheAnswer[T]:
        """The answer of ``source`` to ``query``, from the cache where fresh, else via ``fetch``.

        Raises the ``SourceError`` of the fetch unless a stale answer may be served instead:
        one younger than ``max_stale_s`` (capped by the configured ``max_stale_s``; ``None``:
        the configured value; ``0``: never stale). ``store=False`` reads the cache (and joins
        flights) but keeps nothing it fetched itself: a streaming export must not hold the
        whole export in the cache. ``prefetched``: what :meth:`confirm` found for this answer
        (the shared tier's fill uses it instead of a lookup of its own).
        """
        started = self.start(
            source,
            query,
            fetch,
            use_cache=use_cache,
            max_stale_s=max_stale_s,
            store=store,
            prefetched=prefetched,
        )
        return started if isinstance(started, CacheAnswer) else await self.finish(started)

    def start(
        self,
        source: str,
        query: SourceQuery,
        fetch: Fetch[T],
        *,
        use_cache: bool = True,
        max_stale_s: float | None = None,
        store: bool = True,
        prefetched: Prefetched | None = None,
        lead: bool = False,
    ) -> CacheAnswer[T] | Waiting[T]:
        """:meth:`get`'s first half, which does not wait (its other arguments are :meth:`get`'s):
        the answer when the cache has it all fresh, else the flights its missing subjects wait
        for (started or joined now), which :meth:`finish` awaits. A caller asking several sources
        starts them all, then finishes each in turn: the flights run in their own tasks, so the
        answers come in the time of the slowest, with no task of the caller's per source.
        ``lead``: the call this starts, if any, is run by the caller's own task in
        :meth:`finish` (*Leading*), which the caller must then await at once."""
        stale_limit = self._max_stale if max_stale_s is None else min(self._max_stale, max_stale_s)
        fkey = filter_key(query)
        slots: list[Slot] = list(dict.fromkeys(query.subject_ids)) if query.subject_ids else [None]
        now = self._clock()
        read = use_cache and self._enabled

        parts: dict[Slot, tuple[T, ...]] = {}
        usable: dict[Slot, _Entry[T]] = {}
        known: dict[Slot, _HeldEntry[T]] = {}
        oldest = now
        missing: list[Slot] = []
        # The hit path of every read (20,000 turns for a metrics request over 10,000 ids):
        # locals, no calls but the dicts' own.
        groups_get = self._groups.get if self._enabled else _no_group
        fresh_after = now - self._ttl if read else float("inf")
        for slot in slots:
            group = groups_get((source, slot))
            entry = group.get(fkey) if group is not None else None
            if entry is not None:
                stored_at = entry.stored_at
                if stored_at > fresh_after:
                    parts[slot] = entry.items
                    if stored_at < oldest:
                        oldest = stored_at
                    continue
                if now - _born(entry) < stale_limit:
                    usable[slot] = entry
                if isinstance(entry, _HeldEntry) and entry.version is not None:
                    known[slot] = entry
            missing.append(slot)

        if not missing:
            if prefetched is not None and self._shared is not None:
                self._shared.release(prefetched)
            return CacheAnswer(_concat(parts, slots), cached=True, stale=False, fetched_at=oldest)

        # Join flights already fetching some of the missing subjects; fetch the rest in one call.
        waits: dict[int, _Flight[T]] = {}
        slot_flight: dict[Slot, _Flight[T]] = {}
        to_fetch: list[Slot] = []
        led: _Flight[T] | None = None
        for slot in missing:
            # Joining needs no stored entry: single flight holds even with the cache disabled.
            flight = self._flights.get((source, fkey, slot)) if use_cache else None
            if flight is None:
                to_fetch.append(slot)
            else:
                slot_flight[slot] = flight
                waits[id(flight)] = flight
        if prefetched is not None and self._shared is not None and to_fetch != slots:
            # Found for all of this answer's slots: not for a flight of only some of them.
            self._shared.release(prefetched)
            prefetched = None
        if to_fetch:
            flight = self._start_flight(
                source,
                fkey,
                query,
                to_fetch,
                fetch,
                started_at=now,
                store=store,
                read=use_cache,
                known=known,
                prefetched=prefetched,
                lead=lead,
            )
            for slot in to_fetch:
                slot_flight[slot] = flight
            waits[id(flight)] = flight
            if lead:
                led = flight
        return Waiting(source, slots, parts, usable, oldest, waits, slot_flight, stale_limit, led)

    async def finish(self, waiting: Waiting[T]) -> CacheAnswer[T]:
        """The answer :meth:`start` left waiting for its flights: raises what :meth:`get` raises."""
        source, slots, parts, usable, oldest, waits, slot_flight, stale_limit, led = waiting
        failure: BaseException | None = None
        if led is not None and led.run is not None:
            run, led.run = led.run, None
            await _flying(led, run)  # this request's own call, in its own task (*Leading*)
        for flight in waits.values():
            await flight.wait()  # each call runs in its own task: in all, the time of the slowest
        for flight in waits.values():
            call = flight.future
            failure = asyncio.CancelledError() if call.cancelled() else call.exception()
            if failure is not None:
                break
        if failure is None:
            for slot, flight in slot_flight.items():
                parts[slot] = flight.future.result()[slot]
            # Joined flights may have started a little before ``now``; ``now`` is close enough
            # for the derived caches' expiry, which only needs to not outlive the ttl by much.
            # Only the shared tier's flights (no upstream call, older entries) change either.
            upstream = False
            for flight in waits.values():
                upstream = upstream or flight.upstream
                oldest = min(oldest, flight.oldest)
            return CacheAnswer(
                _concat(parts, slots),
                cached=not upstream,
                stale=False,
                fetched_at=oldest,
                ready_at=waiting.ready_at(),
            )

        if isinstance(failure, asyncio.CancelledError):
            # The shared call was cancelled (shutdown), not this request: report it as a source
            # failure rather than cancelling a caller that was not cancelled.
            failure = SourceUnavailableError(f"{source}: the upstream call was cancelled", source=source)
        if may_serve_stale(failure) and self._shared is not None:
            later = self._clock()
            for slot, flight in slot_flight.items():
                held = flight.usable.get(slot) if flight.usable else None
                if held is not None and slot not in usable and later - held.fetched_at < stale_limit:
                    usable[slot] = held
        if may_serve_stale(failure) and all(slot in parts or slot in usable for slot in slots):
            for slot, entry in usable.items():
                parts[slot] = entry.items
                oldest = min(oldest, entry.stored_at)
            log.info("serving stale answer", extra={"source": source, "error": type(failure).__name__})
            return CacheAnswer(
                _concat(parts, slots),
                cached=False,
                stale=True,
                fetched_at=oldest,
                ready_at=waiting.ready_at(),
            )
        raise failure

    async def confirm(
        self, asks: Sequence[tuple[str, SourceQuery]]
    ) -> list[CacheAnswer[T] | Prefetched] | None:
        """Ask the shared tier at once whether the answers to ``asks`` (source, its query) that
        this process holds are still current: a polled query whose merged result expired.

        Per ask, its answer (``cached``: no upstream call, the local copies fresh again) when the
        shared tier confirmed every slot, else what the tier found, for :meth:`get`'s
        ``prefetched`` (so that the request still makes one round trip to the tier). ``None``
        (read every ask as usual) without a shared tier, when a slot is not held with a version
        or is being fetched, when every slot is still fresh here (nothing to ask), or when the
        tier could not be asked.
        """
        shared = self._shared
        if shared is None or not asks:
            return None
        now = self._clock()
        fresh_after = now - self._ttl
        plans: list[Confirm[T]] = []
        expired = False
        for source, query in asks:
            fkey = filter_key(query)
            slots: list[Slot] = list(dict.fromkeys(query.subject_ids)) if query.subject_ids else [None]
            known: dict[Slot, tuple[bytes, tuple[T, ...]]] = {}
            for slot in slots:
                group = self._groups.get((source, slot))
                entry = group.get(fkey) if group is not None else None
                if not isinstance(entry, _HeldEntry) or entry.version is None:
                    return None
                if (source, fkey, slot) in self._flights:
                    return None  # the read joins it
                expired = expired or entry.stored_at <= fresh_after
                known[slot] = (entry.version, entry.items)
            plans.append((source, fkey, slots, known))
        if not expired:
            return None
        generations = [self._generation.get(plan[0], 0) for plan in plans]
        found = await shared.confirm(plans)
        if found is None:
            return None
        now = self._clock()
        answers: list[CacheAnswer[T] | Prefetched] = []
        for (source, fkey, slots, _), generation, result in zip(plans, generations, found, strict=True):
            if isinstance(result, Prefetched):
                answers.append(result)
                continue
            entries = {slot: self._held(result[slot], now, shared.ttl_s) for slot in slots}
            # As a flight: what was read before a write here is answered, not kept.
            if self._store_enabled and self._generation.get(source, 0) == generation:
                for slot, entry in entries.items():
                    self._put(source, fkey, slot, entry, now)
            answers.append(
                CacheAnswer(
                    _concat({slot: entry.items for slot, entry in entries.items()}, slots),
                    cached=True,
                    stale=False,
                    fetched_at=min(entry.stored_at for entry in entries.values()),
                )
            )
        return answers

    def _start_flight(
        self,
        source: str,
        fkey: FilterKey,
        query: SourceQuery,
        slots: list[Slot],
        fetch: Fetch[T],
        *,
        started_at: float,
        store: bool,
        read: bool = True,
        known: Mapping[Slot, _HeldEntry[T]] | None = None,
        prefetched: Prefetched | None = None,
        lead: bool = False,
    ) -> _Flight[T]:
        loop = asyncio.get_running_loop()
        flight = _Flight(loop.create_future())
        for slot in slots:
            key = (source, fkey, slot)
            self._flights[key] = flight  # a no-cache refresh replaces an older flight here
            flight.keys.append(key)
        subject_ids = [s for s in slots if s is not None]
        upstream_query = query.with_subject_ids(subject_ids) if subject_ids else query
        generation = self._generation.get(source, 0)
        if self._shared is None:
            run = functools.partial(
                self._run_flight,
                source,
                fkey,
                upstream_query,
                slots,
                fetch,
                flight,
                generation if store else None,
                started_at,
            )
        else:
            held = {
                slot: (entry.version, entry.items)
                for slot in slots
                if (entry := (known or {}).get(slot)) is not None and entry.version is not None
            }
            shared = self._shared
            run = functools.partial(
                self._run_shared_flight,
                shared,
                source,
                fkey,
                upstream_query,
                slots,
                fetch,
                flight,
                generation,
                store,
                read,
                held,
                prefetched,
            )
        if lead:
            flight.run = run
            return flight
        task = loop.create_task(_flying(flight, run), name=f"cache-flight:{source}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flight

    async def _run_flight(
        self,
        source: str,
        fkey: FilterKey,
        query: SourceQuery,
        slots: list[Slot],
        fetch: Fetch[T],
        flight: _Flight[T],
        generation: int | None,
        started_at: float,
    ) -> None:
        """Run one upstream call; store its answer unless ``generation`` is ``None`` (not to be
        stored) or no longer the source's (a write happened meanwhile)."""
        future = flight.future
        try:
            items = await fetch(query)
            parts = _split(source, items, slots, self._subject_of)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            flight.fail(exc)
            return
        finally:
            self._end_flight(flight)
        if future.done():
            return  # ended by aclose while its request ran it (*Leading*): nothing is kept
        if self._store_enabled and generation is not None and self._generation.get(source, 0) == generation:
            self._store(source, fkey, parts, started_at)
        future.set_result(parts)

    async def _run_shared_flight(
        self,
        shared: SharedTier[T],
        source: str,
        fkey: FilterKey,
        query: SourceQuery,
        slots: list[Slot],
        fetch: Fetch[T],
        flight: _Flight[T],
        generation: int,
        store: bool,
        read: bool,
        known: Known[T],
        prefetched: Prefetched | None,
    ) -> None:
        """Like :meth:`_run_flight`, through the shared tier; it says what it held, how old."""
        future = flight.future
        subject_of = self._subject_of

        async def fetch_parts(wanted: list[Slot]) -> dict[Slot, tuple[T, ...]]:
            ids = [s for s in wanted if s is not None]
            items = await fetch(query.with_subject_ids(ids) if ids else query)
            return _split(source, items, wanted, subject_of)

        try:
            fill = await shared.fill(
                source,
                fkey,
                slots,
                fetch_parts,
                read=read,
                store=store and self._store_enabled,
                known=known,
                prefetched=prefetched,
            )
            now = self._clock()
            flight.upstream = fill.upstream
            if fill.error is not None:
                flight.usable = {slot: self._held(e, now, shared.ttl_s) for slot, e in fill.usable.items()}
                raise fill.error
            entries = {slot: self._held(fill.found[slot], now, shared.ttl_s) for slot in slots}
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            flight.fail(exc)  # (the shared tier's own failures are never raised: it fetches)
            return
        finally:
            self._end_flight(flight)
        if future.done():
            return  # ended by aclose while its request ran it (*Leading*): nothing is kept
        if store and self._store_enabled and self._generation.get(source, 0) == generation:
            for slot, entry in entries.items():
                self._put(source, fkey, slot, entry, now)
        flight.oldest = min(entry.stored_at for entry in entries.values())
        future.set_result({slot: entry.items for slot, entry in entries.items()})

    def _held(self, entry: TierEntry[T], now: float, shared_ttl: float) -> _HeldEntry[T]:
        # Fresh here for the local ttl from now, but never past the answer's real ttl.
        fetched_at = now - max(entry.age_s, 0.0)
        stored_at = min(now, fetched_at + max(shared_ttl - self._ttl, 0.0))
        return _HeldEntry(entry.items, stored_at, fetched_at, entry.version)

    def _end_flight(self, flight: _Flight[T]) -> None:
        flight.ended = time.perf_counter()
        for key in flight.keys:
            if self._flights.get(key) is flight:
                del self._flights[key]

    # --- storing and invalidating -------------------------------------------------------------

    def _store(
        self, source: str, fkey: FilterKey, parts: dict[Slot, tuple[T, ...]], stored_at: float
    ) -> None:
        now = self._clock()
        for slot, items in parts.items():
            # The flight answers ``parts``: the held items where unchanged, so what was built on
            # them holds.
            parts[slot] = self._put(source, fkey, slot, _Entry(items, stored_at), now, keep_same=True)

    def _put(
        self,
        source: str,
        fkey: FilterKey,
        slot: Slot,
        entry: _Entry[T],
        now: float,
        *,
        keep_same: bool = False,
    ) -> tuple[T, ...]:
        """Store ``entry``; the items kept. ``keep_same``: the items held under ``fkey`` instead
        when ``same_items`` says the new ones are the same (see *Unchanged refreshes*)."""
        key = (source, slot)
        old = self._groups.get(key)
        group: _Group = {}
        if old:
            same = self._same_items if keep_same else None
            held = old.get(fkey) if same is not None else None
            if held is not None and same is not None and same(held.items, entry.items):
                entry = _Entry(held.items, entry.stored_at)
            # Carry over the other filter variants that are still usable; drop dead ones.
            for k, e in old.items():
                if k != fkey and now - _born(e) < self._max_stale:
                    group[k] = e
            entry_limit = MAX_IDENTIFIER_ENTRIES_PER_SOURCE
            if slot is None and len(group) >= entry_limit:
                for k in list(group)[: len(group) - entry_limit + 1]:
                    del group[k]
        group[fkey] = entry
        self._groups.put(key, group)  # its time starts again
        return entry.items

    def invalidate(self, source: str, subject_ids: Iterable[str]) -> None:
        """Forget ``source``'s answers for ``subject_ids`` (and its identifier-only answers)."""
        self._generation[source] = self._generation.get(source, 0) + 1
        subjects: set[Slot] = set(subject_ids)
        subjects.add(None)
        for slot in subjects:
            self._groups.pop((source, slot), None)
        for key in [k for k in self._flights if k[0] == source and k[2] in subjects]:
            del self._flights[key]

    async def invalidate_shared(self, source: str, subject_ids: Collection[str]) -> None:
        """Tell the other processes (through the shared tier) what :meth:`invalidate` forgot
        here; nothing without a shared tier."""
        if self._shared is not None:
            await self._shared.invalidate(source, subject_ids)

    async def shared_status(self) -> dict[str, Any] | None:
        """The shared tier's state (``/readyz``), ``None`` without one."""
        return None if self._shared is None else await self._shared.status()

    def clear(self) -> None:
        """Forget everything (in-flight calls finish but do not store)."""
        for source in {k[0] for k in self._groups.held_keys()} | {k[0] for k in self._flights}:
            self._generation[source] = self._generation.get(source, 0) + 1
        self._groups.clear()
        self._flights.clear()

    # --- housekeeping -------------------------------------------------------------------------

    @property
    def ttl(self) -> float:
        """How long an entry is fresh here (the local tier's ttl when there is a shared tier)."""
        return self._ttl

    @property
    def shared(self) -> SharedTier[T] | None:
        return self._shared

    @property
    def in_flight(self) -> int:
        """Upstream calls running now."""
        return len(self._tasks)

    def __len__(self) -> int:
        """Cached (source, subject) groups."""
        return len(self._groups)

    async def aclose(self) -> None:
        """Cancel the upstream calls still running and wait for them to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A call cancelled before its task's first step (or not yet run by the request leading
        # it) never ran its own ending: its waiters are told here (as a cancelled call), so that
        # no request waits for ever.
        for flight in list(self._flights.values()):
            flight.end()
        self._flights.clear()
        if self._shared is not None:
            await self._shared.aclose()


async def _flying(flight: _Flight[Any], run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``run()`` (a flight's call; made here, so that a task cancelled before its first step
    leaves no coroutine unawaited), then its waiters woken whatever happened: a call that ended
    without an answer or an error (a bug) is cancelled, so that no request waits for ever."""
    try:
        await run()
    finally:
        flight.end()


def _split(
    source: str, items: Sequence[T], slots: list[Slot], subject_of: Callable[[T], str]
) -> dict[Slot, tuple[T, ...]]:
    if slots == [None]:
        return {None: tuple(items)}
    buckets: dict[Slot, list[T]] = {slot: [] for slot in slots}
    stray = 0
    for item in items:
        bucket = buckets.get(subject_of(item))
        if bucket is None:
            stray += 1
        else:
            bucket.append(item)
    if stray:
        # The provider contract says every item matches the query; an item about a subject not
        # asked for cannot be attributed to a cache entry, so it is dropped, loudly.
        log.warning(
            "provider returned annotations of subjects not asked for",
            extra={"source": source, "count": stray},
        )
    return {slot: tuple(bucket) for slot, bucket in buckets.items()}


def _concat(parts: dict[Slot, tuple[T, ...]], slots: list[Slot]) -> list[T]:
    if len(slots) == 1:
        return list(parts[slots[0]])
    return list(itertools.chain.from_iterable(parts[slot] for slot in slots))
