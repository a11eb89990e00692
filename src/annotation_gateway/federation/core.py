"""The facade: :class:`Federation` owns the sources, their cache and breakers, and answers
federated queries, writes and health checks by running the pipeline's stages.

Contract (SPEC §3, §4) — the stages are their own modules:
query (:mod:`.query`, validated once when built) → plan (:mod:`.planner`: selection, skips,
push-down, gateway filters) → per-source reads through the answer cache
(:class:`~annotation_gateway.cache.AnnotationCache`: TTL, single flight, stale-on-error) and the
guards (:mod:`.guards`: bulkhead, deadline, breaker) → merge (:mod:`.merge`) → one page, with a
signed keyset cursor (:mod:`.cursor`).

*Failures.* A failing source gives ``status="error"`` with its problem object and
``partial=True``: never a silently short answer. With ``partial="deny"`` the first failure (in
source order) is raised. When every queried source fails, :func:`~.merge.all_failed` is raised.
When every selected source is skipped the answer is an empty, non-partial page that says why.

*Counts.* ``SourceStatus.count`` is the number of that source's matches for the whole query
(all pages), after the gateway's filters.

*Cache.* On top of the per-source cache, the merged, filtered and sorted result of a whole
query is kept per query fingerprint until the oldest answer it was built from is ``ttl`` old, so
a repeated query or its next page costs a dict lookup and a bisect, with no per-annotation work.
Only complete, fresh results are kept there; writes through :meth:`Federation.write` drop both
layers for what they touch.

*Scopes.* A ``scope="all"`` query (SPEC §7) is answered by :mod:`.scope_reads` (with
:mod:`.scopes`): each selected source's subjects are discovered (cached), then walked a chunk at
a time in subject order, so a page reads only the subjects it needs and nothing holds the
scope's annotations whole; its cursor is a (subject, record) position. The merged-result cache
is not used for scopes.

*Paging.* Paging to the end yields every match exactly once as long as the data does not
change meanwhile (an annotation updated between pages moves to the front and may be missed or
seen twice, as in any keyset paging over live data). ``limit`` may change between pages.

*Shared cache.* With ``[cache] backend = "redis"`` the per-source cache is the local tier in
front of :class:`~annotation_gateway.cache.redis_tier.RedisTier`; the merged results then live for
the local tier's ttl only, writes are published to every process, and other processes'
invalidations reach :meth:`Federation.invalidate` here.

*Observation.* An optional :class:`~.observer.FederationObserver` receives upstream call
latencies and outcomes, cache hits and misses, in-flight counts and circuit state changes.
``SourceStatus.elapsed_ms`` is measured per source for ``Server-Timing``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, cast

from annotation_gateway.cache import AnnotationCache, CacheAnswer, Prefetched, Waiting
from annotation_gateway.cache.expiring import ExpiringMap
from annotation_gateway.cache.redis_tier import RedisTier
from annotation_gateway.errors import (
    ForbiddenError,
    PayloadTooLargeError,
    RequestValidationError,
    SourceError,
    UnsupportedError,
)
from annotation_gateway.federation import limits
from annotation_gateway.federation.answers import QueryPage, SourceInfo, SourceStatus
from annotation_gateway.federation.changes import ChangesPage, FeedState, Oldest
from annotation_gateway.federation.cursor import CursorCodec, bind
from annotation_gateway.federation.guards import SourceRuntime
from annotation_gateway.federation.id_chunks import Chunker, stream_chunks
from annotation_gateway.federation.limits import DEFAULT_SOURCE_DEADLINE_S
from annotation_gateway.federation.merge import (
    Merged,
    Outcome,
    all_failed,
    as_cache_hit,
    merge,
)
from annotation_gateway.federation.observer import BoundObserver, FederationObserver
from annotation_gateway.federation.planner import gateway_filter, pushdown, select, skip_reason
from annotation_gateway.federation.query import FederatedQuery, fingerprint, stale_allowance
from annotation_gateway.federation.scope_reads import ScopeReader
from annotation_gateway.federation.scopes import DiscoveryCache
from annotation_gateway.model import AnnotationWrite
from annotation_gateway.providers.base import (
    AnnotationProvider,
    HealthReport,
    SourceQuery,
    WriteResult,
)
from annotation_gateway.records import Record, same_documents, sort_key
from annotation_gateway.resilience import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_RESET_TIMEOUT_S,
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    Clock,
)
from annotation_gateway.settings import CacheConfig, GatewaySettings

__all__ = ["Federation"]

log = logging.getLogger("annotation_gateway.federation")

_SUBJECT_ID = attrgetter("subject_id")


def _merged_weight(merged: Merged) -> int:
    """What a merged result weighs in the merged-results map: the records it refers to (and 1)."""
    return len(merged.records) + 1


class Federation:
    """Owns the providers, their cache and circuit breakers; answers federated queries."""

    def __init__(
        self,
        providers: Sequence[AnnotationProvider],
        cache: CacheConfig,
        *,
        cursor_secret: bytes,
        observer: FederationObserver | None = None,
        clock: Clock = time.monotonic,
        breaker_failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        breaker_reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S,
        source_deadline_s: float | None = DEFAULT_SOURCE_DEADLINE_S,
        max_inflight_per_source: int | None = None,
        shared_cache: RedisTier | None = None,
    ) -> None:
        """``cursor_secret`` signs cursors (use 32 random bytes, shared by every replica);
        ``clock`` is monotonic seconds (tests inject one); ``max_inflight_per_source`` caps
        concurrent upstream calls per source on top of the provider's own connection cap
        (``None``: no extra cap); ``source_deadline_s=None`` disables the whole-fetch deadline;
        ``shared_cache``: a ready Redis tier (the federation owns it), else one is built from the
        environment when ``cache.backend`` is ``"redis"``."""
        if not cursor_secret:
            raise ValueError("cursor_secret must not be empty")
        self._observer = BoundObserver(observer)
        self._clock = clock
        self._codec = CursorCodec(bytes(cursor_secret))
        self._deadline_s = source_deadline_s
        self._sources: dict[str, SourceRuntime] = {}
        for provider in providers:
            name = provider.name
            if name in self._sources:
                raise ValueError(f"two providers are named {name!r}; source names must be unique")
            self._sources[name] = SourceRuntime(
                provider=provider,
                name=name,
                kind=provider.kind,
                breaker=CircuitBreaker(
                    name,
                    failure_threshold=breaker_failure_threshold,
                    reset_timeout_s=breaker_reset_timeout_s,
                    clock=clock,
                    on_state_change=self._observer.on_circuit,
                ),
                bulkhead=Bulkhead(max_inflight_per_source),
            )
        if shared_cache is None and cache.backend == "redis" and cache.enabled:
            shared_cache = RedisTier.from_config(cache, clock=clock, observer=self._observer)
        if shared_cache is not None:
            shared_cache.set_listener(self._forget)
        self._cache: AnnotationCache[Record] = AnnotationCache(
            cache, subject_of=_SUBJECT_ID, clock=clock, shared=shared_cache, same_items=same_documents
        )
        self._scopes = ScopeReader(
            codec=self._codec,
            discovery=DiscoveryCache(cache, clock=clock),
            ask=self._ask,
            observer=self._observer,
            deadline_s=self._deadline_s,
        )
        self._merged_ttl = self._cache.ttl if cache.enabled else 0.0
        # A merged result is kept past its freshness — for the shared tier's ttl with one, for
        # one more ttl without — so that a refresh (a poll after the ttl, a no-cache read) that
        # gets every source's answer back unchanged renews it instead of merging and encoding
        # again (Merged.same_inputs): the answer cache hands back the very records it holds when
        # the source answered the same documents (records.same_documents), and the shared tier
        # those it confirmed. ~4 % of the bench's no-cache miss (0.04 ms: merge and page
        # written, less the comparison), alternated.
        if self._cache.shared is not None:
            self._merged_keep = max(self._merged_ttl, cache.ttl_s)
        else:
            self._merged_keep = 2 * self._merged_ttl
        # Read on every cache hit: a dict's get, not cachetools' (~3 % of a hit). A result is
        # fresh until its own ``expires_at``; the map's time is only how long it is kept.
        self._merged: ExpiringMap[bytes, Merged] = ExpiringMap(
            ttl=max(self._merged_keep, 1e-9),
            max_weight=limits.MERGED_CACHE_MAX_ITEMS,
            clock=clock,
            weigh=_merged_weight,
        )
        self._query_keys: dict[
            tuple[FederatedQuery, frozenset[str] | None, str | None],
            tuple[tuple[SourceRuntime, ...], bytes, str],
        ] = {}
        """(query, the key's sources, audience) → (the sources it asks, its digest, its cursor
        binding), for queries without a cursor (:meth:`_remember_query`)."""
        self._query_keys_weight = 0
        """The ids (subject ids and identifiers, plus one a query) the remembered queries hold."""
        self._write_seq = 0
        self._call_s: dict[str, float] = {}
        """Each source's recent upstream calls, seconds (smoothed): a page's request leads the
        call of the source expected to answer last (:meth:`_fan_out`)."""

    @classmethod
    def from_settings(
        cls,
        providers: Sequence[AnnotationProvider],
        settings: GatewaySettings,
        *,
        cursor_secret: bytes,
        observer: FederationObserver | None = None,
        clock: Clock = time.monotonic,
    ) -> Federation:
        """A federation configured by ``settings`` (its ``[cache]`` and ``[resilience]``)."""
        resilience = settings.resilience
        return cls(
            providers,
            settings.cache,
            cursor_secret=cursor_secret,
            observer=observer,
            clock=clock,
            breaker_failure_threshold=resilience.breaker_failure_threshold,
            breaker_reset_timeout_s=resilience.breaker_reset_timeout_s,
            source_deadline_s=resilience.source_deadline_s,
            max_inflight_per_source=resilience.max_inflight_per_source,
        )

    # --- introspection ------------------------------------------------------------------------

    @property
    def source_names(self) -> list[str]:
        """Configured source names, in configuration order."""
        return list(self._sources)

    @property
    def cache(self) -> AnnotationCache[Record]:
        return self._cache

    def circuit_state(self, source: str) -> CircuitState:
        return self._source(source, loc="source").breaker.state

    # --- reading ------------------------------------------------------------------------------

    async def query(
        self,
        query: FederatedQuery,
        *,
        allowed_sources: frozenset[str] | None = None,
        audience: str | None = None,
    ) -> QueryPage:
        """One page. ``allowed_sources`` (from the caller's key) limits what may be queried;
        naming a source outside it raises ``ForbiddenError``; an unknown source
        ``RequestValidationError`` (see the module docstring for every rule). ``audience`` (the
        caller's key name) is what the page's cursor is issued to: another audience's cursor
        is refused."""
        started = time.perf_counter()
        # A repeated query (a dashboard polling, a cache hit) reuses its sources, digest and
        # cursor binding: computing them sorts, encodes and hashes every list, a third of a
        # cached answer's own cost. The sources are fixed at construction, so the selection
        # depends only on the query and the key's sources; an invalid one raises, unremembered.
        memo_key = (query, allowed_sources, audience)
        known = self._query_keys.get(memo_key)
        if known is None:
            selected = tuple(select(query, self._sources, allowed_sources))
            digest = fingerprint(query, tuple(s.name for s in selected))
            known = (selected, digest, bind(digest, audience))
            if query.cursor is None:
                self._remember_query(memo_key, known)
        selected, digest, binding = known
        if query.scope is not None:
            return await self._scopes.page(query, selected, binding)
        position = self._codec.decode(query.cursor, binding) if query.cursor is not None else None

        merged: Merged | None = None
        previous: Merged | None = None
        if self._merged_keep > 0:
            merged = self._merged.get(digest)
            if merged is not None and (not query.use_cache or self._clock() >= merged.expires_at):
                previous, merged = merged, None
        if merged is not None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            statuses = [as_cache_hit(s, elapsed_ms) for s in merged.statuses]
            for status in statuses:
                if status.status == "ok":
                    self._observer.on_cache(status.source, "hit")
        else:
            merged = await self._fan_out(query, selected, digest, previous=previous, lead=True)
            statuses = list(merged.statuses)

        records = merged.records
        start = 0 if position is None else bisect_right(records, position, key=sort_key)
        end = start + query.limit
        page = list(records[start:end])
        next_cursor = self._codec.encode(binding, sort_key(page[-1])) if end < len(records) else None
        return QueryPage(
            records=page,
            next_cursor=next_cursor,
            partial=merged.partial,
            sources=statuses,
            records_json=merged.page_json(start, end),
        )

    def _remember_query(
        self,
        key: tuple[FederatedQuery, frozenset[str] | None, str | None],
        known: tuple[tuple[SourceRuntime, ...], bytes, str],
    ) -> None:
        """Remember a first page's query (a cursor's page is asked for once: remembering it only
        holds it). The memo holds the queries themselves, so it is bounded by the ids they hold
        as well as by their number: each page of a 10,000-id search is a query of its own 10,000
        strings, and the bench's paging through one search's 100 cursors kept 35 MiB here
        (the gateway's RSS after paging 278.9 MiB before, 244.0 after)."""
        weight = len(key[0].subject_ids) + len(key[0].identifiers) + 1
        if (
            len(self._query_keys) >= limits.FINGERPRINT_MEMO_MAX_ITEMS
            or self._query_keys_weight + weight > limits.FINGERPRINT_MEMO_MAX_IDS
        ):
            self._query_keys.clear()
            self._query_keys_weight = 0
        self._query_keys[key] = known
        self._query_keys_weight += weight

    async def pages(
        self,
        query: FederatedQuery,
        *,
        allowed_sources: frozenset[str] | None = None,
        audience: str | None = None,
    ) -> AsyncIterator[QueryPage]:
        """Every page of ``query`` in order (export), following the cursor.

        Pages after the first read the cache even when the first bypassed it: the first page
        just refreshed it, and re-fetching every source for every page would cost the whole
        query again per page, for nothing.
        """
        page = await self.query(query, allowed_sources=allowed_sources, audience=audience)
        yield page
        # Later pages may read what the first page stored, but no older answer than it allowed.
        query = replace(query, max_stale_s=stale_allowance(query))
        while page.next_cursor is not None:
            query = replace(query, cursor=page.next_cursor, use_cache=True)
            page = await self.query(query, allowed_sources=allowed_sources, audience=audience)
            yield page

    async def stream(
        self,
        query: FederatedQuery,
        *,
        allowed_sources: frozenset[str] | None = None,
        ordered: bool = True,
    ) -> AsyncIterator[QueryPage]:
        """Every match of ``query``, a chunk of subjects at a time (exports): listed ids through
        :mod:`.id_chunks` (one subject first, for a quick first byte, then about
        ``EXPORT_TARGET_RECORDS`` annotations a chunk, a few chunks in flight), a scope through
        :mod:`.scope_reads`. Each chunk is one page of its records in answer order; so memory
        holds a few chunks, never the whole result, and the order is: by subject chunk, then
        ``updated_at`` descending and ``id`` within a chunk — a global order would need
        everything first. Reads use fresh cache entries and join flights but store nothing. The
        first chunk's errors are raised before anything is yielded (``partial=deny``, every
        source failing, 403, 422); a later chunk's too, for the caller to report after what it
        already wrote. ``next_cursor`` is ``None``; each page's ``sources`` (and ``partial``)
        cover the stream so far, so the last page's are the whole stream's.

        ``ordered=False`` (aggregation, which needs no order): a chunk's records come in no
        particular order (no sort per chunk), and chunks are larger (``AGGREGATE_*`` limits:
        a metrics request over 10,000 ids was ~200 export-sized chunks, each a task, a fan-out
        and a sort — a third of its time).
        """
        selected = select(query, self._sources, allowed_sources)
        if query.scope is not None:
            async for page in self._scopes.stream(query, selected):
                yield page
            return
        if ordered:
            chunker = Chunker(
                query.subject_ids,
                first=limits.EXPORT_FIRST_CHUNK_SUBJECTS,
                target=limits.EXPORT_TARGET_RECORDS,
                most=limits.EXPORT_CHUNK_SUBJECTS,
            )
        else:
            chunker = Chunker(
                query.subject_ids,
                first=limits.AGGREGATE_FIRST_CHUNK_SUBJECTS,
                target=limits.AGGREGATE_TARGET_RECORDS,
                most=limits.AGGREGATE_CHUNK_SUBJECTS,
            )

        def fan_out(part: FederatedQuery) -> Awaitable[Merged]:
            return self._fan_out(part, selected, None, ordered=ordered)

        # Closed with this generator, not when collected: the chunks in flight are cancelled
        # as soon as the caller stops reading (an export's client gone).
        async with aclosing(stream_chunks(query, fan_out, chunker)) as pages:
            async for page in pages:
                yield page

    async def consume(
        self,
        query: FederatedQuery,
        consume: Callable[[list[Record]], None],
        *,
        allowed_sources: frozenset[str] | None = None,
    ) -> tuple[bool, list[SourceStatus]]:
        """Every match of ``query`` through :meth:`stream` (unordered chunks), each chunk handed
        to ``consume``; returns ``(partial, sources)`` over the whole stream (the last page's).
        Errors the stream raises propagate."""
        last: list[SourceStatus] = []
        async for page in self.stream(query, allowed_sources=allowed_sources, ordered=False):
            consume(page.records)
            last = page.sources  # every page's statuses cover the stream so far
        return any(s.status == "error" for s in last), last

    async def changes(
        self,
        query: FederatedQuery,
        *,
        since: str | None,
        limit: int = limits.DEFAULT_CHANGES_LIMIT,
        allowed_sources: frozenset[str] | None = None,
        audience: str | None = None,
    ) -> ChangesPage:
        """One page of the change feed (:mod:`.changes` says what it guarantees): ``limit``
        changes after ``since`` (``None``: the beginning), oldest first, and the next token."""
        if not 1 <= limit <= limits.MAX_CHANGES_LIMIT:
            raise RequestValidationError(
                f"limit must be between 1 and {limits.MAX_CHANGES_LIMIT}",
                errors=[
                    {"loc": ["limit"], "msg": f"must be 1..{limits.MAX_CHANGES_LIMIT}", "type": "value_error"}
                ],
            )
        selected = select(query, self._sources, allowed_sources)
        binding = bind(fingerprint(query, [s.name for s in selected]), audience)
        state = FeedState() if since is None else FeedState.unpack(self._codec.decode_since(since, binding))
        floor = state.floor(s.name for s in selected)
        # Fresh: a cached answer (or a cached scope discovery) would hide a change until its TTL,
        # and a stale one for longer.
        window = replace(query, use_cache=False, max_stale_s=0.0, cursor=None)
        if floor is not None and (query.updated_after is None or query.updated_after < floor):
            if query.updated_before is not None and floor >= query.updated_before:
                return ChangesPage([], self._codec.encode_since(binding, state.pack()), False, [])
            window = replace(window, updated_after=floor)
        oldest = Oldest(limit, state)
        partial, statuses = await self.consume(window, oldest.add, allowed_sources=allowed_sources)
        page = oldest.result()
        # A source that failed keeps its watermark: its changes come when it answers again.
        answered = [s.source for s in statuses if s.status != "error"]
        token = self._codec.encode_since(binding, state.advance(page, answered).pack())
        return ChangesPage(page, token, partial, statuses)

    async def _fan_out(
        self,
        query: FederatedQuery,
        selected: Sequence[SourceRuntime],
        digest: bytes | None,
        *,
        ordered: bool = True,
        previous: Merged | None = None,
        lead: bool = False,
    ) -> Merged:
        """Ask every selected source (or skip it) and merge; ``digest`` is where the complete,
        fresh result is kept in the merged cache, ``None`` to keep nothing (a streaming export:
        neither the merged result nor the sources' answers are stored). ``previous``: the
        result the same query had (expired, or passed over by a no-cache read), renewed instead
        if the sources answered the same. ``lead``: this request runs the call of the source
        expected to answer last itself (the answer cache's *Leading*): that call is sent first,
        and the page is written in the step its answer is read in. Not for a stream's chunks,
        which are cancelled when their reader leaves."""
        store = digest is not None
        write_seq = self._write_seq
        keep = gateway_filter(query)
        # Each selected source's outcome, in order; None until an asked source has answered.
        outcomes: list[Outcome | None] = []
        asked: list[tuple[int, SourceRuntime, SourceQuery]] = []
        for source in selected:
            reason = skip_reason(source, query)
            if reason is not None:
                outcomes.append(
                    Outcome(SourceStatus(source.name, source.kind, "skipped", error={"reason": reason}))
                )
            else:
                asked.append((len(outcomes), source, pushdown(source, query)))
                outcomes.append(None)
        confirmed: Sequence[CacheAnswer[Record] | Prefetched | None] = [None] * len(asked)
        started = time.perf_counter()
        if previous is not None and query.use_cache:
            # A polled query whose result expired: one round trip to the shared tier confirms
            # every answer it was merged from, with no flight per source (cache/redis_tier.py's
            # docstring); what it cannot confirm is read as usual, from what it found. A
            # no-cache read is not confirmed: every source is asked.
            confirmed = await self._cache.confirm([(source.name, q) for _, source, q in asked]) or confirmed
        # Every source's flight starts here, then each is awaited in turn: they run in their own
        # tasks, so the answers come in the time of the slowest, with no task per source here.
        # The led source's read starts last and is finished first: its call runs in this task,
        # at once (nothing may come between, or those who join it would wait for nothing).
        reads: list[tuple[int, SourceRuntime, SourceQuery, Prefetched | None]] = []
        for (index, source, source_query), answer in zip(asked, confirmed, strict=True):
            if isinstance(answer, CacheAnswer):
                outcomes[index] = self._answered(source, answer, keep, started)
            else:
                reads.append((index, source, source_query, answer))
        led = max(reads, key=lambda read: self._call_s.get(read[1].name, 0.0)) if lead and reads else None
        if led is not None:
            reads.remove(led)
            reads.append(led)
        waiting: list[tuple[int, SourceRuntime, Waiting[Record], float]] = []
        for read in reads:
            index, source, source_query, answer = read
            asked_at = time.perf_counter()
            got = self._start(
                source, source_query, query.use_cache, stale_allowance(query), store, answer, lead=read is led
            )
            if isinstance(got, CacheAnswer):
                outcomes[index] = self._answered(source, got, keep, asked_at)
            else:
                waiting.insert(0 if read is led else len(waiting), (index, source, got, asked_at))
        for index, source, pending, asked_at in waiting:
            outcomes[index] = await self._finished(source, pending, keep, asked_at)
        done = cast(list[Outcome], outcomes)  # every asked source's outcome is in, just above
        self._time_calls(done)

        failures = [o.failure for o in done if o.failure is not None]
        if failures and query.partial == "deny":
            raise failures[0]
        queried = [o for o in done if o.status.status != "skipped"]
        if queried and len(failures) == len(queried):
            raise all_failed(failures)

        fetched = [o.fetched_at for o in done if o.fetched_at is not None]
        expires_at = (min(fetched) if fetched else self._clock()) + self._merged_ttl
        storable = (
            digest is not None
            and self._merged_keep > 0
            and not failures
            and not any(o.status.stale for o in done)
            and write_seq == self._write_seq
        )
        if previous is not None and storable and previous.same_inputs(done):
            merged = previous.renewed(done, expires_at)
        else:
            merged = merge(done, expires_at=expires_at, ordered=ordered, revalidate=storable)
        if digest is not None and storable:
            self._merged.put(digest, merged)  # a result larger than the whole map is served, not kept
        return merged

    async def _ask(
        self,
        source: SourceRuntime,
        pushdown: SourceQuery,
        use_cache: bool,
        max_stale_s: float | None,
        keep: Callable[[Record], bool] | None,
        *,
        store: bool = True,
        prefetched: Prefetched | None = None,
    ) -> Outcome:
        """One source's outcome for ``pushdown``, through the cache (a source failure is a
        status, not raised)."""
        started = time.perf_counter()
        got = self._start(source, pushdown, use_cache, max_stale_s, store, prefetched)
        if isinstance(got, CacheAnswer):
            return self._answered(source, got, keep, started)
        return await self._finished(source, got, keep, started)

    def _time_calls(self, done: Sequence[Outcome]) -> None:
        """Smooth each source's upstream time into :attr:`_call_s` (cached and skipped answers
        made no call)."""
        for outcome in done:
            status = outcome.status
            if status.status != "skipped" and not status.cached:
                seconds = status.elapsed_ms / 1000
                held = self._call_s.get(status.source)
                self._call_s[status.source] = seconds if held is None else held + (seconds - held) / 4

    def _start(
        self,
        source: SourceRuntime,
        pushdown: SourceQuery,
        use_cache: bool,
        max_stale_s: float | None,
        store: bool,
        prefetched: Prefetched | None,
        *,
        lead: bool = False,
    ) -> CacheAnswer[Record] | Waiting[Record]:
        return self._cache.start(
            source.name,
            pushdown,
            self._fetcher(source),
            use_cache=use_cache,
            max_stale_s=max_stale_s,
            store=store,
            prefetched=prefetched,
            lead=lead,
        )

    async def _finished(
        self,
        source: SourceRuntime,
        waiting: Waiting[Record],
        keep: Callable[[Record], bool] | None,
        started: float,
    ) -> Outcome:
        try:
            answer = await self._cache.finish(waiting)
        except SourceError as exc:
            # Timed to the end of its call, not to when this request came to read it.
            elapsed_ms = max(waiting.ready_at() - started, 0.0) * 1000
            self._observer.on_cache(source.name, "miss")
            status = SourceStatus(
                source.name, source.kind, "error", elapsed_ms=elapsed_ms, error=exc.problem()
            )
            return Outcome(status, failure=exc)
        return self._answered(source, answer, keep, started)

    def _answered(
        self,
        source: SourceRuntime,
        answer: CacheAnswer[Record],
        keep: Callable[[Record], bool] | None,
        started: float,
    ) -> Outcome:
        """The outcome of ``source``'s ``answer`` (asked at ``started``, ``perf_counter``)."""
        records = answer.items if keep is None else [record for record in answer.items if keep(record)]
        elapsed_ms = max(answer.ready_at - started, 0.0) * 1000
        self._observer.on_cache(source.name, "stale" if answer.stale else "hit" if answer.cached else "miss")
        status = SourceStatus(
            source.name,
            source.kind,
            "ok",
            count=len(records),
            cached=answer.cached,
            stale=answer.stale,
            elapsed_ms=elapsed_ms,
        )
        return Outcome(status, records=records, fetched_at=answer.fetched_at)

    def _fetcher(self, source: SourceRuntime) -> Callable[[SourceQuery], Awaitable[Sequence[Record]]]:
        async def fetch(pushdown: SourceQuery) -> Sequence[Record]:
            # The providers map vendor rows straight to the compact records that are cached
            # and merged (records.py says why).
            return await source.guarded(
                "fetch",
                lambda: source.provider.fetch_records(pushdown),
                observer=self._observer,
                deadline_s=self._deadline_s,
            )

        return fetch

    # --- writing ------------------------------------------------------------------------------

    async def write(
        self, source: str, items: Sequence[AnnotationWrite], *, allowed_sources: frozenset[str] | None = None
    ) -> WriteResult:
        """Upsert to a writable source synchronously and invalidate the cached subjects.

        Raises ``RequestValidationError`` for an unknown source or no items,
        ``ForbiddenError`` for a source the key may not use, ``PayloadTooLargeError`` beyond
        ``MAX_WRITE_ITEMS``, ``UnsupportedError`` when the source cannot write those subject
        kinds, or the provider's error. The cache is invalidated whatever the outcome (a timed
        out write may still have landed).
        """
        target = self._source(source, loc="source")
        if allowed_sources is not None and source not in allowed_sources:
            raise ForbiddenError(f"this key may not use source {source!r}")
        if not items:
            raise RequestValidationError(
                "give at least one annotation to write",
                errors=[{"loc": ["annotations"], "msg": "must not be empty", "type": "value_error"}],
            )
        if len(items) > limits.MAX_WRITE_ITEMS:
            raise PayloadTooLargeError(
                f"{len(items)} annotations in one write; the limit is {limits.MAX_WRITE_ITEMS} per request"
            )
        writable = target.provider.capabilities.writable_kinds
        if not writable:
            raise UnsupportedError(f"source {source!r} is read-only")
        refused = sorted({item.subject_kind.value for item in items} - {k.value for k in writable})
        if refused:
            raise UnsupportedError(
                f"source {source!r} cannot write annotations on {', '.join(refused)}; "
                f"it writes {', '.join(sorted(k.value for k in writable))}"
            )
        try:
            return await target.guarded(
                "write",
                lambda: target.provider.write(items),
                observer=self._observer,
                deadline_s=self._deadline_s,
            )
        finally:
            subjects = {item.subject_id for item in items}
            self.invalidate(source, subjects)
            await self._cache.invalidate_shared(source, subjects)

    def invalidate(self, source: str, subject_ids: Iterable[str]) -> None:
        """Forget cached answers about ``subject_ids`` of ``source`` (and every merged result)."""
        self._write_seq += 1
        self._cache.invalidate(source, subject_ids)
        # Merged results are keyed by query, not subject; writes are rare next to reads, so
        # dropping them all is simpler and cheaper than indexing them by subject.
        self._merged.clear()

    def _forget(self, source: str | None, subject_ids: list[str] | None) -> None:
        """Another process wrote (``source``, ``subject_ids``; ``None``: all its subjects), or
        this one may have missed such news (both ``None``): forget here what it may change."""
        if source is None or subject_ids is None:
            self._write_seq += 1
            self._cache.clear()
            self._merged.clear()
        else:
            self.invalidate(source, subject_ids)

    # --- health -------------------------------------------------------------------------------

    async def sources_info(self, *, refresh: bool = False) -> list[SourceInfo]:
        """Every source with its capabilities, circuit state and last health probe.

        Probes the sources never checked or checked more than ``HEALTH_MAX_AGE_S`` ago, or all
        of them with ``refresh``.
        """
        now = self._clock()
        due = [
            s
            for s in self._sources.values()
            if refresh or s.last_checked_mono is None or now - s.last_checked_mono > limits.HEALTH_MAX_AGE_S
        ]
        if due:
            await asyncio.gather(*(self._probe(s) for s in due))
        return [
            SourceInfo(
                name=s.name,
                provider=s.kind,
                capabilities=s.provider.capabilities,
                circuit_state=s.breaker.state,
                last_health=s.last_health,
                last_checked_at=s.last_checked_at,
                extra={
                    "consecutive_failures": s.breaker.consecutive_failures,
                    "retry_in_s": round(s.breaker.retry_in_s, 3),
                    "in_flight": s.bulkhead.in_flight,
                },
            )
            for s in self._sources.values()
        ]

    async def cache_status(self) -> dict[str, Any] | None:
        """The shared cache tier's state (``/readyz``); ``None`` with the memory backend."""
        return await self._cache.shared_status()

    async def ready(self) -> dict[str, HealthReport]:
        """Probe every source (for ``/readyz``)."""
        reports = await asyncio.gather(*(self._probe(s) for s in self._sources.values()))
        return dict(zip(self._sources, reports, strict=True))

    async def _probe(self, source: SourceRuntime) -> HealthReport:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limits.HEALTH_TIMEOUT_S):
                report = await source.provider.health()
        except Exception as exc:  # health() must not raise; one that does is simply unhealthy
            report = HealthReport(
                ok=False,
                latency_ms=(time.perf_counter() - started) * 1000,
                detail=f"health check failed: {type(exc).__name__}",
            )
        source.last_health = report
        source.last_checked_at = datetime.now(UTC)
        source.last_checked_mono = self._clock()
        return report

    async def aclose(self) -> None:
        """Cancel upstream calls still running and close every provider's connection pool."""
        await self._cache.aclose()
        await self._scopes.aclose()
        results = await asyncio.gather(
            *(s.provider.aclose() for s in self._sources.values()), return_exceptions=True
        )
        for name, result in zip(self._sources, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("closing a source failed", extra={"source": name, "error": type(result).__name__})

    def _source(self, name: str, *, loc: str) -> SourceRuntime:
        try:
            return self._sources[name]
        except KeyError:
            raise RequestValidationError(
                f"unknown source {name!r}; known: {', '.join(self._sources) or 'none'}",
                errors=[{"loc": [loc], "msg": f"unknown source {name!r}", "type": "value_error"}],
            ) from None
