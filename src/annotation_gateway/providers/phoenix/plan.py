"""What one query sends to Phoenix, and what the provider filters itself: pure, no I/O.

Contract: :meth:`ReadPlan.of` turns a :class:`~annotation_gateway.providers.base.SourceQuery`
into the values pushed down into Phoenix's URL (``identifier``, ``include_annotation_names``,
``exclude_annotation_names``) and those the provider must apply itself. Subject ids,
identifiers and names are de-duplicated. Phoenix reads an empty value specially
(``include_annotation_names=`` matches nothing, ``identifier=`` is a 422), so an empty string is
never pushed down: a filter holding ``""`` is applied locally. An empty subject id matches
nothing (``of`` returns None when nothing can match). An identifier-only query chunks the
identifiers; the empty identifier cannot be looked up without subject ids
(:class:`RequestValidationError`). :meth:`ReadPlan.filtered_locally` is the same query with
nothing pushed down but the chunked values (for filters too long for one URL).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from annotation_gateway.errors import RequestValidationError
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.providers.http import error_item, param_len

__all__ = ["Query", "ReadPlan", "encoded_len", "unique"]

Query = list[tuple[str, str | int | float | bool | None]]
"""Query parameters in order, keys repeated (what httpx takes)."""


def unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def encoded_len(param: str, value: str) -> int:
    """Bytes ``&param=value`` adds to a URL (httpx encodes queries as ``urlencode`` does)."""
    return param_len(param, value) + 1


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one query sends to Phoenix (``push_*``) and what the provider filters itself."""

    subject_ids: tuple[str, ...]
    push_identifiers: tuple[str, ...] = ()
    push_names: tuple[str, ...] = ()
    push_exclude: tuple[str, ...] = ()
    local_identifiers: frozenset[str] | None = None
    local_names: frozenset[str] | None = None
    local_exclude: frozenset[str] = field(default_factory=frozenset)
    chunk_identifiers: tuple[str, ...] = ()
    """Identifier-only query: the identifiers are what gets chunked."""

    @classmethod
    def of(cls, query: SourceQuery) -> ReadPlan | None:
        """The plan for ``query``, or None when nothing can match."""
        subject_ids = unique(s for s in query.subject_ids if s)
        if query.subject_ids and not subject_ids:
            return None  # only empty ids were asked for: nothing can match
        identifiers = unique(query.identifiers)
        names = unique(query.names)
        exclude = unique(query.exclude_names)
        push_identifiers: tuple[str, ...] = identifiers
        local_identifiers: frozenset[str] | None = None
        if "" in identifiers:
            if not subject_ids:
                raise RequestValidationError(
                    "Phoenix cannot look up annotations by the empty identifier without subject ids",
                    errors=[
                        dict(
                            error_item(
                                ["identifier"], "give subject ids with an empty identifier", "value_error"
                            )
                        )
                    ],
                )
            push_identifiers, local_identifiers = (), frozenset(identifiers)
        push_names: tuple[str, ...] = names
        local_names: frozenset[str] | None = None
        if "" in names:
            push_names, local_names = (), frozenset(names)
        plan = cls(
            subject_ids=subject_ids,
            push_identifiers=push_identifiers if subject_ids else (),
            push_names=push_names,
            push_exclude=tuple(n for n in exclude if n),
            local_identifiers=local_identifiers,
            local_names=local_names,
            local_exclude=frozenset({""}) if "" in exclude else frozenset(),
            chunk_identifiers=() if subject_ids else identifiers,
        )
        return plan

    def fixed_params(self) -> Query:
        params: Query = [("identifier", v) for v in self.push_identifiers]
        params += [("include_annotation_names", v) for v in self.push_names]
        params += [("exclude_annotation_names", v) for v in self.push_exclude]
        return params

    def filtered_locally(self) -> ReadPlan:
        """The same query with nothing pushed down but the chunked ids (for over-long filters)."""
        return ReadPlan(
            subject_ids=self.subject_ids,
            local_identifiers=(
                self.local_identifiers
                if self.local_identifiers is not None
                else (frozenset(self.push_identifiers) if self.push_identifiers else None)
            ),
            local_names=(
                self.local_names
                if self.local_names is not None
                else (frozenset(self.push_names) if self.push_names else None)
            ),
            local_exclude=self.local_exclude | frozenset(self.push_exclude),
            chunk_identifiers=self.chunk_identifiers,
        )

    @property
    def filters_locally(self) -> bool:
        return bool(self.local_identifiers is not None or self.local_names is not None or self.local_exclude)

    def keeps(self, name: str, identifier: str) -> bool:
        if self.local_names is not None and name not in self.local_names:
            return False
        if name in self.local_exclude:
            return False
        return self.local_identifiers is None or identifier in self.local_identifiers
