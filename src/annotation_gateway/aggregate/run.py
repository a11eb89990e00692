"""Drive a federation stream into an aggregator, and report the sources as reads do.

Contract: :func:`aggregate` reads every match of ``query`` through
:meth:`~annotation_gateway.federation.Federation.stream` (a chunk at a time, nothing cached or
held) and hands each chunk to ``consume``; it returns ``(partial, sources)`` where each source's
status covers the whole stream: an error on any chunk is that source's status (a source that
failed once in a stream is failed), ``count`` the matches it contributed, ``cached`` only when
every chunk was, ``stale`` when any was. Errors the stream raises (``partial=deny``, every source
failing, 403, 413, 422) propagate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.records import Record

__all__ = ["aggregate"]


async def aggregate(
    federation: Federation,
    query: FederatedQuery,
    consume: Callable[[Sequence[Record]], None],
    *,
    allowed_sources: frozenset[str] | None = None,
) -> tuple[bool, list[SourceStatus]]:
    order: list[str] = []
    totals: dict[str, SourceStatus] = {}
    last: list[SourceStatus] = []
    async for page in federation.stream(query, allowed_sources=allowed_sources):
        consume(page.records)
        last = page.sources
        if query.scope is not None:
            continue  # a scope walk's statuses are cumulative already: the last page has them all
        for status in page.sources:
            seen = totals.get(status.source)
            if seen is None:
                order.append(status.source)
                totals[status.source] = SourceStatus(
                    status.source,
                    status.provider,
                    status.status,
                    status.count,
                    status.cached,
                    status.stale,
                    status.elapsed_ms,
                    status.error,
                    status.scanned_subjects,
                )
                continue
            if seen.status != "error" and status.status == "error":
                seen.status, seen.error = "error", status.error
            seen.count += status.count
            seen.cached = seen.cached and status.cached
            seen.stale = seen.stale or status.stale
            seen.elapsed_ms += status.elapsed_ms
    statuses = list(last) if query.scope is not None else [totals[name] for name in order]
    return any(s.status == "error" for s in statuses), statuses
