r"""Scopes (SPEC §7): reading every subject a source can enumerate, a chunk of subjects at a time.

Contract:
- *Discovery* (:class:`DiscoveryCache`): each source's ``ScopeSubjects`` for one
  ``ScopeRequest`` (:mod:`annotation_gateway.providers.base`) is cached like annotations —
  fresh for ``ttl``, one upstream call for concurrent misses (single flight, in its own task so a
  cancelled caller does not cancel it for the others), kept up to ``max_stale`` and served
  marked stale when the source fails with a retryable error. A failed discovery stores nothing.
- *Order* (:func:`scope_key`): a scope answer is ordered by subject id, then as id queries are
  (``updated_at`` descending, then ``id``). Subject order is what lets a page read only the
  subjects it needs: a global newest-first order would need every annotation of the scope before
  the first page (memory and latency growing with the scope), which SPEC's "nothing is held
  whole" forbids. Exports over a scope have the same order.
- *Walking* (:class:`ScopeWalk`): the selected sources' subject lists (sorted) are merged into
  one subject order; from a position (a cursor's subject and record) the walk reads the next
  chunk of subjects — per source and kind one id query through the annotation cache, all
  concurrently — filters, drops what is not after the position, and yields the chunk's records
  in order. A subject is never split across chunks (several sources' entries for one id go
  together), so everything a chunk yields precedes everything after it. Chunks are sized by the
  density seen so far towards ``target`` records (first chunk: :data:`~.limits.SCOPE_FIRST_CHUNK_SUBJECTS`),
  at most :data:`~.limits.SCOPE_CHUNK_MAX_SUBJECTS`. Memory holds one chunk, never the scope.
- *Accounting*: per source, ``scanned_subjects`` counts the subjects it was asked about in this
  walk and ``count`` the matches among them after the position (a scope answer does not read
  the whole scope, so it cannot count it). A source that fails mid-walk is reported as failed and
  not asked again in that walk.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from bisect import bisect_left
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from cachetools import TTLCache

from annotation_gateway.cache import may_serve_stale
from annotation_gateway.errors import SourceError, SourceUnavailableError
from annotation_gateway.federation import limits
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.federation.cursor import ScopeKey
from annotation_gateway.federation.guards import SourceRuntime
from annotation_gateway.federation.merge import Outcome
from annotation_gateway.federation.query import FederatedQuery
from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.base import ScopeRequest, ScopeSubjects, SourceQuery
from annotation_gateway.records import Record
from annotation_gateway.resilience import Clock
from annotation_gateway.settings import CacheConfig

__all__ = ["DiscoveryAnswer", "DiscoveryCache", "ScopeKey", "ScopeWalk", "scope_key"]

_SUBJECT_ID = itemgetter(0)


def scope_key(record: Record) -> ScopeKey:
    return (record.subject_id, -record.updated_us, record.id)


# --- discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscoveryAnswer:
    subjects: ScopeSubjects
    cached: bool
    stale: bool


@dataclass(frozen=True, slots=True)
class _Found:
    subjects: ScopeSubjects
    stored_at: float


class DiscoveryCache:
    """Each source's scope per request: TTL, single flight, stale on error (module docstring)."""

    def __init__(self, config: CacheConfig, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._enabled = config.enabled
        self._ttl = config.ttl_s
        self._max_stale = max(config.ttl_s, config.max_stale_s)
        self._found: TTLCache[tuple[str, ScopeRequest], _Found] = TTLCache(
            maxsize=limits.DISCOVERY_CACHE_MAX_ITEMS, ttl=max(self._max_stale, 1e-9), timer=clock
        )
        self._flights: dict[tuple[str, ScopeRequest], asyncio.Future[ScopeSubjects]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(
        self,
        source: str,
        request: ScopeRequest,
        discover: Callable[[], Awaitable[ScopeSubjects]],
        *,
        use_cache: bool,
        max_stale_s: float | None,
    ) -> DiscoveryAnswer:
        key = (source, request)
        now = self._clock()
        found = self._found.get(key) if self._enabled else None
        if found is not None and use_cache and now - found.stored_at < self._ttl:
            return DiscoveryAnswer(found.subjects, cached=True, stale=False)
        flight = self._flights.get(key) if use_cache else None
        if flight is None:
            flight = self._start(key, discover, started_at=now)
        try:
            subjects = await asyncio.shield(flight)
        except asyncio.CancelledError:
            if not flight.cancelled():
                raise  # this caller was cancelled
            failure: BaseException = SourceUnavailableError(
                f"{source}: the discovery call was cancelled", source=source
            )
        except SourceError as exc:
            failure = exc
        else:
            return DiscoveryAnswer(subjects, cached=False, stale=False)
        limit = self._max_stale if max_stale_s is None else min(self._max_stale, max_stale_s)
        if found is not None and may_serve_stale(failure) and now - found.stored_at < limit:
            return DiscoveryAnswer(found.subjects, cached=False, stale=True)
        raise failure

    def _start(
        self,
        key: tuple[str, ScopeRequest],
        discover: Callable[[], Awaitable[ScopeSubjects]],
        *,
        started_at: float,
    ) -> asyncio.Future[ScopeSubjects]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ScopeSubjects] = loop.create_future()
        self._flights[key] = future

        async def run() -> None:
            try:
                subjects = await discover()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when no one waits
                return
            finally:
                if self._flights.get(key) is future:
                    del self._flights[key]
            if self._enabled:
                self._found[key] = _Found(subjects, started_at)
            future.set_result(subjects)

        task = loop.create_task(run(), name=f"scope-discovery:{key[0]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- walking -----------------------------------------------------------------------------------


Ask = Callable[[SourceRuntime, SourceQuery, Callable[[Record], bool] | None], Awaitable[Outcome]]
"""Reads one source's answer to one id query through the cache (the facade's ``_ask``)."""


@dataclass(slots=True)
class _Tally:
    """One source's part of a walk."""

    runtime: SourceRuntime
    subjects: tuple[tuple[str, SubjectKind], ...]
    keep: Callable[[Record], bool] | None
    stale: bool
    cached: bool
    scanned: int = 0
    count: int = 0
    elapsed_ms: float = 0.0
    failure: SourceError | None = None

    def status(self) -> SourceStatus:
        if self.failure is not None:
            return SourceStatus(
                self.runtime.name,
                self.runtime.kind,
                "error",
                elapsed_ms=self.elapsed_ms,
                error=self.failure.problem(),
                scanned_subjects=self.scanned,
            )
        return SourceStatus(
            self.runtime.name,
            self.runtime.kind,
            "ok",
            count=self.count,
            cached=self.cached,
            stale=self.stale,
            elapsed_ms=self.elapsed_ms,
            scanned_subjects=self.scanned,
        )


@dataclass(slots=True)
class ScopeWalk:
    """One pass over the merged subject order of the discovered sources (module docstring).

    :meth:`add` pairs each source with its discovery answer and its record filter (the query's
    gateway filter, and the scope's queues when it names them); ``query`` gives the filters
    pushed down with each chunk's ids; ``after`` the position to start after (``None``: the
    start).
    """

    ask: Ask
    query: FederatedQuery
    after: ScopeKey | None
    target: int
    tallies: list[_Tally] = field(default_factory=list)
    exhausted: bool = False
    _subjects_seen: int = 0
    _records_seen: int = 0

    def add(
        self,
        runtime: SourceRuntime,
        found: DiscoveryAnswer,
        keep: Callable[[Record], bool] | None,
        *,
        elapsed_ms: float = 0.0,
    ) -> None:
        subjects = found.subjects.subjects
        if self.after is not None:
            # The first entry of the position's subject (a subject is never split across chunks).
            start = bisect_left(subjects, self.after[0], key=_SUBJECT_ID)
            subjects = subjects[start:]
        queues = found.subjects.queue_ids
        if queues is not None:
            inner = keep

            def keep_in_scope(record: Record) -> bool:
                return record.queue_id in queues and (inner is None or inner(record))

            keep = keep_in_scope
        self.tallies.append(
            _Tally(runtime, subjects, keep, stale=found.stale, cached=found.cached, elapsed_ms=elapsed_ms)
        )

    def add_failed(self, runtime: SourceRuntime, failure: SourceError) -> None:
        """A source whose discovery failed: reported, never asked."""
        self.tallies.append(_Tally(runtime, (), None, stale=False, cached=False, failure=failure))

    def statuses(self) -> list[SourceStatus]:
        return [t.status() for t in self.tallies]

    @property
    def failures(self) -> list[SourceError]:
        return [t.failure for t in self.tallies if t.failure is not None]

    async def chunks(self) -> AsyncGenerator[list[Record], None]:
        """Each chunk's records after the position, in scope order (may be empty)."""
        entries = self._entries()
        size = limits.SCOPE_FIRST_CHUNK_SUBJECTS
        pending: tuple[str, int, SubjectKind] | None = None
        while True:
            chunk: list[tuple[str, int, SubjectKind]] = []
            if pending is not None:
                chunk.append(pending)
                pending = None
            for entry in entries:
                # Never split one subject id across chunks: all its entries go together.
                if len(chunk) >= size and entry[0] != chunk[-1][0]:
                    pending = entry
                    break
                chunk.append(entry)
            if not chunk:
                self.exhausted = True
                return
            records = await self._read(chunk)
            self._subjects_seen += len(chunk)
            self._records_seen += len(records)
            density = max(self._records_seen / self._subjects_seen, 0.05)
            size = min(max(int(self.target / density) + 1, 1), limits.SCOPE_CHUNK_MAX_SUBJECTS)
            if pending is None:
                # Peek: an empty rest means this chunk was the last.
                nxt = next(entries, None)
                if nxt is None:
                    self.exhausted = True
                    yield records
                    return
                pending = nxt
            yield records

    def _entries(self) -> Iterator[tuple[str, int, SubjectKind]]:
        """Every (subject id, source index, kind) in subject order, lazily merged."""
        return heapq.merge(*(_tagged(tally.subjects, index) for index, tally in enumerate(self.tallies)))

    async def _read(self, chunk: Sequence[tuple[str, int, SubjectKind]]) -> list[Record]:
        wanted: dict[tuple[int, SubjectKind], list[str]] = {}
        for sid, index, kind in chunk:
            if self.tallies[index].failure is None:
                wanted.setdefault((index, kind), []).append(sid)
        jobs: list[tuple[_Tally, Awaitable[Outcome]]] = []
        for (index, kind), ids in wanted.items():
            tally = self.tallies[index]
            tally.scanned += len(ids)
            query = self.query
            pushed = SourceQuery(
                subject_ids=tuple(ids),
                subject_kinds=(kind,),
                identifiers=query.identifiers,
                names=query.names,
                exclude_names=query.exclude_names,
                include_raw=query.include_raw,
            )
            jobs.append((tally, self.ask(tally.runtime, pushed, tally.keep)))
        outcomes = await asyncio.gather(*(job for _, job in jobs))
        after = self.after
        records: list[Record] = []
        for (tally, _), outcome in zip(jobs, outcomes, strict=True):
            tally.elapsed_ms += outcome.status.elapsed_ms
            if outcome.failure is not None:
                tally.failure = outcome.failure
                continue
            tally.cached = tally.cached and outcome.status.cached
            tally.stale = tally.stale or outcome.status.stale
            kept = outcome.records or []
            if after is not None:
                kept = [r for r in kept if scope_key(r) > after]
            tally.count += len(kept)
            records.extend(kept)
        # Ids are unique across sources ("{source}:{native id}") and each (subject, kind) is
        # asked once, so there is nothing to de-duplicate.
        records.sort(key=scope_key)
        return records


def _tagged(
    subjects: tuple[tuple[str, SubjectKind], ...], index: int
) -> Iterator[tuple[str, int, SubjectKind]]:
    # A function, not a nested generator expression: there ``index`` would be looked up when
    # the generator runs, and every source's subjects would carry the last source's index.
    for subject_id, kind in subjects:
        yield (subject_id, index, kind)
