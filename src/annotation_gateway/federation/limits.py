"""The federation's named limits: every bound one query, write or cursor may reach.

Contract: one module, so the API, the CLI and the federation read each limit from one place
(a limit's name says what it bounds; its docstring, why that number).
"""

from __future__ import annotations

__all__ = [
    "AGGREGATE_CHUNK_SUBJECTS",
    "AGGREGATE_FIRST_CHUNK_SUBJECTS",
    "AGGREGATE_TARGET_RECORDS",
    "CHANGES_MAX_SEEN",
    "CHANGES_OVERLAP_S",
    "DEFAULT_CHANGES_LIMIT",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_SOURCE_DEADLINE_S",
    "DISCOVERY_CACHE_MAX_ITEMS",
    "EXPORT_CHUNKS_IN_FLIGHT",
    "EXPORT_CHUNK_SUBJECTS",
    "EXPORT_FIRST_CHUNK_SUBJECTS",
    "EXPORT_TARGET_RECORDS",
    "FINGERPRINT_MEMO_MAX_IDS",
    "FINGERPRINT_MEMO_MAX_ITEMS",
    "HEALTH_MAX_AGE_S",
    "HEALTH_TIMEOUT_S",
    "MAX_CHANGES_LIMIT",
    "MAX_CURSOR_LENGTH",
    "MAX_FILTER_VALUES",
    "MAX_PAGE_SIZE",
    "MAX_SCOPE_SUBJECTS",
    "MAX_SINCE_LENGTH",
    "MAX_SUBJECT_IDS_GET",
    "MAX_SUBJECT_IDS_SEARCH",
    "MAX_TOTAL_RESULTS",
    "MAX_WRITE_ITEMS",
    "MERGED_CACHE_MAX_ITEMS",
    "SCOPE_CHUNK_MAX_SUBJECTS",
    "SCOPE_FIRST_CHUNK_SUBJECTS",
]

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
MAX_SCOPE_SUBJECTS = 200_000
"""Subjects one source's scope may hold for one query before it is refused with 413 (narrow it
with ``updated_before``, ``subject_kind``, ``queue`` or the source's ``scope_*`` settings): the
scope form of ``MAX_TOTAL_RESULTS``. Its subject list (~100 bytes a subject) is what a scope
query holds whole; annotations are read a chunk at a time."""
SCOPE_FIRST_CHUNK_SUBJECTS = 32
"""Subjects in a scope walk's first chunk (no density known yet): one upstream round trip covers
a default page at three or more annotations a subject."""
SCOPE_CHUNK_MAX_SUBJECTS = 1000
"""Most subjects in one chunk of a scope walk (Phoenix takes 1000 ids a request)."""
DISCOVERY_CACHE_MAX_ITEMS = 1024
"""Scope discoveries kept (per source and discovery request)."""
MAX_WRITE_ITEMS = 5_000
"""Items in one ``POST /v1/annotations``."""
MAX_CURSOR_LENGTH = 2048
"""Characters of a cursor; longer ones are refused before decoding."""
MAX_SINCE_LENGTH = 4096
"""Characters of a change feed's ``since`` token (it carries the versions delivered near its
watermark, at most ``CHANGES_MAX_SEEN`` of them, 14 bytes each: ~3,400 characters when full)."""
DEFAULT_CHANGES_LIMIT = 100
MAX_CHANGES_LIMIT = 1000
CHANGES_OVERLAP_S = 30.0
"""How far before its watermark a change feed reads again: a change that becomes visible at a
vendor up to this long after the time it carries (a transaction committing late, a clock a bit
behind) is still delivered. Changes seen there before are recognised by the token and not
repeated."""
CHANGES_MAX_SEEN = 140
"""Versions a ``since`` token remembers inside the overlap; past it the oldest are forgotten,
and may be delivered twice (never skipped)."""
DEFAULT_SOURCE_DEADLINE_S = 30.0
"""Whole-fetch deadline per source: chunks, pages and the provider's retries included."""
HEALTH_TIMEOUT_S = 5.0
"""How long one health probe may take before the source is reported unhealthy."""
HEALTH_MAX_AGE_S = 15.0
"""``sources_info()`` re-probes a source whose last check is older than this."""
MERGED_CACHE_MAX_ITEMS = 1_000_000
"""Annotation references kept across all cached merged query results."""
EXPORT_CHUNK_SUBJECTS = 50
"""Most subjects per chunk of a streaming export (one fan-out each; a few chunks in memory)."""
EXPORT_FIRST_CHUNK_SUBJECTS = 1
"""Subjects in the first chunks of a streaming export: a quick first byte, and a density to size
the next chunks by."""
EXPORT_TARGET_RECORDS = 2_000
"""Annotations a streaming export's chunk aims at (~2 MB of records), whatever the density.
Measured on the 1,000,000-annotation export (1,000 per session): 5,000 grew the gateway's RSS
by 87 MiB, 2,000 by 53 MiB, at the same CPU per annotation relative to the upstream's."""
EXPORT_CHUNKS_IN_FLIGHT = 2
"""Chunks of a streaming export fetched at once (one being written while the next arrives)."""
AGGREGATE_FIRST_CHUNK_SUBJECTS = 200
"""Subjects in an aggregation's first chunk (no first byte to hurry; no density known yet)."""
AGGREGATE_TARGET_RECORDS = 10_000
"""Annotations an aggregation's chunk aims at: they pass through the aggregator and are dropped,
so a chunk may be larger than an export's (a few MB of records at most)."""
AGGREGATE_CHUNK_SUBJECTS = 1000
"""Most subjects per chunk of an aggregation (Phoenix takes 1000 ids a request)."""
FINGERPRINT_MEMO_MAX_ITEMS = 4096
"""Query digests remembered (a plain dict, emptied when full: cheaper than LRU upkeep)."""
FINGERPRINT_MEMO_MAX_IDS = 100_000
"""Ids the remembered queries may hold between them (a few MB of strings): ten 10,000-id
searches, or thousands of dashboard queries (the memo is emptied when a query would pass it)."""
