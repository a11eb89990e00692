"""Federation: one query fanned out to every source, merged, ordered, paged, cached.

Contract (SPEC §3, §4):
- :meth:`Federation.query` asks every selected source concurrently (the answer costs about the
  slowest source, not the sum), through the per-(source, subject) cache with single flight;
- filters a source pushes down are sent to it; the rest (``annotator_kinds``, ``projects``,
  ``updated_after``/``updated_before``, ``sources``/``providers`` selection) are applied here;
- the merged set is ordered by ``updated_at`` descending, then ``id`` ascending, and paged with
  an opaque keyset cursor bound to the query: a cursor replayed with other filters, or tampered
  with, raises ``InvalidCursorError``; paging to the end yields every match exactly once;
- a failing source is reported in ``sources[]`` with ``status="error"`` and its problem, and the
  page is marked ``partial`` (never a silently short answer); with ``partial="deny"`` the first
  failure is raised; when every queried source fails the failure is raised;
- a source that cannot answer the query (e.g. needs subject ids and got only identifiers) is
  ``skipped`` with the reason.

(Implementation in progress: the types below are the interface the API layer codes against.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.providers.base import AnnotationProvider, Capabilities, HealthReport, WriteResult
from annotation_gateway.settings import CacheConfig

__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_SUBJECT_IDS_GET",
    "MAX_SUBJECT_IDS_SEARCH",
    "MAX_TOTAL_RESULTS",
    "MAX_WRITE_ITEMS",
    "FederatedQuery",
    "Federation",
    "QueryPage",
    "SourceInfo",
    "SourceStatus",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_SUBJECT_IDS_GET = 1000
"""Subject ids in one ``GET /v1/annotations`` (URL length)."""
MAX_SUBJECT_IDS_SEARCH = 10_000
"""Subject ids in one ``POST /v1/annotations/search``."""
MAX_TOTAL_RESULTS = 500_000
"""Matches one query may have before it is refused with 413 (narrow the query)."""
MAX_WRITE_ITEMS = 5_000
"""Items in one ``POST /v1/annotations``."""

PartialMode = Literal["allow", "deny"]
SourceState = Literal["ok", "error", "skipped"]


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
    updated_before: datetime | None = None
    limit: int = DEFAULT_PAGE_SIZE
    cursor: str | None = None
    include_raw: bool = False
    partial: PartialMode = "allow"
    use_cache: bool = True
    """False for ``Cache-Control: no-cache``: fetch fresh (and refresh the cache)."""


@dataclass(slots=True)
class SourceStatus:
    """How one source fared in one query (``sources[]`` of the answer)."""

    source: str
    provider: ProviderKind
    status: SourceState
    count: int = 0
    cached: bool = False
    stale: bool = False
    elapsed_ms: float = 0.0
    error: dict[str, Any] | None = None
    """The problem object (RFC 9457) when ``status`` is ``error``; the reason when ``skipped``."""


@dataclass(slots=True)
class QueryPage:
    data: list[Annotation]
    next_cursor: str | None
    partial: bool
    sources: list[SourceStatus]


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


class Federation:
    """Owns the providers, their cache and circuit breakers; answers federated queries."""

    def __init__(
        self,
        providers: Sequence[AnnotationProvider],
        cache: CacheConfig,
        *,
        cursor_secret: bytes,
    ) -> None:
        raise NotImplementedError

    @property
    def source_names(self) -> list[str]:
        raise NotImplementedError

    async def query(
        self, query: FederatedQuery, *, allowed_sources: frozenset[str] | None = None
    ) -> QueryPage:
        """One page. ``allowed_sources`` (from the caller's key) limits what may be queried;
        naming a source outside it raises ``ForbiddenError``; an unknown source ``NotFoundError``."""
        raise NotImplementedError

    def pages(
        self, query: FederatedQuery, *, allowed_sources: frozenset[str] | None = None
    ) -> AsyncIterator[QueryPage]:
        """Every page of ``query`` in order (export), following the cursor."""
        raise NotImplementedError

    async def write(
        self, source: str, items: Sequence[AnnotationWrite], *, allowed_sources: frozenset[str] | None = None
    ) -> WriteResult:
        """Upsert to a writable source synchronously and invalidate the cached subjects."""
        raise NotImplementedError

    async def sources_info(self, *, refresh: bool = False) -> list[SourceInfo]:
        raise NotImplementedError

    async def ready(self) -> dict[str, HealthReport]:
        """Probe every source (for ``/readyz``)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError
