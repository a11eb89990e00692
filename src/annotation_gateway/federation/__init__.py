"""Federation: one query fanned out to every source, merged, ordered, paged, cached.

The pipeline, one module per stage:

- :mod:`.query` — :class:`FederatedQuery`, the one query type; building it validates and
  normalises it (every entry point — GET, the search body, the CLI — builds one);
- :mod:`.planner` — which sources to ask or skip (from provider capabilities), what each is
  asked (push-down) and what the gateway filters itself;
- :mod:`.guards` — each upstream call through a bulkhead, a deadline and a circuit breaker;
- :mod:`.merge` — the sources' answers into one ordered result, each item's JSON written once;
- :mod:`.cursor` — the sort key and signed keyset cursors bound to the query and the key;
- :mod:`.answers` — what comes back (:class:`QueryPage`, :class:`SourceStatus`, :class:`SourceInfo`);
- :mod:`.observer` — metric hooks (the API wires them to Prometheus);
- :mod:`.limits` — every named limit;
- :mod:`.core` — :class:`Federation`, the facade that runs the stages, writes and health checks.

This package re-exports the public names, so callers import from ``annotation_gateway.federation``.
"""

from __future__ import annotations

from annotation_gateway.federation.answers import QueryPage, SourceInfo, SourceState, SourceStatus
from annotation_gateway.federation.core import Federation
from annotation_gateway.federation.limits import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_SOURCE_DEADLINE_S,
    HEALTH_MAX_AGE_S,
    HEALTH_TIMEOUT_S,
    MAX_CURSOR_LENGTH,
    MAX_FILTER_VALUES,
    MAX_PAGE_SIZE,
    MAX_SUBJECT_IDS_GET,
    MAX_SUBJECT_IDS_SEARCH,
    MAX_TOTAL_RESULTS,
    MAX_WRITE_ITEMS,
)
from annotation_gateway.federation.observer import (
    CacheOutcome,
    FederationObserver,
    NullObserver,
    UpstreamOperation,
)
from annotation_gateway.federation.query import FederatedQuery, PartialMode

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
    "CacheOutcome",
    "FederatedQuery",
    "Federation",
    "FederationObserver",
    "NullObserver",
    "PartialMode",
    "QueryPage",
    "SourceInfo",
    "SourceState",
    "SourceStatus",
    "UpstreamOperation",
]
