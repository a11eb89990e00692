"""Drive a federation stream into an aggregator.

Contract: :func:`aggregate` is :meth:`annotation_gateway.federation.Federation.consume`: every
match of ``query``, a chunk at a time (nothing cached or held), handed to ``consume``; it returns
``(partial, sources)`` with each source's status over the whole stream.
"""

from __future__ import annotations

from collections.abc import Callable

from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.records import Record

__all__ = ["aggregate"]


async def aggregate(
    federation: Federation,
    query: FederatedQuery,
    consume: Callable[[list[Record]], None],
    *,
    allowed_sources: frozenset[str] | None = None,
) -> tuple[bool, list[SourceStatus]]:
    return await federation.consume(query, consume, allowed_sources=allowed_sources)
