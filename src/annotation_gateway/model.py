"""The canonical annotation model (SPEC §2) and the write model.

Contract: every annotation the gateway returns, whichever vendor it came from, has the shape of
:class:`Annotation`; its JSON is exactly the SPEC §2 shape (timestamps as RFC 3339 UTC with
``Z``, ``raw`` present only when it was asked for). :class:`Annotation` is the documented OpenAPI
schema and what compare, migrate and the CLI tables work with; the read path carries the same
JSON as compact records (:mod:`annotation_gateway.records`), which providers build straight from
the vendor's rows. Nothing after the providers sees a vendor record except inside
``extensions`` and ``raw``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

__all__ = [
    "Annotation",
    "AnnotationWrite",
    "Annotator",
    "AnnotatorKind",
    "ProviderKind",
    "Queue",
    "Subject",
    "SubjectKind",
    "UtcDatetime",
    "format_utc",
    "to_utc",
]


class ProviderKind(StrEnum):
    """The vendors the gateway speaks to."""

    PHOENIX = "phoenix"
    DATADOG = "datadog"


class SubjectKind(StrEnum):
    """What an annotation is about."""

    SESSION = "session"
    TRACE = "trace"
    SPAN = "span"
    EXPERIMENT_TRACE = "experiment_trace"
    DISPLAY_BLOCK = "display_block"


class AnnotatorKind(StrEnum):
    """Who made the annotation: a person, an LLM judge, code, or unknown."""

    HUMAN = "HUMAN"
    LLM = "LLM"
    CODE = "CODE"
    UNKNOWN = "UNKNOWN"


def to_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive value is taken to be UTC."""
    tz = value.tzinfo
    if tz is UTC:  # the vendors' pages, decoded strictly: ~40 ns against ~150 for astimezone
        return value
    if tz is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """RFC 3339 UTC with ``Z``; microseconds only when the vendor had them."""
    return to_utc(value).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]
"""A datetime normalised to UTC. Pydantic serialises an aware UTC datetime as RFC 3339 with ``Z``
(microseconds only when non-zero), exactly :func:`format_utc`, so no custom serializer is needed —
one would cost ~60 % of an annotation's first serialisation (a Python call per timestamp)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Subject(_Frozen):
    """The thing annotated: a session, trace, span, experiment trace or display block."""

    kind: SubjectKind
    id: str
    project: str | None = Field(default=None, description="The Phoenix project; null for Datadog subjects.")


class Annotator(_Frozen):
    """Who made the annotation."""

    kind: AnnotatorKind
    id: str | None = None


class Queue(_Frozen):
    """A Datadog annotation queue."""

    id: str
    name: str | None = None


class Annotation(_Frozen):
    """One annotation in the gateway's canonical shape (SPEC §2)."""

    id: str = Field(
        description="Unique and stable: `{source}:{native id}` "
        "(Datadog: `{source}:{annotation id}:{label_schema_id}`)."
    )
    source: str = Field(description="The configured source name, e.g. `phoenix-prod`.")
    provider: ProviderKind
    subject: Subject
    name: str
    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    annotator: Annotator
    identifier: str = Field(default="", description='Phoenix\'s upsert identifier; `""` if none.')
    metadata: dict[str, Any] = Field(default_factory=dict)
    queue: Queue | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    extensions: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Vendor fields with no canonical home, under the provider's name.",
    )
    raw: dict[str, Any] | None = Field(
        default=None,
        description="The vendor record this came from; only with `include=raw`.",
        exclude_if=lambda value: value is None,
    )

    def without_raw(self) -> Annotation:
        """The same annotation with ``raw`` dropped (what callers get without ``include=raw``)."""
        return self if self.raw is None else self.model_copy(update={"raw": None})


class AnnotationWrite(BaseModel):
    """One annotation to create or update (upsert by name, subject and identifier)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    subject_id: str = Field(min_length=1, max_length=1024)
    subject_kind: SubjectKind = SubjectKind.SESSION
    name: str = Field(min_length=1, max_length=1024)
    annotator_kind: AnnotatorKind = AnnotatorKind.HUMAN
    label: str | None = None
    score: float | None = Field(default=None, allow_inf_nan=False)
    explanation: str | None = None
    identifier: str = Field(default="", max_length=1024)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_a_result(self) -> AnnotationWrite:
        if self.label is None and self.score is None and self.explanation is None:
            raise ValueError("at least one of label, score or explanation is required")
        return self
