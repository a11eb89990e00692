"""Federation: one query fanned out to every source, merged, ordered, paged, cached.

Contract (SPEC §3, §4):

*Selection.* The sources asked are the configured ones, narrowed by ``sources`` and
``providers`` and by the caller key's ``allowed_sources``. Naming an unknown source is a
``RequestValidationError`` (422: the value of a parameter is wrong; the resource exists);
naming a source the key may not use is a ``ForbiddenError`` (403); without ``sources`` a limited
key silently asks only its own sources. A selection that leaves no source is a 422.

*Skipped sources.* A selected source that cannot answer is reported ``skipped`` with
``error={"reason": ...}`` and not called: it needs subject ids and the query has only
identifiers; the query's ``subject_kinds`` are all kinds it does not have; or ``projects`` is
given and the source's annotations have no project (see ``PROVIDERS_WITHOUT_PROJECTS``). When
every selected source is skipped the answer is an empty, non-partial page that says why.

*Filters.* Pushed down to each source as a ``SourceQuery``: ``subject_ids``, ``subject_kinds``
(narrowed to the kinds the source has), ``identifiers``, ``names``, ``exclude_names``,
``include_raw``; the provider contract makes that answer exact. Applied here: ``annotator_kinds``
(``annotator.kind``), ``projects`` (``subject.project``), and the half-open window
``updated_after <= updated_at < updated_before`` (so consecutive windows tile without overlap).
Lists are OR within a field and AND across fields; ``raw`` is stripped unless ``include_raw``.

*Order and paging.* ``updated_at`` descending, then ``id`` ascending (ids are unique, so the
order is total). The cursor is a keyset position: urlsafe base64 (unpadded) of the compact JSON
``[version, query fingerprint, updated_at in µs, id]`` followed by a truncated HMAC-SHA256 of it
under ``cursor_secret``. The fingerprint covers the normalised query minus ``limit``, ``cursor``,
``use_cache`` and ``max_stale_s``, the effective source selection, *and* the ``audience`` (the
caller's key name): a cursor is valid only for the key it was issued to. A bad encoding, a bad signature or a
fingerprint of another query is an ``InvalidCursorError`` (422) saying which. ``limit`` may change
between pages. Paging to the end yields every match exactly once as long as the data does not
change meanwhile (an annotation updated between pages moves to the front and may be missed or
seen twice, as in any keyset paging over live data).

*Counts and limits.* ``SourceStatus.count`` is the number of that source's matches for the
whole query (all pages), after the gateway's filters. More than ``MAX_TOTAL_RESULTS`` matches is
a ``PayloadTooLargeError`` (413) naming the limit; so are more than ``MAX_SUBJECT_IDS_SEARCH``
subject ids and more than ``MAX_FILTER_VALUES`` values of one list filter.

*Failures.* A failing source gives ``status="error"`` with its problem object and
``partial=True``: never a silently short answer. With ``partial="deny"`` the first failure (in
source order) is raised. When every queried source fails, one error is raised: the failure
itself if only one source was asked; if all failures are upstream 4xx-class (the vendor refused:
auth, not found, throttled) the first of them, so an upstream 4xx is never the gateway's 5xx;
otherwise the first non-4xx failure when all of those share one status (502, 504), else a
``SourceError`` 502. With several failures, ``errors`` lists every source's problem.

*Cache.* Each source is read through :class:`~annotation_gateway.cache.AnnotationCache`
(per source, subject and pushed-down filters; single flight; stale-on-error). On top, the merged,
filtered and sorted result of a whole query is kept per query fingerprint until the oldest
answer it was built from is ``ttl`` old, so a repeated query or its next page costs a dict
lookup and a bisect, with no per-annotation work. Only complete, fresh results are kept there;
writes through :meth:`Federation.write` drop both layers for what they touch.

*Resilience.* Every upstream call of a source passes its :class:`Bulkhead` (optional cap), its
deadline (``source_deadline_s``, the whole fetch including the provider's own retries) and its
:class:`CircuitBreaker`. The providers retry idempotent reads themselves; no retry here.

*Observation.* An optional :class:`FederationObserver` receives upstream call latencies and
outcomes, cache hits and misses, in-flight counts and circuit state changes; the API wires it to
Prometheus, so this module imports no metrics library. ``SourceStatus.elapsed_ms`` is measured
per source for ``Server-Timing``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import logging
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal, Protocol, TypeVar

import orjson
from cachetools import TTLCache
from pydantic import TypeAdapter

from annotation_gateway.cache import AnnotationCache, CacheAnswer
from annotation_gateway.errors import (
    CircuitOpenError,
    ForbiddenError,
    GatewayError,
    InvalidCursorError,
    PayloadTooLargeError,
    RequestValidationError,
    SourceError,
    SourceTimeoutError,
    UnsupportedError,
)
from annotation_gateway.model import (
    Annotation,
    AnnotationWrite,
    AnnotatorKind,
    ProviderKind,
    SubjectKind,
    to_utc,
)
from annotation_gateway.providers.base import (
    AnnotationProvider,
    Capabilities,
    HealthReport,
    SourceQuery,
    WriteResult,
)
from annotation_gateway.resilience import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_RESET_TIMEOUT_S,
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    Clock,
)
from annotation_gateway.settings import CacheConfig

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_SOURCE_DEADLINE_S",
    "HEALTH_MAX_AGE_S",
    "HEALTH_TIMEOUT_S",
    "MAX_CURSOR_LENGTH",
    "MAX_FILTER_VALUES",
    "MAX_PAGE_SIZE",
    "MAX_SUBJECT_IDS_GET",
    "MAX_SUBJECT_IDS_SEARCH",
    "MAX_TOTAL_RESULTS",
    "MAX_WRITE_ITEMS",
    "PROVIDERS_WITHOUT_PROJECTS",
    "CacheOutcome",
    "FederatedQuery",
    "Federation",
    "FederationObserver",
    "NullObserver",
    "QueryPage",
    "SourceInfo",
    "SourceStatus",
    "UpstreamOperation",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_SUBJECT_IDS_GET = 1000
"""Subject ids in one ``GET /v1/annotations`` (URL length)."""
MAX_SUBJECT_IDS_SEARCH = 10_000
"""Subject ids in one ``POST /v1/annotations/search``; the most any query may carry."""
MAX_FILTER_VALUES = 1000
"""Values of one other list filter (identifiers, names, exclude_names, projects)."""
MAX_TOTAL_RESULTS = 500_000
"""Matches one query may have before it is refused with 413 (narrow the query)."""
MAX_WRITE_ITEMS = 5_000
"""Items in one ``POST /v1/annotations``."""
MAX_CURSOR_LENGTH = 2048
"""Characters of a cursor; longer ones are refused before decoding."""
DEFAULT_SOURCE_DEADLINE_S = 30.0
"""Whole-fetch deadline per source: chunks, pages and the provider's retries included."""
HEALTH_TIMEOUT_S = 5.0
"""How long one health probe may take before the source is reported unhealthy."""
HEALTH_MAX_AGE_S = 15.0
"""``sources_info()`` re-probes a source whose last check is older than this."""
MERGED_CACHE_MAX_ITEMS = 1_000_000
"""Annotation references kept across all cached merged query results."""
FINGERPRINT_MEMO_MAX_ITEMS = 4096
"""Query digests remembered (a plain dict, emptied when full: cheaper than LRU upkeep)."""
PROVIDERS_WITHOUT_PROJECTS = frozenset({ProviderKind.DATADOG})
"""Vendors whose annotations carry ``subject.project = null``: a ``projects`` filter skips them."""

_CURSOR_VERSION = 1
_CURSOR_MAC_BYTES = 16
_FINGERPRINT_BYTES = 12
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ANNOTATION_JSON = TypeAdapter(Annotation).dump_json
_ANNOTATIONS_JSON = TypeAdapter(list[Annotation]).dump_json
_MICROSECOND = timedelta(microseconds=1)

PartialMode = Literal["allow", "deny"]
SourceState = Literal["ok", "error", "skipped"]
UpstreamOperation = Literal["fetch", "write"]
CacheOutcome = Literal["hit", "miss", "stale"]


@dataclass(frozen=True, slots=True)
class FederatedQuery:
    """A validated query. Lists are OR within a field, AND across fields; empty = no filter."""

    subject_ids: tuple[str, ...] = ()
    subject_kinds: tuple[SubjectKind, ...] = ()
    identifiers: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    providers: tuple[ProviderKind, ...] = ()
    annotator_kinds: tuple[AnnotatorKind, ...] = ()
    projects: tuple[str, ...] = ()
    updated_after: datetime | None = None
    """Inclusive lower bound on ``updated_at`` (naive means UTC)."""
    updated_before: datetime | None = None
    """Exclusive upper bound on ``updated_at`` (naive means UTC)."""
    limit: int = DEFAULT_PAGE_SIZE
    cursor: str | None = None
    include_raw: bool = False
    partial: PartialMode = "allow"
    use_cache: bool = True
    """False for ``Cache-Control: no-cache``: fetch fresh (and refresh the cache)."""
    max_stale_s: float | None = None
    """How old (seconds) a cached answer may be to stand in for a failing source: the client's
    explicit opt-in (``Cache-Control: max-stale=N``), capped by the cache's ``max_stale_s``.
    ``None``: the default — the configured ``max_stale_s`` for an ordinary query, **none** when
    the client asked for fresh data (``use_cache=False``) or for complete data
    (``partial="deny"``, and so compare), since a stale answer is then a failed source."""


@dataclass(slots=True)
class SourceStatus:
    """How one source fared in one query (``sources[]`` of the answer)."""

    source: str
    provider: ProviderKind
    status: SourceState
    count: int = 0
    """This source's matches for the whole query (all pages), after the gateway's filters."""
    cached: bool = False
    """Served without any upstream call made or awaited for this request."""
    stale: bool = False
    elapsed_ms: float = 0.0
    """Time spent on this source in this request (for ``Server-Timing``)."""
    error: dict[str, Any] | None = None
    """The problem object (RFC 9457) when ``status`` is ``error``; the reason when ``skipped``."""


@dataclass(slots=True)
class QueryPage:
    data: list[Annotation]
    next_cursor: str | None
    partial: bool
    sources: list[SourceStatus]
    data_json: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)
    """Returns ``data``'s items' JSON (the canonical model's own serialization), comma-separated,
    serialized once per merged result and kept with it (:meth:`Federation.query` sets it);
    ``None``: serialize ``data``. A callable, so that readers that never write the page as
    JSON (export) make nothing be kept."""


@dataclass(slots=True)
class SourceInfo:
    """What ``GET /v1/sources`` shows for a source."""

    name: str
    provider: ProviderKind
    capabilities: Capabilities
    circuit_state: Literal["closed", "open", "half_open"]
    last_health: HealthReport | None = None
    last_checked_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """``consecutive_failures``, ``retry_in_s`` (open circuit), ``in_flight`` upstream calls."""


class FederationObserver(Protocol):
    """Metric hooks. Called on the event loop; implementations must be cheap and never raise.

    An observer may implement only some of them (or subclass :class:`NullObserver`): a missing
    hook is replaced by a no-op when the federation is built.
    """

    def on_upstream(self, source: str, operation: UpstreamOperation, elapsed_s: float, outcome: str) -> None:
        """One upstream call ended. ``outcome`` is ``"ok"``, a ``ProblemCode`` value
        (``source_timeout``, ``source_unavailable``...), ``"circuit_open"`` (refused without a
        request) or ``"cancelled"``."""

    def on_cache(self, source: str, result: CacheOutcome) -> None:
        """One query was answered for ``source``: entirely from the cache (``hit``), with an
        upstream call made or awaited (``miss``, also when that call failed), or from stale
        entries because the source failed (``stale``)."""

    def on_inflight(self, source: str, delta: int) -> None:
        """An upstream call of ``source`` started (+1) or ended (-1)."""

    def on_circuit(self, source: str, state: CircuitState) -> None:
        """The circuit breaker of ``source`` changed state."""


class NullObserver:
    """The default observer: does nothing."""

    def on_upstream(self, source: str, operation: UpstreamOperation, elapsed_s: float, outcome: str) -> None:
        return None

    def on_cache(self, source: str, result: CacheOutcome) -> None:
        return None

    def on_inflight(self, source: str, delta: int) -> None:
        return None

    def on_circuit(self, source: str, state: CircuitState) -> None:
        return None


class _BoundObserver:
    """The observer's hooks looked up once, with a no-op for each one it lacks."""

    __slots__ = ("on_cache", "on_circuit", "on_inflight", "on_upstream")

    def __init__(self, observer: object | None) -> None:
        null = NullObserver()
        self.on_upstream: Callable[[str, UpstreamOperation, float, str], None] = getattr(
            observer, "on_upstream", null.on_upstream
        )
        self.on_cache: Callable[[str, CacheOutcome], None] = getattr(observer, "on_cache", null.on_cache)
        self.on_inflight: Callable[[str, int], None] = getattr(observer, "on_inflight", null.on_inflight)
        self.on_circuit: Callable[[str, CircuitState], None] = getattr(
            observer, "on_circuit", null.on_circuit
        )


# --- ordering and cursors ---------------------------------------------------------------------

_SortKey = tuple[int, str]
_BY_ID = attrgetter("id")
_BY_UPDATED_AT = attrgetter("updated_at")


def _sort_key(item: Annotation) -> _SortKey:
    """Ascending order of this key is ``updated_at`` descending, then ``id`` ascending."""
    return (-((item.updated_at - _EPOCH) // _MICROSECOND), item.id)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


class _CursorCodec:
    """Signs and checks keyset cursors; see the module docstring for the format."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_CURSOR_MAC_BYTES]

    def encode(self, fingerprint: str, key: _SortKey) -> str:
        payload = orjson.dumps([_CURSOR_VERSION, fingerprint, -key[0], key[1]])
        return _b64encode(payload + self._mac(payload))

    def decode(self, cursor: str, fingerprint: str) -> _SortKey:
        if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
            raise InvalidCursorError(f"the cursor must be 1 to {MAX_CURSOR_LENGTH} characters")
        try:
            raw = _b64decode(cursor)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise InvalidCursorError("the cursor is not valid base64url; pass next_cursor unchanged") from exc
        payload, mac = raw[:-_CURSOR_MAC_BYTES], raw[-_CURSOR_MAC_BYTES:]
        if len(raw) <= _CURSOR_MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursorError(
                "the cursor's signature does not match: it was altered or issued by another gateway"
            )
        try:
            version, bound_to, micros, item_id = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise InvalidCursorError("the cursor's content is malformed") from exc
        if version != _CURSOR_VERSION:
            raise InvalidCursorError(
                f"the cursor has version {version!r}; this gateway reads {_CURSOR_VERSION}"
            )
        if bound_to != fingerprint:
            raise InvalidCursorError(
                "the cursor belongs to a different query or key: filters, sources or options "
                "changed since it was issued (only limit may change), or it was issued to another "
                "gateway key; start again without a cursor"
            )
        if type(micros) is not int or not isinstance(item_id, str):
            raise InvalidCursorError("the cursor's content is malformed")
        return (-micros, item_id)


# --- per-source runtime and merged results ----------------------------------------------------


@dataclass(slots=True)
class _Source:
    provider: AnnotationProvider
    name: str
    kind: ProviderKind
    breaker: CircuitBreaker
    bulkhead: Bulkhead
    last_health: HealthReport | None = None
    last_checked_at: datetime | None = None
    last_checked_mono: float | None = None


@dataclass(frozen=True, slots=True)
class _Merged:
    """A whole query's result: sorted, filtered, raw handled; shared by all its pages."""

    items: tuple[Annotation, ...]
    statuses: tuple[SourceStatus, ...]
    partial: bool
    expires_at: float
    encoded: list[bytes | None]
    """Each item's JSON, filled in as pages are served: it lives exactly as long as the result
    (cached or not), so a cached query's later pages serialize nothing and nothing outlives
    its cache entry (a process-wide memo did, and kept the GC walking dead answers)."""

    last_page: list[tuple[int, int, bytes]]
    """The last page written ((start, end, its items' JSON joined)): a repeated query's answer
    is one lookup, not a join of its items."""

    def page_json(self, start: int, end: int) -> bytes:
        """The JSON of ``items[start:end]``, comma-separated; each item serialized once."""
        last = self.last_page
        if last and last[0][0] == start and last[0][1] == end:
            return last[0][2]
        encoded = self.encoded
        parts = encoded[start:end]
        if parts and all(part is None for part in parts):
            # A page none of whose items was written yet (every miss's first page): one call
            # for the whole list costs ~25 % less than one per item. Its items' JSON is not
            # kept apart; another page of this result covering them writes them again.
            joined = _ANNOTATIONS_JSON(list(self.items[start:end]))[1:-1]
            last[:] = [(start, end, joined)]
            return joined
        if None in parts:
            items = self.items
            for offset, part in enumerate(parts):
                if part is None:
                    part = encoded[start + offset] = _ANNOTATION_JSON(items[start + offset])
                    parts[offset] = part
        joined = b",".join(parts)  # type: ignore[arg-type]  # no None left
        last[:] = [(start, end, joined)]
        return joined


@dataclass(slots=True)
class _Outcome:
    status: SourceStatus
    items: list[Annotation] | None = None
    failure: SourceError | None = None
    fetched_at: float | None = None


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
    ) -> None:
        """``cursor_secret`` signs cursors (use 32 random bytes, shared by every replica);
        ``clock`` is monotonic seconds (tests inject one); ``max_inflight_per_source`` caps
        concurrent upstream calls per source on top of the provider's own connection cap
        (``None``: no extra cap); ``source_deadline_s=None`` disables the whole-fetch deadline."""
        if not cursor_secret:
            raise ValueError("cursor_secret must not be empty")
        self._observer = _BoundObserver(observer)
        self._clock = clock
        self._codec = _CursorCodec(bytes(cursor_secret))
        self._deadline_s = source_deadline_s
        self._sources: dict[str, _Source] = {}
        for provider in providers:
            name = provider.name
            if name in self._sources:
                raise ValueError(f"two providers are named {name!r}; source names must be unique")
            self._sources[name] = _Source(
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
        self._cache = AnnotationCache(cache, clock=clock)
        self._merged_ttl = cache.ttl_s if cache.enabled else 0.0
        self._merged: TTLCache[bytes, _Merged] = TTLCache(
            maxsize=MERGED_CACHE_MAX_ITEMS,
            ttl=max(self._merged_ttl, 1e-9),
            timer=clock,
            getsizeof=lambda merged: len(merged.items) + 1,
        )
        self._fingerprints: dict[tuple[FederatedQuery, tuple[str, ...]], bytes] = {}
        self._write_seq = 0

    # --- introspection ------------------------------------------------------------------------

    @property
    def source_names(self) -> list[str]:
        """Configured source names, in configuration order."""
        return list(self._sources)

    @property
    def cache(self) -> AnnotationCache:
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
        _validate(query)
        selected = self._select(query, allowed_sources)
        # A repeated query (a dashboard polling, a cache hit) reuses its digest: computing it
        # sorts, encodes and hashes every list, a third of a cached answer's own cost.
        memo_key = (query, tuple(s.name for s in selected))
        known = self._fingerprints.get(memo_key)
        if known is None:
            known = _fingerprint(query, selected)
            if len(self._fingerprints) >= FINGERPRINT_MEMO_MAX_ITEMS:
                self._fingerprints.clear()
            self._fingerprints[memo_key] = known
        digest = known
        fingerprint = _bind(digest, audience)
        position = self._codec.decode(query.cursor, fingerprint) if query.cursor is not None else None

        merged: _Merged | None = None
        if query.use_cache and self._merged_ttl > 0:
            merged = self._merged.get(digest)
            if merged is not None and self._clock() >= merged.expires_at:
                merged = None
        if merged is not None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            statuses = [_as_cache_hit(s, elapsed_ms) for s in merged.statuses]
            for status in statuses:
                if status.status == "ok":
                    self._observer.on_cache(status.source, "hit")
        else:
            merged = await self._fan_out(query, selected, digest)
            statuses = list(merged.statuses)

        items = merged.items
        start = 0 if position is None else bisect_right(items, position, key=_sort_key)
        end = start + query.limit
        data = list(items[start:end])
        next_cursor = self._codec.encode(fingerprint, _sort_key(data[-1])) if end < len(items) else None
        return QueryPage(
            data=data,
            next_cursor=next_cursor,
            partial=merged.partial,
            sources=statuses,
            data_json=functools.partial(merged.page_json, start, end),
        )

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
        query = replace(query, max_stale_s=_stale_allowance(query))
        while page.next_cursor is not None:
            query = replace(query, cursor=page.next_cursor, use_cache=True)
            page = await self.query(query, allowed_sources=allowed_sources, audience=audience)
            yield page

    def _select(self, query: FederatedQuery, allowed: frozenset[str] | None) -> list[_Source]:
        if query.sources:
            visible = [n for n in self._sources if allowed is None or n in allowed]
            unknown = sorted({n for n in query.sources if n not in self._sources})
            if unknown:
                raise RequestValidationError(
                    f"unknown source {', '.join(map(repr, unknown))}; known: {', '.join(visible) or 'none'}",
                    errors=[
                        {"loc": ["sources"], "msg": f"unknown source {n!r}", "type": "value_error"}
                        for n in unknown
                    ],
                )
            forbidden = sorted({n for n in query.sources if allowed is not None and n not in allowed})
            if forbidden:
                raise ForbiddenError(f"this key may not use source {', '.join(map(repr, forbidden))}")
            wanted = set(query.sources)
            candidates = [s for s in self._sources.values() if s.name in wanted]
        else:
            candidates = [s for s in self._sources.values() if allowed is None or s.name in allowed]
        if query.providers:
            kinds = set(query.providers)
            candidates = [s for s in candidates if s.kind in kinds]
        if not candidates:
            raise RequestValidationError(
                "no source matches the source/provider selection"
                + (" among the sources this key may use" if allowed is not None else ""),
                errors=[{"loc": ["providers"], "msg": "selects no source", "type": "value_error"}],
            )
        return candidates

    async def _fan_out(self, query: FederatedQuery, selected: list[_Source], digest: bytes) -> _Merged:
        write_seq = self._write_seq
        keep = _gateway_filter(query)
        jobs: list[Awaitable[_Outcome]] = []
        outcomes: list[_Outcome | None] = []
        for source in selected:
            reason = _skip_reason(source, query)
            if reason is not None:
                outcomes.append(
                    _Outcome(SourceStatus(source.name, source.kind, "skipped", error={"reason": reason}))
                )
            else:
                outcomes.append(None)
                jobs.append(
                    self._ask(
                        source, _pushdown(source, query), query.use_cache, _stale_allowance(query), keep
                    )
                )
        results = await asyncio.gather(*jobs, return_exceptions=True)
        answered = iter(results)
        done: list[_Outcome] = []
        for outcome in outcomes:
            if outcome is None:
                result = next(answered)
                if isinstance(result, BaseException):
                    raise result  # a bug, not a source failure: _ask turns those into statuses
                outcome = result
            done.append(outcome)

        failures = [o.failure for o in done if o.failure is not None]
        if failures and query.partial == "deny":
            raise failures[0]
        queried = [o for o in done if o.status.status != "skipped"]
        if queried and len(failures) == len(queried):
            raise _all_failed(failures)

        total = sum(len(o.items) for o in done if o.items is not None)
        if total > MAX_TOTAL_RESULTS:
            raise PayloadTooLargeError(
                f"the query matches {total} annotations, more than the limit of {MAX_TOTAL_RESULTS}; "
                "narrow it with fewer subject ids, names, or an updated_after/updated_before window"
            )
        by_id: dict[str, Annotation] = {}
        strip_raw = not query.include_raw
        for outcome in done:
            if outcome.items is not None:
                for item in outcome.items:
                    if strip_raw and item.raw is not None:
                        item = item.without_raw()
                    by_id[item.id] = item
        # Two stable passes with C-level keys: the order of _sort_key, at about half the cost of
        # sorting on (-µs, id) tuples (tuple comparisons dominate a one-pass sort).
        ordered = sorted(by_id.values(), key=_BY_ID)
        ordered.sort(key=_BY_UPDATED_AT, reverse=True)

        fetched = [o.fetched_at for o in done if o.fetched_at is not None]
        merged = _Merged(
            items=tuple(ordered),
            statuses=tuple(o.status for o in done),
            partial=bool(failures),
            expires_at=(min(fetched) if fetched else self._clock()) + self._merged_ttl,
            encoded=[None] * len(ordered),
            last_page=[],
        )
        storable = (
            self._merged_ttl > 0
            and not failures
            and not any(o.status.stale for o in done)
            and write_seq == self._write_seq
        )
        if storable:
            # A result larger than the whole merged cache (ValueError) is served, not kept.
            with contextlib.suppress(ValueError):
                self._merged[digest] = merged
        return merged

    async def _ask(
        self,
        source: _Source,
        pushdown: SourceQuery,
        use_cache: bool,
        max_stale_s: float | None,
        keep: Callable[[Annotation], bool] | None,
    ) -> _Outcome:
        started = time.perf_counter()
        try:
            answer: CacheAnswer = await self._cache.get(
                source.name, pushdown, self._fetcher(source), use_cache=use_cache, max_stale_s=max_stale_s
            )
        except SourceError as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._observer.on_cache(source.name, "miss")
            status = SourceStatus(
                source.name, source.kind, "error", elapsed_ms=elapsed_ms, error=exc.problem()
            )
            return _Outcome(status, failure=exc)
        items = answer.items if keep is None else [item for item in answer.items if keep(item)]
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._observer.on_cache(source.name, "stale" if answer.stale else "hit" if answer.cached else "miss")
        status = SourceStatus(
            source.name,
            source.kind,
            "ok",
            count=len(items),
            cached=answer.cached,
            stale=answer.stale,
            elapsed_ms=elapsed_ms,
        )
        return _Outcome(status, items=items, fetched_at=answer.fetched_at)

    def _fetcher(self, source: _Source) -> Callable[[SourceQuery], Awaitable[Sequence[Annotation]]]:
        async def fetch(pushdown: SourceQuery) -> Sequence[Annotation]:
            return await self._guarded(source, "fetch", lambda: source.provider.fetch(pushdown))

        return fetch

    async def _guarded(
        self, source: _Source, operation: UpstreamOperation, call: Callable[[], Awaitable[T]]
    ) -> T:
        """One upstream call through the bulkhead, the deadline and the breaker, observed."""
        observer = self._observer
        outcome = "ok"
        started = time.perf_counter()
        try:
            async with source.bulkhead:
                observer.on_inflight(source.name, 1)
                try:
                    return await source.breaker.call(lambda: self._within_deadline(source, call))
                finally:
                    observer.on_inflight(source.name, -1)
        except CircuitOpenError:
            outcome = "circuit_open"
            raise
        except GatewayError as exc:
            outcome = exc.code.value
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            # The provider contract allows only SourceErrors; a bug in one provider must not fail
            # the whole federated answer, so it becomes that source's error (and is logged).
            outcome = "internal_error"
            log.exception("provider raised a non-SourceError", extra={"source": source.name})
            raise SourceError(
                f"{source.name}: internal error in the source adapter ({type(exc).__name__})",
                source=source.name,
            ) from exc
        finally:
            observer.on_upstream(source.name, operation, time.perf_counter() - started, outcome)

    async def _within_deadline(self, source: _Source, call: Callable[[], Awaitable[T]]) -> T:
        if self._deadline_s is None:
            return await call()
        try:
            async with asyncio.timeout(self._deadline_s):
                return await call()
        except TimeoutError as exc:
            raise SourceTimeoutError(
                f"{source.name}: no complete answer within {self._deadline_s:g} s", source=source.name
            ) from exc

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
        if len(items) > MAX_WRITE_ITEMS:
            raise PayloadTooLargeError(
                f"{len(items)} annotations in one write; the limit is {MAX_WRITE_ITEMS} per request"
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
            return await self._guarded(target, "write", lambda: target.provider.write(items))
        finally:
            self.invalidate(source, {item.subject_id for item in items})

    def invalidate(self, source: str, subject_ids: Iterable[str]) -> None:
        """Forget cached answers about ``subject_ids`` of ``source`` (and every merged result)."""
        self._write_seq += 1
        self._cache.invalidate(source, subject_ids)
        # Merged results are keyed by query, not subject; writes are rare next to reads, so
        # dropping them all is simpler and cheaper than indexing them by subject.
        self._merged.clear()

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
            if refresh or s.last_checked_mono is None or now - s.last_checked_mono > HEALTH_MAX_AGE_S
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

    async def ready(self) -> dict[str, HealthReport]:
        """Probe every source (for ``/readyz``)."""
        reports = await asyncio.gather(*(self._probe(s) for s in self._sources.values()))
        return dict(zip(self._sources, reports, strict=True))

    async def _probe(self, source: _Source) -> HealthReport:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
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
        results = await asyncio.gather(
            *(s.provider.aclose() for s in self._sources.values()), return_exceptions=True
        )
        for name, result in zip(self._sources, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("closing a source failed", extra={"source": name, "error": type(result).__name__})

    def _source(self, name: str, *, loc: str) -> _Source:
        try:
            return self._sources[name]
        except KeyError:
            raise RequestValidationError(
                f"unknown source {name!r}; known: {', '.join(self._sources) or 'none'}",
                errors=[{"loc": [loc], "msg": f"unknown source {name!r}", "type": "value_error"}],
            ) from None


# --- query helpers ----------------------------------------------------------------------------


def _validate(query: FederatedQuery) -> None:
    if not query.subject_ids and not query.identifiers:
        raise RequestValidationError(
            "give at least one subject_id or identifier",
            errors=[
                {"loc": ["subject_ids"], "msg": "subject_ids or identifiers is required", "type": "missing"}
            ],
        )
    subject_count = len(set(query.subject_ids))
    if subject_count > MAX_SUBJECT_IDS_SEARCH:
        raise PayloadTooLargeError(
            f"{subject_count} subject ids in one query; the limit is {MAX_SUBJECT_IDS_SEARCH}"
        )
    for name in ("identifiers", "names", "exclude_names", "projects"):
        values: tuple[str, ...] = getattr(query, name)
        if len(values) > MAX_FILTER_VALUES:
            raise PayloadTooLargeError(
                f"{len(values)} values of {name} in one query; the limit is {MAX_FILTER_VALUES}"
            )
    if not 1 <= query.limit <= MAX_PAGE_SIZE:
        raise RequestValidationError(
            f"limit must be between 1 and {MAX_PAGE_SIZE}",
            errors=[{"loc": ["limit"], "msg": f"must be 1..{MAX_PAGE_SIZE}", "type": "value_error"}],
        )
    after, before = query.updated_after, query.updated_before
    if after is not None and before is not None and to_utc(after) >= to_utc(before):
        raise RequestValidationError(
            "updated_after must be earlier than updated_before",
            errors=[{"loc": ["updated_after"], "msg": "not before updated_before", "type": "value_error"}],
        )


def _fingerprint(query: FederatedQuery, selected: list[_Source]) -> bytes:
    """Digest of everything that decides the result set and its order (not limit/cursor/cache)."""

    def norm(values: Iterable[str]) -> list[str]:
        return sorted(set(values))

    def when(value: datetime | None) -> str | None:
        return None if value is None else to_utc(value).isoformat()

    shape = [
        norm(query.subject_ids),
        norm(k.value for k in query.subject_kinds),
        norm(query.identifiers),
        norm(query.names),
        norm(query.exclude_names),
        [s.name for s in selected],
        norm(a.value for a in query.annotator_kinds),
        norm(query.projects),
        when(query.updated_after),
        when(query.updated_before),
        query.include_raw,
        query.partial,
    ]
    try:
        encoded = orjson.dumps(shape)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate (JSON "\ud800") is not text
        field = next(
            (
                name
                for name in ("subject_ids", "identifiers", "names", "exclude_names", "projects")
                if not all(_is_text(v) for v in getattr(query, name))
            ),
            "query",
        )
        raise RequestValidationError(
            f"{field}: a value holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text",
            errors=[
                {"loc": [field], "msg": "not valid Unicode text (lone surrogate)", "type": "string_unicode"}
            ],
        ) from None
    return hashlib.sha256(encoded).digest()


def _bind(digest: bytes, audience: str | None) -> str:
    """What a cursor is bound to: the query's digest and, when given, the key it was issued to
    (so one key's cursor is refused for another, even when both may ask the same sources)."""
    if audience is None:
        return digest[:_FINGERPRINT_BYTES].hex()
    return (
        hashlib.sha256(digest + b"\x00" + audience.encode("utf-8", "surrogatepass"))
        .digest()[:_FINGERPRINT_BYTES]
        .hex()
    )


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _skip_reason(source: _Source, query: FederatedQuery) -> str | None:
    capabilities = source.provider.capabilities
    if capabilities.needs_subject_ids and not query.subject_ids:
        return "this source cannot be queried by identifier alone; give subject_id"
    if query.subject_kinds and not set(query.subject_kinds) & capabilities.subject_kinds:
        asked = ", ".join(sorted(k.value for k in set(query.subject_kinds)))
        has = ", ".join(sorted(k.value for k in capabilities.subject_kinds))
        return f"this source has no subjects of kind {asked} (it has {has})"
    if query.projects and source.kind in PROVIDERS_WITHOUT_PROJECTS:
        return "this source's annotations belong to no project, so the project filter cannot match"
    return None


def _pushdown(source: _Source, query: FederatedQuery) -> SourceQuery:
    kinds: tuple[SubjectKind, ...] = ()
    if query.subject_kinds:
        available = source.provider.capabilities.subject_kinds
        wanted = frozenset(query.subject_kinds) & available
        # Asking for every kind the source has is the same as no kind filter: share that cache.
        if wanted != available:
            kinds = tuple(sorted(wanted))
    return SourceQuery(
        subject_ids=tuple(dict.fromkeys(query.subject_ids)),
        subject_kinds=kinds,
        identifiers=tuple(sorted(set(query.identifiers))),
        names=tuple(sorted(set(query.names))),
        exclude_names=tuple(sorted(set(query.exclude_names))),
        include_raw=query.include_raw,
    )


def _gateway_filter(query: FederatedQuery) -> Callable[[Annotation], bool] | None:
    """The filters no provider applies, as one predicate; ``None`` when there are none."""
    annotators = frozenset(query.annotator_kinds)
    projects = frozenset(query.projects)
    after = to_utc(query.updated_after) if query.updated_after is not None else None
    before = to_utc(query.updated_before) if query.updated_before is not None else None
    if not annotators and not projects and after is None and before is None:
        return None

    def keep(item: Annotation) -> bool:
        if annotators and item.annotator.kind not in annotators:
            return False
        if projects and item.subject.project not in projects:
            return False
        if after is not None and item.updated_at < after:
            return False
        return before is None or item.updated_at < before

    return keep


def _stale_allowance(query: FederatedQuery) -> float | None:
    """The oldest cached answer (seconds) that may stand in for a failing source in ``query``;
    ``None``: as old as the cache keeps them (see :attr:`FederatedQuery.max_stale_s`)."""
    if query.max_stale_s is not None:
        return query.max_stale_s
    if not query.use_cache or query.partial == "deny":
        return 0.0
    return None


def _as_cache_hit(status: SourceStatus, elapsed_ms: float) -> SourceStatus:
    # Built directly: dataclasses.replace() introspects the fields on every call.
    if status.status != "ok":
        return SourceStatus(
            status.source,
            status.provider,
            status.status,
            status.count,
            status.cached,
            status.stale,
            status.elapsed_ms,
            status.error,
        )
    return SourceStatus(
        status.source, status.provider, "ok", status.count, True, False, elapsed_ms, status.error
    )


def _all_failed(failures: list[SourceError]) -> SourceError:
    """The one error for "every queried source failed" (rules in the module docstring)."""
    if len(failures) == 1:
        return failures[0]
    problems = [f.problem() for f in failures]
    client_side = [f for f in failures if f.status < 500]
    if len(client_side) == len(failures):
        return _with_errors(client_side[0], problems)
    server_side = [f for f in failures if f.status >= 500]
    if len({f.status for f in server_side}) == 1:
        return _with_errors(server_side[0], problems)
    return SourceError(
        "every source failed: " + "; ".join(f.detail for f in failures),
        source=",".join(f.source for f in failures),
        errors=problems,
    )


def _with_errors(exc: SourceError, errors: list[dict[str, Any]]) -> SourceError:
    """A copy of ``exc`` listing every source's problem (the original may be shared by the
    single-flight waiters of other requests, so it is not mutated)."""
    clone = type(exc).__new__(type(exc))
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    clone.errors = errors
    clone.__cause__ = exc
    return clone
