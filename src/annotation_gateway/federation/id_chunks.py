"""A query over listed subject ids, streamed a chunk of subjects at a time (exports, aggregates).

Contract: :func:`stream_chunks` cuts the query's subject ids (sorted: the query is normalised)
into chunks (:class:`Chunker`: ``first`` subjects first — for an export, one, a quick first byte
— then as many as make about ``target`` annotations at the density seen so far, at most
``most``); up to :data:`~.limits.EXPORT_CHUNKS_IN_FLIGHT` chunks are asked at once through the
caller's ``fan_out`` (one merged result per chunk), and each is yielded, in subject order, as one
page of its records. An identifier-only query is one chunk. So memory holds a few chunks, never
the whole result. ``next_cursor`` is ``None``; each page's ``sources`` (and ``partial``) cover
the stream so far (:class:`~.merge.StatusTotals`), so the last page's are the whole stream's. A
chunk's error is raised when its turn comes (the first chunk's before anything is yielded); the
chunks still in flight are cancelled when the stream ends or is closed early.

The facade (:meth:`~.core.Federation.stream`) chooses the chunk sizes (``EXPORT_*`` or
``AGGREGATE_*`` limits) and the fan-out (ordered or not); a scope's stream is
:mod:`.scope_reads`'.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace

from annotation_gateway.federation import limits
from annotation_gateway.federation.answers import QueryPage
from annotation_gateway.federation.merge import Merged, StatusTotals
from annotation_gateway.federation.query import FederatedQuery

__all__ = ["Chunker", "stream_chunks"]


async def stream_chunks(
    query: FederatedQuery,
    fan_out: Callable[[FederatedQuery], Awaitable[Merged]],
    chunker: Chunker,
) -> AsyncGenerator[QueryPage, None]:
    """Every match of ``query``, a chunk of ``chunker``'s subjects at a time (module docstring)."""

    def start(chunk: tuple[str, ...]) -> asyncio.Task[Merged]:
        part = replace(query, subject_ids=chunk) if chunk else query
        return asyncio.ensure_future(fan_out(part))

    window: deque[tuple[int, asyncio.Task[Merged]]] = deque()
    totals = StatusTotals()
    try:
        while len(window) < limits.EXPORT_CHUNKS_IN_FLIGHT and (chunk := chunker.next()) is not None:
            window.append((len(chunk), start(chunk)))
        while window:
            subjects, task = window.popleft()
            merged = await task
            chunker.observe(subjects, len(merged.records))
            if (chunk := chunker.next()) is not None:
                window.append((len(chunk), start(chunk)))
            so_far = totals.add(merged.statuses)
            yield QueryPage(
                records=list(merged.records),
                next_cursor=None,
                partial=any(s.status == "error" for s in so_far),
                sources=so_far,
            )
            del merged
    finally:
        for _, task in window:
            task.cancel()
        await asyncio.gather(*(task for _, task in window), return_exceptions=True)


class Chunker:
    """Cuts a stream's subject ids into chunks sized by what earlier chunks held.

    The first chunks are ``first`` subjects (nothing is known yet; for an export a small first
    chunk is a quick first byte); later ones hold as many subjects as make about ``target``
    annotations at the average seen so far, between 1 and ``most``. So a chunk's memory follows
    the target, not the stream's size or its subjects' density. No subject ids (an
    identifier-only query): one empty chunk.
    """

    def __init__(self, subject_ids: tuple[str, ...], *, first: int, target: int, most: int) -> None:
        self._ids = subject_ids
        self._first, self._target, self._most = first, target, most
        self._at = 0
        self._subjects_seen = 0
        self._records_seen = 0
        self._whole = not subject_ids

    def next(self) -> tuple[str, ...] | None:
        if self._whole:
            self._whole = False
            return ()
        if self._at >= len(self._ids):
            return None
        if self._subjects_seen == 0:
            size = self._first
        else:
            per_subject = max(self._records_seen / self._subjects_seen, 1.0)
            size = int(self._target / per_subject)
        size = min(max(size, 1), self._most)
        chunk = self._ids[self._at : self._at + size]
        self._at += size
        return chunk

    def observe(self, subjects: int, records: int) -> None:
        self._subjects_seen += subjects
        self._records_seen += records
