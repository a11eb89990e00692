"""Scope reads (SPEC §7): a ``scope="all"`` query's page and a scope export's stream.

Contract:
- :class:`ScopeReader` answers the scope queries :class:`~.core.Federation` hands it, for the
  sources it selected: each source's subjects are discovered (concurrently, through the
  :class:`~.scopes.DiscoveryCache`, under the source's guards, the time counted as the
  source's), then walked a chunk at a time in subject order (:class:`~.scopes.ScopeWalk`), each
  chunk's subjects read through the federation's per-source ask (the annotation cache, as an id
  query's are).
- :meth:`ScopeReader.page` reads chunks until it holds more than a page and signs a (subject,
  record) cursor; :meth:`ScopeReader.stream` yields every chunk as a page and stores nothing.
- Failures as an id query's: the first with ``partial=deny``, the combined error when every
  source asked failed, otherwise each failing source named in ``sources[]`` (``partial``).
  A source skipped by the planner is named with its reason and not discovered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from annotation_gateway.errors import SourceError
from annotation_gateway.federation import limits
from annotation_gateway.federation.answers import QueryPage, SourceStatus
from annotation_gateway.federation.cursor import CursorCodec
from annotation_gateway.federation.guards import SourceRuntime
from annotation_gateway.federation.merge import Outcome, all_failed
from annotation_gateway.federation.observer import BoundObserver
from annotation_gateway.federation.planner import gateway_filter, skip_reason
from annotation_gateway.federation.query import FederatedQuery, stale_allowance
from annotation_gateway.federation.scopes import (
    DiscoveryAnswer,
    DiscoveryCache,
    ScopeKey,
    ScopeWalk,
    scope_key,
)
from annotation_gateway.providers.base import ScopeRequest, ScopeSubjects, SourceQuery
from annotation_gateway.records import Record

__all__ = ["Ask", "ScopeReader"]


class Ask(Protocol):
    """The federation's read of one source's answer through the annotation cache."""

    def __call__(
        self,
        source: SourceRuntime,
        pushdown: SourceQuery,
        use_cache: bool,
        max_stale_s: float | None,
        keep: Callable[[Record], bool] | None,
        *,
        store: bool = True,
    ) -> Awaitable[Outcome]: ...


class ScopeReader:
    """Reads scope queries (see the module docstring); owns the discovery cache."""

    def __init__(
        self,
        *,
        codec: CursorCodec,
        discovery: DiscoveryCache,
        ask: Ask,
        observer: BoundObserver,
        deadline_s: float | None,
    ) -> None:
        self._codec = codec
        self._discovery = discovery
        self._ask = ask
        self._observer = observer
        self._deadline_s = deadline_s

    async def aclose(self) -> None:
        """Cancel the discoveries still running."""
        await self._discovery.aclose()

    async def page(self, query: FederatedQuery, selected: Sequence[SourceRuntime], binding: str) -> QueryPage:
        """One page of a scope query (see :mod:`.scopes`): chunks until more than a page."""
        after = self._codec.decode_scope(query.cursor, binding) if query.cursor is not None else None
        walk, skipped = await self._walk(query, selected, after, target=query.limit + 1, store=True)
        collected: list[Record] = []
        chunks = walk.chunks()
        try:
            async for records in chunks:
                collected.extend(records)
                if len(collected) > query.limit:
                    break
        finally:
            await chunks.aclose()
        self._failures(query, walk)
        page = collected[: query.limit]
        more = len(collected) > query.limit or not walk.exhausted
        next_cursor = self._codec.encode_scope(binding, scope_key(page[-1])) if more and page else None
        return QueryPage(
            records=page,
            next_cursor=next_cursor,
            partial=bool(walk.failures),
            sources=_in_order(selected, walk, skipped),
        )

    async def stream(
        self, query: FederatedQuery, selected: Sequence[SourceRuntime]
    ) -> AsyncIterator[QueryPage]:
        """A scope export: every chunk of the walk as one page, stored nowhere."""
        walk, skipped = await self._walk(
            query, selected, None, target=limits.EXPORT_TARGET_RECORDS, store=False
        )
        self._failures(query, walk)
        yielded = False
        async for records in walk.chunks():
            self._failures(query, walk)
            yielded = True
            yield QueryPage(
                records=records,
                next_cursor=None,
                partial=bool(walk.failures),
                sources=_in_order(selected, walk, skipped),
            )
        if not yielded:  # an empty scope (or every source skipped) is still one, empty, page
            yield QueryPage(
                records=[],
                next_cursor=None,
                partial=bool(walk.failures),
                sources=_in_order(selected, walk, skipped),
            )

    async def _walk(
        self,
        query: FederatedQuery,
        selected: Sequence[SourceRuntime],
        after: ScopeKey | None,
        *,
        target: int,
        store: bool,
    ) -> tuple[ScopeWalk, dict[str, SourceStatus]]:
        """Discover every selected source's scope (concurrently) and set up the walk."""
        keep = gateway_filter(query)
        stale_s = stale_allowance(query)

        def ask(
            source: SourceRuntime, pushed: SourceQuery, keep: Callable[[Record], bool] | None
        ) -> Awaitable[Outcome]:
            return self._ask(source, pushed, query.use_cache, stale_s, keep, store=store)

        walk = ScopeWalk(ask=ask, query=query, after=after, target=target)
        skipped: dict[str, SourceStatus] = {}
        asked: list[SourceRuntime] = []
        for source in selected:
            reason = skip_reason(source, query)
            if reason is not None:
                skipped[source.name] = SourceStatus(
                    source.name, source.kind, "skipped", error={"reason": reason}
                )
            else:
                asked.append(source)
        found = await asyncio.gather(
            *(self._discover(s, query, stale_s) for s in asked), return_exceptions=True
        )
        for source, answer in zip(asked, found, strict=True):
            if isinstance(answer, SourceError):
                walk.add_failed(source, answer)
            elif isinstance(answer, BaseException):
                raise answer  # 413 (a scope too large), or a bug
            else:
                walk.add(source, answer[0], keep, elapsed_ms=answer[1])
        return walk, skipped

    async def _discover(
        self, source: SourceRuntime, query: FederatedQuery, stale_s: float | None
    ) -> tuple[DiscoveryAnswer, float]:
        """The source's scope and how long finding it took (ms): discovery is the source's
        time in ``Server-Timing``, not the gateway's."""
        capabilities = source.provider.capabilities
        kinds = capabilities.scope_kinds
        if query.subject_kinds:
            kinds = kinds & frozenset(query.subject_kinds)
        request = ScopeRequest(
            subject_kinds=tuple(sorted(kinds)),
            max_subjects=limits.MAX_SCOPE_SUBJECTS,
            started_before=_ceil_hour(query.updated_before),
            queues=query.queues,
        )

        async def discover() -> ScopeSubjects:
            return await source.guarded(
                "discover",
                lambda: source.provider.discover(request),
                observer=self._observer,
                deadline_s=self._deadline_s,
            )

        started = time.perf_counter()
        answer = await self._discovery.get(
            source.name, request, discover, use_cache=query.use_cache, max_stale_s=stale_s
        )
        return answer, (time.perf_counter() - started) * 1000

    @staticmethod
    def _failures(query: FederatedQuery, walk: ScopeWalk) -> None:
        """Raise as an id query would: the first failure with ``partial=deny``; the combined
        error when every source asked failed."""
        failures = walk.failures
        if failures and query.partial == "deny":
            raise failures[0]
        if walk.tallies and len(failures) == len(walk.tallies):
            raise all_failed(failures)


def _in_order(
    selected: Sequence[SourceRuntime], walk: ScopeWalk, skipped: dict[str, SourceStatus]
) -> list[SourceStatus]:
    """Every selected source's status, in configuration order."""
    walked = {status.source: status for status in walk.statuses()}
    return [skipped.get(s.name) or walked[s.name] for s in selected]


def _ceil_hour(moment: datetime | None) -> datetime | None:
    """``moment`` rounded up to the hour: a discovery bound that moves with ``now`` (a dashboard's
    window) would never share a cached discovery; an hour later only lists a few more subjects,
    which the gateway's own window filter then leaves out."""
    if moment is None:
        return None
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)
