"""In-memory providers implementing the ``AnnotationProvider`` protocol, for unit tests.

:class:`FakeProvider` answers ``fetch`` exactly as the provider contract says (every match once,
pushdown filters applied), records every call, and can be made slow (``gate``/``delay``) or
failing (``fail``), so tests can count upstream calls and drive errors. ``make_annotation``
builds canonical annotations with sensible defaults, ``make_record`` a compact record from
keyword fields. The API tests may reuse them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from annotation_gateway.errors import SourceError, UnsupportedError
from annotation_gateway.model import (
    Annotation,
    AnnotationWrite,
    Annotator,
    AnnotatorKind,
    ProviderKind,
    Subject,
    SubjectKind,
)
from annotation_gateway.providers.base import Capabilities, HealthReport, SourceQuery, WriteResult
from annotation_gateway.records import Record, builder_for, record_of

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

ALL_PUSHDOWN = frozenset({"subject_ids", "subject_kinds", "identifiers", "names", "exclude_names"})

PHOENIX_LIKE = Capabilities(
    subject_kinds=frozenset({SubjectKind.SESSION, SubjectKind.TRACE, SubjectKind.SPAN}),
    pushdown=ALL_PUSHDOWN,
    needs_subject_ids=False,
    writable_kinds=frozenset({SubjectKind.SESSION, SubjectKind.TRACE}),
)
DATADOG_LIKE = Capabilities(
    subject_kinds=frozenset({SubjectKind.TRACE, SubjectKind.SESSION, SubjectKind.EXPERIMENT_TRACE}),
    pushdown=frozenset({"subject_ids"}),
    needs_subject_ids=True,
    has_projects=False,
    annotator_kinds=frozenset({AnnotatorKind.HUMAN}),
)

_ids = itertools.count(1)


def make_annotation(
    source: str,
    subject_id: str,
    *,
    name: str = "correctness",
    updated_at: datetime | int = 0,
    native_id: str | None = None,
    provider: ProviderKind = ProviderKind.PHOENIX,
    kind: SubjectKind = SubjectKind.SESSION,
    project: str | None = "support-bot",
    annotator: AnnotatorKind = AnnotatorKind.HUMAN,
    label: str | None = "good",
    score: float | None = 1.0,
    identifier: str = "",
    raw: dict[str, object] | None = None,
) -> Annotation:
    """An annotation; an int ``updated_at`` is seconds after ``BASE_TIME``."""
    when = BASE_TIME + timedelta(seconds=updated_at) if isinstance(updated_at, int) else updated_at
    return Annotation(
        id=f"{source}:{native_id if native_id is not None else next(_ids)}",
        source=source,
        provider=provider,
        subject=Subject(
            kind=kind, id=subject_id, project=project if provider is ProviderKind.PHOENIX else None
        ),
        name=name,
        label=label,
        score=score,
        annotator=Annotator(kind=annotator, id="someone"),
        identifier=identifier,
        created_at=when,
        updated_at=when,
        raw=raw,
    )


def make_record(
    *, created_at: datetime, updated_at: datetime, raw: dict[str, Any] | None = None, **fields: Any
) -> Record:
    """:meth:`~annotation_gateway.records.RecordBuilder.record` of the source's builder, called
    with keywords."""
    builder = builder_for(fields.pop("source"), fields.pop("provider"))
    return builder.record(**fields, created_at=created_at, updated_at=updated_at, raw=raw)


@dataclass
class FakeProvider:
    """An in-memory source. ``fail`` (an exception, or a callable returning one or None) makes
    ``fetch`` raise; ``gate`` blocks every fetch until set; ``delay`` sleeps first."""

    source_name: str
    annotations: list[Annotation] = field(default_factory=list)
    provider_kind: ProviderKind = ProviderKind.PHOENIX
    caps: Capabilities = PHOENIX_LIKE
    fail: SourceError | BaseException | Callable[[SourceQuery], BaseException | None] | None = None
    gate: asyncio.Event | None = None
    delay: float = 0.0
    healthy: bool = True
    calls: list[SourceQuery] = field(default_factory=list)
    writes: list[list[AnnotationWrite]] = field(default_factory=list)
    closed: bool = False
    started: int = 0
    """Fetches that began (``calls`` records only those that got past gate and delay)."""

    @property
    def name(self) -> str:
        return self.source_name

    @property
    def kind(self) -> ProviderKind:
        return self.provider_kind

    @property
    def capabilities(self) -> Capabilities:
        return self.caps

    async def fetch_records(self, query: SourceQuery) -> list[Record]:
        return [record_of(a, include_raw=query.include_raw) for a in await self.fetch(query)]

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        self.started += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.calls.append(query)
        failure = self.fail(query) if callable(self.fail) else self.fail
        if failure is not None:
            raise failure
        return [a for a in self.annotations if _matches(a, query)]

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        if not self.caps.writable_kinds:
            raise UnsupportedError(f"{self.source_name} is read-only")
        self.writes.append(list(items))
        ids: list[str] = []
        for item in items:
            existing = next(
                (
                    a
                    for a in self.annotations
                    if a.subject.id == item.subject_id
                    and a.name == item.name
                    and a.identifier == item.identifier
                ),
                None,
            )
            native = existing.id.split(":", 1)[1] if existing else f"w{next(_ids)}"
            if existing:
                self.annotations.remove(existing)
            written = make_annotation(
                self.source_name,
                item.subject_id,
                name=item.name,
                native_id=native,
                provider=self.provider_kind,
                kind=item.subject_kind,
                annotator=item.annotator_kind,
                label=item.label,
                score=item.score,
                identifier=item.identifier,
                updated_at=datetime.now(UTC),
            )
            self.annotations.append(written)
            ids.append(written.id)
        return WriteResult(ids=tuple(ids))

    async def health(self) -> HealthReport:
        return HealthReport(
            ok=self.healthy, latency_ms=0.1, version="fake-1", detail=None if self.healthy else "down"
        )

    async def aclose(self) -> None:
        self.closed = True


def _matches(item: Annotation, query: SourceQuery) -> bool:
    if query.subject_ids and item.subject.id not in query.subject_ids:
        return False
    if query.subject_kinds and item.subject.kind not in query.subject_kinds:
        return False
    if query.identifiers and item.identifier not in query.identifiers:
        return False
    if query.names and item.name not in query.names:
        return False
    return not (query.exclude_names and item.name in query.exclude_names)


class ManualClock:
    """A monotonic clock tests move by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
