"""Datadog's wire: the JSON:API shapes its LLM Observability API answers and takes, and how its
errors read.

Contract:

- Answers are validated strictly (``extra="allow"``, so fields this module does not know are
  kept for ``extensions.datadog``); a value of the wrong JSON type is refused, never coerced.
  The read page (the hot path) is decoded from its bytes in one of two ways: first into msgspec
  ``Struct`` interactions (:func:`strict_page`: the shape Datadog answers today, no field more,
  times as stdlib UTC datetimes); when that fails — a field this module does not know, or an
  answer that is wrong — through the TypedDicts below (:data:`PAGE`, pydantic, whose errors are
  the ones reported), and :func:`lenient_page` holds the result as the same Structs plus their
  :class:`InteractionExtras`. The queue API's answers are pydantic models. A page either way has
  every type :mod:`.mapping` needs.
- Request bodies the queue operations send are models too (:class:`LabelSchema`,
  :class:`LabelValueInput`, :class:`AnnotationUpsert`), following the OpenAPI fragment in
  ``tests/fixtures/contracts/datadog``.
- Datadog's errors are JSON:API ``{"errors": [...]}``: error objects (``title``, ``detail``,
  ``source.parameter``/``pointer``/``header``) or bare strings (``{"errors": ["Forbidden"]}``).
  :func:`error_summary` gives the sentence for a detail and the ``errors[]`` items (the toolkit's
  one shape, :func:`~annotation_gateway.providers.http.jsonapi_items`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, NotRequired

import httpx
import msgspec
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.base import unknown_fields
from annotation_gateway.providers.http import ErrorItem, body_summary, is_json, jsonapi_items
from annotation_gateway.providers.http.outcomes import clip

__all__ = [
    "ANNOTATION_FIELDS",
    "INTERACTIONS_RESPONSE",
    "INTERACTION_FIELDS",
    "JSONAPI_MEDIA_TYPE",
    "LABEL_SCHEMA_RESPONSE",
    "LABEL_VALUE_FIELDS",
    "PAGE",
    "QUEUE_CONTENTS",
    "QUEUE_LIST",
    "QUEUE_RESPONSE",
    "SUBJECT_KINDS",
    "UPSERT_RESPONSE",
    "AnnotationExtras",
    "AnnotationUpsert",
    "DatadogQueue",
    "InteractionExtras",
    "LabelSchema",
    "LabelValueInput",
    "PageAnnotation",
    "PageBody",
    "PageInteraction",
    "PageLabelValue",
    "QueueInteraction",
    "ReadPage",
    "StrictAnnotation",
    "StrictInteraction",
    "StrictLabelValue",
    "UpsertError",
    "UpsertResult",
    "UpsertedAnnotation",
    "WireLabelValue",
    "WireQueue",
    "WireQueueItem",
    "dump_label",
    "error_summary",
    "lenient_page",
    "queue_of",
    "strict_page",
]

JSONAPI_MEDIA_TYPE = "application/vnd.api+json"

SUBJECT_KINDS = frozenset(
    {SubjectKind.TRACE, SubjectKind.EXPERIMENT_TRACE, SubjectKind.SESSION, SubjectKind.DISPLAY_BLOCK}
)
"""The interaction types Datadog has."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


WireValue = StrictBool | StrictInt | StrictFloat | StrictStr | list[StrictStr] | None


class WireLabelValue(_Base):
    label_schema_id: StrictStr
    name_when_saved: StrictStr | None = None
    type: StrictStr | None = None
    value: WireValue = None
    assessment: StrictStr | None = None
    reasoning: StrictStr | None = None


# The read page (``GetLLMObsAnnotatedInteractionsByContent``) is the hot path: every annotation
# a miss, a scope page or an export reads comes through it. Its rows are TypedDicts validated in
# one pass from the answer's bytes (``validate_json``, strict, ``extra="allow"``: unknown fields
# stay in the dicts for ``extensions.datadog``). Measured on a 20-interaction page of 1,000 label
# values (the bench's shape), old and new alternated: BaseModel instances validated from
# ``orjson.loads`` output 3.8-4.5 ms, these TypedDicts from the bytes 1.9 ms.
_PAGE_ROW = ConfigDict(extra="allow", strict=True)


@with_config(_PAGE_ROW)
class PageLabelValue(TypedDict):
    """One label value of an annotation on the read page (``LLMObsAnnotationLabelValue``)."""

    label_schema_id: str
    name_when_saved: NotRequired[str | None]
    type: NotRequired[str | None]
    value: NotRequired[bool | int | float | str | list[str] | None]
    assessment: NotRequired[str | None]
    reasoning: NotRequired[str | None]


@with_config(_PAGE_ROW)
class PageAnnotation(TypedDict):
    """An annotation on the read page: ``label_values`` as Datadog sends them (an array) or in
    the legacy ``{label name: value}`` object form."""

    id: str
    interaction_id: str
    label_values: list[PageLabelValue] | dict[str, Any]
    created_by: str
    created_at: datetime
    modified_by: str
    modified_at: datetime


@with_config(_PAGE_ROW)
class PageInteraction(TypedDict):
    """An annotated interaction on the read page, with its annotations."""

    id: str
    type: Literal["trace", "experiment_trace", "session", "display_block"]
    content_id: str
    queue_id: str
    queue_name: str
    can_annotate: bool
    created_at: datetime
    modified_at: datetime
    display_block: NotRequired[list[Any] | None]
    annotations: list[PageAnnotation]


@with_config(_PAGE_ROW)
class _PageAttributes(TypedDict):
    total_count: int
    annotated_interactions: list[PageInteraction]


@with_config(_PAGE_ROW)
class _PageData(TypedDict):
    id: str
    type: Literal["annotated_interactions_by_trace"]
    attributes: _PageAttributes


@with_config(_PAGE_ROW)
class PageBody(TypedDict):
    data: _PageData


def _keys(row: type[Any]) -> frozenset[str]:
    return frozenset(row.__required_keys__ | row.__optional_keys__)


LABEL_VALUE_FIELDS = _keys(PageLabelValue)
ANNOTATION_FIELDS = _keys(PageAnnotation)
INTERACTION_FIELDS = _keys(PageInteraction)
"""The fields :mod:`.mapping` reads at each level; any other field is kept in extensions."""


InteractionType = Literal["trace", "experiment_trace", "session", "display_block"]


class StrictLabelValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The fast path's twin of :class:`PageLabelValue` (no field more).

    ``gc=False`` on every Struct of the page: decoded JSON holds no cycles, and a big search's
    pages of tracked objects made the cyclic collector a quarter of its samples."""

    label_schema_id: str
    name_when_saved: str | None = None
    type: str | None = None
    value: bool | int | float | str | list[str] | None = None
    assessment: str | None = None
    reasoning: str | None = None


class StrictAnnotation(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The fast path's twin of :class:`PageAnnotation`."""

    id: str
    interaction_id: str
    label_values: list[StrictLabelValue] | dict[str, Any]
    created_by: str
    created_at: datetime
    modified_by: str
    modified_at: datetime


class StrictInteraction(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    """The fast path's twin of :class:`PageInteraction`."""

    id: str
    type: InteractionType
    content_id: str
    queue_id: str
    queue_name: str
    can_annotate: bool
    created_at: datetime
    modified_at: datetime
    display_block: list[Any] | None = None
    annotations: list[StrictAnnotation]


class _StrictAttributes(msgspec.Struct, gc=False):
    total_count: int
    annotated_interactions: list[StrictInteraction]


class _StrictData(msgspec.Struct, gc=False):
    id: str
    type: Literal["annotated_interactions_by_trace"]
    attributes: _StrictAttributes


class _StrictPage(msgspec.Struct, gc=False):
    data: _StrictData


_STRICT_PAGE = msgspec.json.Decoder(_StrictPage)


class AnnotationExtras(NamedTuple):
    """The fields of one annotation this module does not know: its own, and each label value's
    (by index, in the array form)."""

    annotation: dict[str, Any] | None
    label_values: tuple[dict[str, Any] | None, ...]


class InteractionExtras(NamedTuple):
    """The fields of one interaction this module does not know, and its annotations' (by index;
    ``None`` for an annotation without any)."""

    interaction: dict[str, Any] | None
    annotations: tuple[AnnotationExtras | None, ...]


class ReadPage(NamedTuple):
    """A read page: the interactions, and (from :func:`lenient_page` only) their extras."""

    total: int
    interactions: list[StrictInteraction]
    extras: list[InteractionExtras | None] | None


def strict_page(content: bytes) -> ReadPage | None:
    """The page in exactly the shape Datadog answers today, decoded from its bytes; ``None``
    when it is anything else (the caller then decodes it through :data:`PAGE`)."""
    try:
        attributes = _STRICT_PAGE.decode(content).data.attributes
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return ReadPage(attributes.total_count, attributes.annotated_interactions, None)


def _known(row: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k in fields}


def lenient_page(body: PageBody) -> ReadPage:
    """A page :data:`PAGE` validated, held as the strict Structs plus the fields this module
    does not know (at each level; kept in ``extensions.datadog`` by the mapping)."""
    attributes = body["data"]["attributes"]
    interactions: list[StrictInteraction] = []
    extras: list[InteractionExtras | None] = []
    for interaction in attributes["annotated_interactions"]:
        annotations: list[dict[str, Any]] = []
        annotation_extras: list[AnnotationExtras | None] = []
        for annotation in interaction["annotations"]:
            values: Any = annotation["label_values"]
            value_extras: tuple[dict[str, Any] | None, ...] = ()
            if isinstance(values, list):
                value_extras = tuple(unknown_fields(v, LABEL_VALUE_FIELDS) for v in values)
                values = [_known(v, LABEL_VALUE_FIELDS) for v in values]
            extra = unknown_fields(annotation, ANNOTATION_FIELDS)
            annotations.append({**_known(annotation, ANNOTATION_FIELDS), "label_values": values})
            annotation_extras.append(
                None if extra is None and not any(value_extras) else AnnotationExtras(extra, value_extras)
            )
        fields = {**_known(interaction, INTERACTION_FIELDS), "annotations": annotations}
        interactions.append(msgspec.convert(fields, StrictInteraction))
        extra = unknown_fields(interaction, INTERACTION_FIELDS)
        extras.append(
            None
            if extra is None and not any(annotation_extras)
            else InteractionExtras(extra, tuple(annotation_extras))
        )
    return ReadPage(attributes["total_count"], interactions, extras)


class LabelSchema(BaseModel):
    """One label of a queue's label schema (``LLMObsLabelSchema``), as sent and as answered."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: StrictStr
    type: Literal["score", "categorical", "boolean", "text"]
    id: StrictStr | None = None
    description: StrictStr | None = None
    min: float | None = None
    max: float | None = None
    is_integer: StrictBool | None = None
    values: list[StrictStr] | None = None
    is_required: StrictBool | None = None
    has_assessment: StrictBool | None = None
    has_reasoning: StrictBool | None = None
    is_assessment: StrictBool | None = None


class WireAnnotationSchema(_Base):
    label_schemas: list[LabelSchema]


class WireLabelSchemaAttributes(_Base):
    annotation_schema: WireAnnotationSchema


class WireLabelSchemaData(_Base):
    id: StrictStr
    type: Literal["queues"]
    attributes: WireLabelSchemaAttributes


class WireLabelSchemaResponse(_Base):
    data: WireLabelSchemaData


class WireQueueAttributes(_Base):
    name: StrictStr
    project_id: StrictStr
    description: StrictStr
    created_by: StrictStr
    created_at: datetime
    modified_by: StrictStr
    modified_at: datetime
    owned_by: StrictStr
    annotation_schema: WireAnnotationSchema | None = None


class WireQueue(_Base):
    id: StrictStr
    type: Literal["queues"]
    attributes: WireQueueAttributes


class WireQueueResponse(_Base):
    data: WireQueue


class WireQueueList(_Base):
    data: list[WireQueue]


class QueueInteraction(_Base):
    """An interaction added to a queue (``LLMObsTraceInteractionResponseItem``)."""

    id: StrictStr
    type: Literal["trace", "experiment_trace", "session", "display_block"]
    content_id: StrictStr
    already_existed: StrictBool


class WireQueueItem(_Base):
    """An interaction of a queue read whole (``GetLLMObsAnnotatedInteractions``); discovery
    reads only what it is about."""

    content_id: StrictStr
    type: Literal["trace", "experiment_trace", "session", "display_block"]


class WireQueueContentsAttributes(_Base):
    annotated_interactions: list[WireQueueItem]


class WireQueueContentsData(_Base):
    id: StrictStr
    type: Literal["annotated_interactions"]
    attributes: WireQueueContentsAttributes


class WireQueueContents(_Base):
    data: WireQueueContentsData


class WireInteractionsAttributes(_Base):
    interactions: list[QueueInteraction]


class WireInteractionsData(_Base):
    id: StrictStr
    type: Literal["interactions"]
    attributes: WireInteractionsAttributes


class WireInteractionsResponse(_Base):
    data: WireInteractionsData


class UpsertedAnnotation(_Base):
    """An annotation as the upsert answers it (``LLMObsAnnotationItemResponse``)."""

    id: StrictStr
    interaction_id: StrictStr
    label_values: list[WireLabelValue]
    created_by: StrictStr
    created_at: datetime
    modified_by: StrictStr
    modified_at: datetime


class UpsertError(_Base):
    """A per-item failure of an upsert batch (``LLMObsAnnotationError``)."""

    interaction_id: StrictStr
    error: StrictStr
    code: StrictStr | None = None
    annotation_id: StrictStr | None = None


class UpsertResult(_Base):
    annotations: list[UpsertedAnnotation]
    errors: list[UpsertError] = Field(default_factory=list)


class WireUpsertData(_Base):
    id: StrictStr
    type: Literal["annotations"]
    attributes: UpsertResult


class WireUpsertResponse(_Base):
    data: WireUpsertData


@dataclass(frozen=True, slots=True)
class DatadogQueue:
    """An annotation queue (``LLMObsAnnotationQueueDataResponse``), with its labels when sent."""

    id: str
    name: str
    project_id: str
    description: str
    created_by: str
    created_at: datetime
    label_schemas: tuple[LabelSchema, ...]
    raw: Mapping[str, Any]


class LabelValueInput(BaseModel):
    """One value to write (``LLMObsAnnotationLabelValue``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_schema_id: str = Field(min_length=1)
    value: StrictBool | StrictInt | StrictFloat | StrictStr | list[StrictStr]
    assessment: Literal["pass", "fail"] | None = None
    reasoning: str | None = None


class AnnotationUpsert(BaseModel):
    """The requesting user's annotation of one interaction (``LLMObsUpsertAnnotationItem``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interaction_id: str = Field(min_length=1)
    label_values: list[LabelValueInput] = Field(min_length=1)


PAGE = TypeAdapter(PageBody)
LABEL_SCHEMA_RESPONSE = TypeAdapter(WireLabelSchemaResponse)
QUEUE_RESPONSE = TypeAdapter(WireQueueResponse)
QUEUE_LIST = TypeAdapter(WireQueueList)
INTERACTIONS_RESPONSE = TypeAdapter(WireInteractionsResponse)
QUEUE_CONTENTS = TypeAdapter(WireQueueContents)
UPSERT_RESPONSE = TypeAdapter(WireUpsertResponse)


def queue_of(queue: WireQueue, raw: Mapping[str, Any]) -> DatadogQueue:
    schema = queue.attributes.annotation_schema
    return DatadogQueue(
        id=queue.id,
        name=queue.attributes.name,
        project_id=queue.attributes.project_id,
        description=queue.attributes.description,
        created_by=queue.attributes.created_by,
        created_at=queue.attributes.created_at,
        label_schemas=tuple(schema.label_schemas) if schema else (),
        raw=raw,
    )


def dump_label(label: LabelSchema) -> dict[str, Any]:
    return label.model_dump(mode="json", exclude_none=True)


# --- Datadog's errors -----------------------------------------------------------------------


def error_summary(response: httpx.Response) -> tuple[str, list[ErrorItem]]:
    """A short safe summary of an error answer, and its JSON:API errors as ``errors[]`` items."""
    if not response.content.strip() or not is_json(response):
        return body_summary(response), []
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return "malformed JSON error body", []
    raw_errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(raw_errors, list) or not raw_errors:
        return body_summary(response), []
    texts: list[str] = []
    for raw in raw_errors:
        if isinstance(raw, str):
            texts.append(raw)
        elif isinstance(raw, dict):
            title, detail = raw.get("title"), raw.get("detail")
            found = raw.get("source")
            where: dict[str, Any] = found if isinstance(found, dict) else {}
            text = ": ".join(str(t) for t in (title, detail) if t) or str(raw)
            for key in ("parameter", "pointer", "header"):
                if isinstance(where.get(key), str):
                    text += f" ({key} {where[key]})"
            texts.append(text)
    return clip("; ".join(texts)), jsonapi_items(body, response.status_code)
