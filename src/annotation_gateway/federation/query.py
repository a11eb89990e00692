"""The one query type: every entry point (GET parameters, the search body, the CLI) builds a
:class:`FederatedQuery`, and building it is the only validation and normalisation there is.

Contract:
- list filters are stored sorted and de-duplicated (a set: the order a client wrote them in
  means nothing), the time window as aware UTC datetimes;
- a query names its subjects (``subject_ids``), or annotation ``identifiers``, or asks for each
  source's whole scope (``scope="all"``, SPEC §7) — so a forgotten filter never becomes a full
  scan; ``scope`` with subject ids is a contradiction;
- construction raises what the API answers: ``RequestValidationError`` (422) without a
  ``subject_id``, ``identifier`` or ``scope``, for ``scope`` with subject ids, for a ``limit``
  outside ``1..MAX_PAGE_SIZE``, for a window
  whose start is not before its end, or for a value that is not Unicode text (a lone
  surrogate); ``PayloadTooLargeError`` (413) for more distinct subject ids than
  ``MAX_SUBJECT_IDS_SEARCH`` or more values of another list filter than ``MAX_FILTER_VALUES``.
  Entry points with a tighter limit (``GET`` and its URL) check it before building;
- :func:`fingerprint` digests everything that decides the result set and its order (not
  ``limit``, ``cursor``, ``use_cache``, ``max_stale_s``), with the effective source selection;
- :func:`stale_allowance` says how old a cached answer may be to stand in for a failing source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from operator import lt
from typing import Literal

import orjson

from annotation_gateway.errors import PayloadTooLargeError, RequestValidationError
from annotation_gateway.federation.limits import (
    DEFAULT_PAGE_SIZE,
    MAX_FILTER_VALUES,
    MAX_PAGE_SIZE,
    MAX_SUBJECT_IDS_SEARCH,
)
from annotation_gateway.model import AnnotatorKind, ProviderKind, SubjectKind, to_utc

__all__ = ["LIST_FIELDS", "FederatedQuery", "PartialMode", "fingerprint", "stale_allowance"]

PartialMode = Literal["allow", "deny"]
Scope = Literal["all"]

_TEXT_FIELDS = ("subject_ids", "identifiers", "names", "exclude_names", "sources", "projects", "queues")


def _norm(values: tuple[str, ...]) -> tuple[str, ...]:
    # Already strictly ascending (a chunk of a normalised query's ids, every query the
    # federation derives): kept as is. The check is a C-level pass; sorting 1,000 ids again
    # for each of a metrics request's chunks cost ~1 ms each.
    if all(map(lt, values, values[1:])):
        return values
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class FederatedQuery:
    """A validated, normalised query. Lists are OR within a field, AND across fields; empty =
    no filter. Building one validates it (see the module docstring)."""

    subject_ids: tuple[str, ...] = ()
    subject_kinds: tuple[SubjectKind, ...] = ()
    identifiers: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    providers: tuple[ProviderKind, ...] = ()
    annotator_kinds: tuple[AnnotatorKind, ...] = ()
    projects: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    """Annotation queues (a Datadog queue's id or name); a source without queues is skipped."""
    scope: Scope | None = None
    """``"all"``: every subject of each selected source's scope (SPEC §7), not given ids."""
    updated_after: datetime | None = None
    """Inclusive lower bound on ``updated_at`` (stored in UTC; naive means UTC)."""
    updated_before: datetime | None = None
    """Exclusive upper bound on ``updated_at`` (stored in UTC; naive means UTC)."""
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

    def __post_init__(self) -> None:
        subject_count = len(set(self.subject_ids))
        if self.scope is not None and subject_count:
            raise RequestValidationError(
                "give subject ids or scope=all, not both",
                errors=[
                    {"loc": ["scope"], "msg": "not allowed together with subject_ids", "type": "value_error"}
                ],
            )
        if not subject_count and not self.identifiers and self.scope is None:
            raise RequestValidationError(
                "give at least one subject_id or identifier, or scope=all for every subject of the sources",
                errors=[
                    {
                        "loc": ["subject_ids"],
                        "msg": "subject_ids, identifiers or scope=all is required",
                        "type": "missing",
                    }
                ],
            )
        if subject_count > MAX_SUBJECT_IDS_SEARCH:
            raise PayloadTooLargeError(
                f"{subject_count} subject ids in one query; the limit is {MAX_SUBJECT_IDS_SEARCH}"
            )
        for name in ("identifiers", "names", "exclude_names", "projects", "queues"):
            count = len(set(getattr(self, name)))
            if count > MAX_FILTER_VALUES:
                raise PayloadTooLargeError(
                    f"{count} values of {name} in one query; the limit is {MAX_FILTER_VALUES}"
                )
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise RequestValidationError(
                f"limit must be between 1 and {MAX_PAGE_SIZE}",
                errors=[{"loc": ["limit"], "msg": f"must be 1..{MAX_PAGE_SIZE}", "type": "value_error"}],
            )
        for name in _TEXT_FIELDS:
            values: tuple[str, ...] = tuple(getattr(self, name))
            if not _is_text(values):
                raise RequestValidationError(
                    f"{name}: a value holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text",
                    errors=[
                        {
                            "loc": [name],
                            "msg": "not valid Unicode text (lone surrogate)",
                            "type": "string_unicode",
                        }
                    ],
                )
            # Frozen: normalised in place once, here, so nothing downstream sorts or dedupes.
            object.__setattr__(self, name, _norm(values))
        for name in ("subject_kinds", "providers", "annotator_kinds"):
            object.__setattr__(self, name, tuple(sorted(set(getattr(self, name)))))
        after = to_utc(self.updated_after) if self.updated_after is not None else None
        before = to_utc(self.updated_before) if self.updated_before is not None else None
        if after is not None and before is not None and after >= before:
            raise RequestValidationError(
                "updated_after must be earlier than updated_before",
                errors=[
                    {"loc": ["updated_after"], "msg": "not before updated_before", "type": "value_error"}
                ],
            )
        object.__setattr__(self, "updated_after", after)
        object.__setattr__(self, "updated_before", before)


LIST_FIELDS = tuple(f.name for f in fields(FederatedQuery) if f.default == ())
"""The query's list fields (``subject_ids`` and the list filters), by name: what the edges (the
search body, the GET query string in the singular, the CLI's options) fill from their lists."""


def _is_text(values: tuple[str, ...]) -> bool:
    """Whether every value is Unicode text: encoded together, in one C call (Python never
    pairs two lone surrogates of adjacent values into one character, so a lone surrogate in any
    value fails the whole)."""
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fingerprint(query: FederatedQuery, selected: Iterable[str]) -> bytes:
    """Digest of everything that decides the result set and its order, with the names of the
    sources selected (not limit, cursor or cache options). Lists are already normalised."""
    shape = [
        query.subject_ids,
        [k.value for k in query.subject_kinds],
        query.identifiers,
        query.names,
        query.exclude_names,
        list(selected),
        [a.value for a in query.annotator_kinds],
        query.projects,
        query.queues,
        query.scope,
        None if query.updated_after is None else query.updated_after.isoformat(),
        None if query.updated_before is None else query.updated_before.isoformat(),
        query.include_raw,
        query.partial,
    ]
    return hashlib.sha256(orjson.dumps(shape)).digest()


def stale_allowance(query: FederatedQuery) -> float | None:
    """The oldest cached answer (seconds) that may stand in for a failing source in ``query``;
    ``None``: as old as the cache keeps them (see :attr:`FederatedQuery.max_stale_s`)."""
    if query.max_stale_s is not None:
        return query.max_stale_s
    if not query.use_cache or query.partial == "deny":
        return 0.0
    return None
