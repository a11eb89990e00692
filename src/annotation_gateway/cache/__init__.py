"""The answer cache: what the federation reads each source through (SPEC §4, §9).

Contract — one module per job:

- :mod:`.local` — :class:`AnnotationCache`, the per-process cache of each source's answers per
  subject: TTL, single flight, stale-on-error as the client allows, invalidation on writes. With
  ``[cache] backend = "memory"`` it is the whole cache;
- :mod:`.redis_tier` — :class:`~.redis_tier.RedisTier`, the shared tier behind every process's
  local cache (``backend = "redis"``): one round trip per lookup, cross-process single flight,
  invalidation by publish/subscribe, degraded (never failing) when Redis is not there;
  :mod:`.redis_link` (its client, call bound and backoff), :mod:`.redis_invalidation` (the
  invalidations across processes), :mod:`.redis_scripts` (its keys and Lua scripts);
- :mod:`.tier` — the contract between the two: :class:`~.tier.SharedTier` and what travels
  through it;
- :mod:`.codec` — the shared tier's value format (records to bytes and back, checked).

What the rest of the gateway uses is re-exported here from :mod:`.local` and :mod:`.tier`; the Redis tier is
imported from its module (only a gateway configured for it builds one).
"""

from __future__ import annotations

from annotation_gateway.cache.local import (
    MAX_IDENTIFIER_ENTRIES_PER_SOURCE,
    AnnotationCache,
    CacheAnswer,
    Fetch,
    Waiting,
    filter_key,
    may_serve_stale,
)
from annotation_gateway.cache.tier import (
    FetchParts,
    FilterKey,
    Known,
    Prefetched,
    SharedTier,
    Slot,
    TierEntry,
    TierFill,
)

__all__ = [
    "MAX_IDENTIFIER_ENTRIES_PER_SOURCE",
    "AnnotationCache",
    "CacheAnswer",
    "Fetch",
    "FetchParts",
    "FilterKey",
    "Known",
    "Prefetched",
    "SharedTier",
    "Slot",
    "TierEntry",
    "TierFill",
    "Waiting",
    "filter_key",
    "may_serve_stale",
]
