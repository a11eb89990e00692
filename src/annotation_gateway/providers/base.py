"""The contract between the gateway and a vendor adapter ("provider").

A provider is the receiver of the OpenTelemetry Collector picture: it speaks one vendor's wire
format, translates every vendor failure into a :class:`~annotation_gateway.errors.SourceError`,
and hands back only canonical :class:`~annotation_gateway.model.Annotation` objects. Nothing
outside ``providers/`` knows a vendor's URL, header, field name or error format.

Contract of :meth:`AnnotationProvider.fetch`: return **every** annotation of this source that
matches the :class:`SourceQuery` — each exactly once, all pages read, id lists chunked to the
vendor's limits — or raise a ``SourceError``. Filters the vendor cannot apply are applied by the
provider itself, so the answer is exact either way; ``capabilities.pushdown`` only says which ones
cost nothing extra. Unknown subject ids are not an error: they simply have no annotations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.records import Record

__all__ = [
    "AnnotationProvider",
    "Capabilities",
    "HealthReport",
    "ScopeRequest",
    "ScopeSubjects",
    "SourceQuery",
    "WriteResult",
    "unknown_fields",
]


@dataclass(frozen=True, slots=True)
class SourceQuery:
    """What one source is asked for. Empty tuples mean "no filter".

    ``subject_ids`` and ``identifiers`` may not both be empty (a provider that needs subject ids
    reports so through ``capabilities.needs_subject_ids`` and is never called without them).
    ``subject_kinds`` empty means every kind the source has.
    """

    subject_ids: tuple[str, ...] = ()
    subject_kinds: tuple[SubjectKind, ...] = ()
    identifiers: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()
    include_raw: bool = False

    def __post_init__(self) -> None:
        if not self.subject_ids and not self.identifiers:
            raise ValueError("a SourceQuery needs subject_ids or identifiers")

    def with_subject_ids(self, subject_ids: Sequence[str]) -> SourceQuery:
        return SourceQuery(
            subject_ids=tuple(subject_ids),
            subject_kinds=self.subject_kinds,
            identifiers=self.identifiers,
            names=self.names,
            exclude_names=self.exclude_names,
            include_raw=self.include_raw,
        )


@dataclass(frozen=True, slots=True)
class ScopeRequest:
    """What :meth:`AnnotationProvider.discover` is asked: the subjects of the source's scope.

    ``subject_kinds`` are among the kinds the source can enumerate (never empty);
    ``started_before`` (the query's ``updated_before``) lets a vendor that lists subjects by start
    time leave out those that began at or after it (an annotation is not updated before its
    subject began); ``queues`` (ids or names) narrows a source that has queues to those queues.
    Equal requests have equal answers (discovery is cached by request).
    """

    subject_kinds: tuple[SubjectKind, ...]
    max_subjects: int
    """More subjects than this is a ``PayloadTooLargeError`` (raised as soon as it is seen)."""
    started_before: datetime | None = None
    queues: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScopeSubjects:
    """A source's scope, as :meth:`AnnotationProvider.discover` found it."""

    subjects: tuple[tuple[str, SubjectKind], ...]
    """(subject id, kind), sorted, each once."""
    queue_ids: frozenset[str] | None = None
    """When the scope is a set of queues smaller than everything the source holds, the queues
    whose annotations belong to it (annotations of the same subjects in other queues do not);
    ``None``: every annotation of the subjects belongs to the scope."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a source can do, as shown by ``GET /v1/sources``."""

    subject_kinds: frozenset[SubjectKind]
    pushdown: frozenset[str]
    """Query fields the vendor filters on itself (``subject_ids``, ``identifiers``, ``names``...)."""
    needs_subject_ids: bool
    """True when the vendor cannot be queried by identifier alone."""
    writable_kinds: frozenset[SubjectKind] = frozenset()
    """Subject kinds ``write`` accepts; empty for a read-only source."""
    has_projects: bool = True
    """False when the source's annotations carry no project (``subject.project`` is null), so a
    ``project`` filter cannot match and the planner skips the source."""
    annotator_kinds: frozenset[AnnotatorKind] | None = None
    """The annotator kinds the source's annotations can have; ``None``: any. The planner skips
    a source none of whose kinds a query's ``annotator_kind`` filter asks for."""
    scope_kinds: frozenset[SubjectKind] = frozenset()
    """The subject kinds :meth:`AnnotationProvider.discover` enumerates (the source's scope, as
    configured); empty: the source has no scope, and ``scope=all`` skips it."""
    has_queues: bool = False
    """True when annotations belong to queues (``queue_id``/``queue_name``); the ``queue``
    filter skips a source without."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of an all-or-nothing upsert batch."""

    ids: tuple[str, ...]
    """Canonical ids (``{source}:{native id}``) of the written annotations, in request order."""


@dataclass(slots=True)
class HealthReport:
    """One reachability probe of a source."""

    ok: bool
    latency_ms: float
    version: str | None = None
    detail: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class AnnotationProvider(Protocol):
    """A configured source: one vendor account/project behind one shared HTTP connection pool."""

    @property
    def name(self) -> str:
        """The configured source name (``phoenix-prod``)."""
        ...

    @property
    def kind(self) -> ProviderKind: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def fetch_records(self, query: SourceQuery) -> list[Record]:
        """Every matching annotation, each once (see the module docstring), as compact records
        mapped straight from the vendor's rows (the read path's form), or a SourceError."""
        ...

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        """What :meth:`fetch_records` finds, as canonical models (migrate, tests)."""
        ...

    async def discover(self, request: ScopeRequest) -> ScopeSubjects:
        """The subjects of this source's scope (SPEC §7), found through the vendor's own listing
        endpoints, or a SourceError. Their annotations are then read with :meth:`fetch_records`
        by subject id."""
        ...

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        """Upsert ``items`` all-or-nothing and synchronously (read-your-write).

        Raises ``UnsupportedError`` for a read-only source, ``RequestValidationError`` for items
        the vendor would refuse (checked before any request), ``SourceNotFoundError`` naming the
        unknown subject ids, or another ``SourceError``.
        """
        ...

    async def health(self) -> HealthReport:
        """Probe the vendor cheaply (never raises)."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool."""
        ...


def unknown_fields(row: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    """The fields of a vendor ``row`` that are not in ``known``, in the row's order (SPEC §2
    keeps them in ``extensions``); ``None`` when there are none — the usual case, found by one
    set comparison in C instead of a loop over every field of every row read."""
    if row.keys() <= known:
        return None
    return {k: v for k, v in row.items() if k not in known}
