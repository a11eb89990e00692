"""Merging: the sources' answers become one ordered result, paged without re-sorting.

Contract:
- :func:`merge` takes each queried source's :class:`Outcome` and returns the :class:`Merged`
  result: every annotation once (by id), ``raw`` stripped unless asked for, ordered by
  :func:`~annotation_gateway.federation.cursor.sort_key`; more than ``MAX_TOTAL_RESULTS`` matches
  is a ``PayloadTooLargeError`` (413) naming the limit;
- a :class:`Merged` result is shared by all pages of its query (and cached by the facade): each
  item's JSON is written once, when a page first needs it (:meth:`Merged.page_json`);
- :func:`all_failed` is the one error for "every queried source failed": the failure itself if
  one source was asked; if all are upstream 4xx-class (the vendor refused: auth, not found,
  throttled) the first of them, so an upstream 4xx is never the gateway's 5xx; otherwise the
  first non-4xx failure when those share one status (502, 504), else a ``SourceError`` 502.
  With several failures, ``errors`` lists every source's problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from annotation_gateway.errors import PayloadTooLargeError, SourceError
from annotation_gateway.federation import limits
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.federation.cursor import BY_ID, BY_UPDATED_AT
from annotation_gateway.model import Annotation

__all__ = ["Merged", "Outcome", "all_failed", "as_cache_hit", "merge"]

_ANNOTATION_JSON = TypeAdapter(Annotation).dump_json
_ANNOTATIONS_JSON = TypeAdapter(list[Annotation]).dump_json


@dataclass(frozen=True, slots=True)
class Merged:
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
class Outcome:
    status: SourceStatus
    items: list[Annotation] | None = None
    failure: SourceError | None = None
    fetched_at: float | None = None


def merge(done: list[Outcome], *, include_raw: bool, expires_at: float) -> Merged:
    """One ordered result from the sources' outcomes (see the module docstring)."""
    total = sum(len(o.items) for o in done if o.items is not None)
    if total > limits.MAX_TOTAL_RESULTS:
        raise PayloadTooLargeError(
            f"the query matches {total} annotations, more than the limit of {limits.MAX_TOTAL_RESULTS}; "
            "narrow it with fewer subject ids, names, or an updated_after/updated_before window"
        )
    by_id: dict[str, Annotation] = {}
    strip_raw = not include_raw
    for outcome in done:
        if outcome.items is not None:
            for item in outcome.items:
                if strip_raw and item.raw is not None:
                    item = item.without_raw()
                by_id[item.id] = item
    # Two stable passes with C-level keys: the order of sort_key, at about half the cost of
    # sorting on (-µs, id) tuples (tuple comparisons dominate a one-pass sort).
    ordered = sorted(by_id.values(), key=BY_ID)
    ordered.sort(key=BY_UPDATED_AT, reverse=True)
    return Merged(
        items=tuple(ordered),
        statuses=tuple(o.status for o in done),
        partial=any(o.failure is not None for o in done),
        expires_at=expires_at,
        encoded=[None] * len(ordered),
        last_page=[],
    )


def as_cache_hit(status: SourceStatus, elapsed_ms: float) -> SourceStatus:
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


def all_failed(failures: list[SourceError]) -> SourceError:
    """The one error for "every queried source failed" (rules in the module docstring)."""
    if len(failures) == 1:
        return failures[0]
    problems = [f.problem() for f in failures]
    client_side = [f for f in failures if f.status < 500]
    if len(client_side) == len(failures):
        return with_errors(client_side[0], problems)
    server_side = [f for f in failures if f.status >= 500]
    if len({f.status for f in server_side}) == 1:
        return with_errors(server_side[0], problems)
    return SourceError(
        "every source failed: " + "; ".join(f.detail for f in failures),
        source=",".join(f.source for f in failures),
        errors=problems,
    )


def with_errors(exc: SourceError, errors: list[dict[str, Any]]) -> SourceError:
    """A copy of ``exc`` listing every source's problem (the original may be shared by the
    single-flight waiters of other requests, so it is not mutated)."""
    clone = type(exc).__new__(type(exc))
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    clone.errors = errors
    clone.__cause__ = exc
    return clone
