"""Datadog LLM Observability provider: annotated interactions over Datadog's REST API.

Contract (see :mod:`annotation_gateway.providers.base`): :meth:`DatadogProvider.fetch` returns
every annotation of the queried content ids — each exactly once — as canonical annotations, or
raises a :class:`~annotation_gateway.errors.SourceError`. Everything Datadog-specific lives here.

Reading: ``GET {base}/api/v2/llm-obs/v1/annotated-interactions?contentIds=a&contentIds=b
&offset=0&limit=N`` (``contentIds`` repeated, never comma-joined: a comma is part of an id) with
``DD-API-KEY``/``DD-APPLICATION-KEY``. Ids are de-duplicated and chunked so each URL stays within
:data:`MAX_URL_BYTES`; chunks and pages are fetched concurrently under one semaphore of
``max_concurrency``. Paging is offset/limit over *interactions* until ``total_count`` is reached or
a page comes back empty; interactions and annotations are de-duplicated across pages. Datadog
pushes down only the content ids; kinds, names and identifiers are filtered here (Datadog has no
identifier: it is always ``""``).

Normalization (SPEC §2): one canonical annotation per non-empty label value, id
``{source}:{annotation id}:{label_schema_id}``; name = ``name_when_saved``, else the queue's label
schema (``GET .../annotation-queues/{queue_id}/label-schema``, cached per queue for the
provider's life), else the ``label_schema_id``. See :func:`map_label_value` for the value table.
``label_values`` may come as the array Datadog sends or the legacy ``{label name: value}``
object. Zero-time (``0001-01-01T00:00:00Z``) annotation timestamps fall back to the
interaction's. Nothing Datadog sends is dropped silently (SPEC §2): fields this module does not
know are kept in ``extensions.datadog`` under ``interaction``, ``annotation`` and ``label_value``,
by the level of the answer they came on.

Errors: every answer is classified by status and content type before a success is parsed.
401/403 → :class:`SourceAuthError`; 400 → :class:`SourceRequestError` with Datadog's ``detail``
and ``source.parameter``/``pointer`` in ``errors``; 404 → :class:`SourceNotFoundError`; 429 →
:class:`SourceRateLimitedError` (``retry_after`` from ``X-RateLimit-Reset`` or ``Retry-After``);
5xx, connect errors and timeouts → retryable; HTML, empty or malformed bodies, missing fields and
wrong types → :class:`SourceProtocolError` naming the field. Keys never appear in an error or log.

Writing: Datadog is read-only for the gateway's ``POST /v1/annotations`` (:meth:`write` raises
``UnsupportedError``); the queue operations (:meth:`list_queues`, :meth:`create_queue`,
:meth:`get_label_schema`, :meth:`replace_label_schema`, :meth:`add_interactions`,
:meth:`upsert_annotations`, :meth:`delete_queue`) follow the OpenAPI fragment's paths and bodies,
for tools such as ``migrate``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from annotation_gateway.concurrency import gather
from annotation_gateway.errors import (
    GatewayError,
    PayloadTooLargeError,
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceRequestError,
    SourceUnavailableError,
    UnsupportedError,
)
from annotation_gateway.model import (
    Annotation,
    AnnotationWrite,
    AnnotatorKind,
    ProviderKind,
    SubjectKind,
    build_annotation,
    build_annotator,
    build_queue,
    build_subject,
)
from annotation_gateway.providers.base import Capabilities, HealthReport, SourceQuery, WriteResult
from annotation_gateway.providers.config import BaseSourceConfig, ConfigError, read_secret
from annotation_gateway.providers.http import (
    RetryPolicy,
    chunk_values,
    get_request,
    is_json,
    make_client,
    parse_json,
    send,
    send_idempotent,
)

__all__ = [
    "DATADOG_SITES",
    "MAX_URL_BYTES",
    "AnnotationUpsert",
    "DatadogProvider",
    "DatadogQueue",
    "DatadogSourceConfig",
    "LabelSchema",
    "LabelValueInput",
    "QueueInteraction",
    "UpsertError",
    "UpsertResult",
    "UpsertedAnnotation",
    "map_label_value",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DATADOG_SITES: dict[str, str] = {
    site: f"https://api.{site}"
    for site in (
        "datadoghq.com",
        "us3.datadoghq.com",
        "us5.datadoghq.com",
        "ap1.datadoghq.com",
        "ap2.datadoghq.com",
        "uk1.datadoghq.com",
        "datadoghq.eu",
        "ddog-gov.com",
        "us2.ddog-gov.com",
    )
}

API_PREFIX = "/api/v2/llm-obs/v1"
ANNOTATED_INTERACTIONS_PATH = f"{API_PREFIX}/annotated-interactions"
QUEUES_PATH = f"{API_PREFIX}/annotation-queues"
JSONAPI_MEDIA_TYPE = "application/vnd.api+json"

MAX_URL_BYTES = 8 * 1024
"""Longest URL sent: proxies and load balancers in front of APIs commonly stop at 8 KiB."""

HEALTH_PROBE_CONTENT_ID = "annotation-gateway-health-probe"
"""A content id no one uses: the probe is an authenticated read that matches nothing."""

ERROR_TEXT_LIMIT = 300
"""Vendor error text kept in a detail, so a huge HTML page cannot flood a log line."""

SUBJECT_KINDS = frozenset(
    {SubjectKind.TRACE, SubjectKind.EXPERIMENT_TRACE, SubjectKind.SESSION, SubjectKind.DISPLAY_BLOCK}
)


class DatadogSourceConfig(BaseSourceConfig):
    """A Datadog organisation's LLM Observability annotations, by site or explicit base URL."""

    provider: Literal["datadog"] = "datadog"
    site: str | None = Field(default=None, description="Datadog site, e.g. datadoghq.com")
    base_url: HttpUrl | None = Field(
        default=None, description="Explicit API base URL (a local simulator); overrides site."
    )
    api_key_env: str = Field(description="Environment variable holding DD-API-KEY.")
    app_key_env: str = Field(description="Environment variable holding DD-APPLICATION-KEY.")
    page_size: int = Field(default=100, ge=1, le=1000, description="Interactions per page.")

    @model_validator(mode="after")
    def _site_or_base_url(self) -> DatadogSourceConfig:
        if self.base_url is None and self.site is None:
            raise ValueError("give either site or base_url")
        if self.site is not None and self.site not in DATADOG_SITES:
            raise ValueError(f"unknown site {self.site!r}; one of {', '.join(DATADOG_SITES)}")
        return self

    @property
    def api_base_url(self) -> str:
        if self.base_url is not None:
            return str(self.base_url).rstrip("/")
        assert self.site is not None
        return DATADOG_SITES[self.site]


# --- the wire shape (validated with pydantic; extra fields kept for `raw`) ----------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


WireValue = StrictBool | StrictInt | StrictFloat | StrictStr | list[StrictStr] | None


class _WireLabelValue(_Wire):
    label_schema_id: StrictStr
    name_when_saved: StrictStr | None = None
    type: StrictStr | None = None
    value: WireValue = None
    assessment: StrictStr | None = None
    reasoning: StrictStr | None = None


class _WireAnnotation(_Wire):
    id: StrictStr
    interaction_id: StrictStr
    label_values: list[_WireLabelValue] | dict[StrictStr, Any]
    created_by: StrictStr
    created_at: datetime
    modified_by: StrictStr
    modified_at: datetime


class _WireInteraction(_Wire):
    id: StrictStr
    type: Literal["trace", "experiment_trace", "session", "display_block"]
    content_id: StrictStr
    queue_id: StrictStr
    queue_name: StrictStr
    can_annotate: StrictBool
    created_at: datetime
    modified_at: datetime
    display_block: list[Any] | None = None
    annotations: list[_WireAnnotation]


class _WirePageAttributes(_Wire):
    total_count: StrictInt
    annotated_interactions: list[_WireInteraction]


class _WirePageData(_Wire):
    id: StrictStr
    type: Literal["annotated_interactions_by_trace"]
    attributes: _WirePageAttributes


class _WirePage(_Wire):
    data: _WirePageData


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


class _WireAnnotationSchema(_Wire):
    label_schemas: list[LabelSchema]


class _WireLabelSchemaAttributes(_Wire):
    annotation_schema: _WireAnnotationSchema


class _WireLabelSchemaData(_Wire):
    id: StrictStr
    type: Literal["queues"]
    attributes: _WireLabelSchemaAttributes


class _WireLabelSchemaResponse(_Wire):
    data: _WireLabelSchemaData


class _WireQueueAttributes(_Wire):
    name: StrictStr
    project_id: StrictStr
    description: StrictStr
    created_by: StrictStr
    created_at: datetime
    modified_by: StrictStr
    modified_at: datetime
    owned_by: StrictStr
    annotation_schema: _WireAnnotationSchema | None = None


class _WireQueue(_Wire):
    id: StrictStr
    type: Literal["queues"]
    attributes: _WireQueueAttributes


class _WireQueueResponse(_Wire):
    data: _WireQueue


class _WireQueueList(_Wire):
    data: list[_WireQueue]


class QueueInteraction(_Wire):
    """An interaction added to a queue (``LLMObsTraceInteractionResponseItem``)."""

    id: StrictStr
    type: Literal["trace", "experiment_trace", "session", "display_block"]
    content_id: StrictStr
    already_existed: StrictBool


class _WireInteractionsAttributes(_Wire):
    interactions: list[QueueInteraction]


class _WireInteractionsData(_Wire):
    id: StrictStr
    type: Literal["interactions"]
    attributes: _WireInteractionsAttributes


class _WireInteractionsResponse(_Wire):
    data: _WireInteractionsData


class UpsertedAnnotation(_Wire):
    """An annotation as the upsert answers it (``LLMObsAnnotationItemResponse``)."""

    id: StrictStr
    interaction_id: StrictStr
    label_values: list[_WireLabelValue]
    created_by: StrictStr
    created_at: datetime
    modified_by: StrictStr
    modified_at: datetime


class UpsertError(_Wire):
    """A per-item failure of an upsert batch (``LLMObsAnnotationError``)."""

    interaction_id: StrictStr
    error: StrictStr
    code: StrictStr | None = None
    annotation_id: StrictStr | None = None


class UpsertResult(_Wire):
    annotations: list[UpsertedAnnotation]
    errors: list[UpsertError] = Field(default_factory=list)


class _WireUpsertData(_Wire):
    id: StrictStr
    type: Literal["annotations"]
    attributes: UpsertResult


class _WireUpsertResponse(_Wire):
    data: _WireUpsertData


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


_PAGE = TypeAdapter(_WirePage)
_LABEL_SCHEMA_RESPONSE = TypeAdapter(_WireLabelSchemaResponse)
_QUEUE_RESPONSE = TypeAdapter(_WireQueueResponse)
_QUEUE_LIST = TypeAdapter(_WireQueueList)
_INTERACTIONS_RESPONSE = TypeAdapter(_WireInteractionsResponse)
_UPSERT_RESPONSE = TypeAdapter(_WireUpsertResponse)


# --- normalization ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _QueueLabels:
    """A queue's label schema, indexed for name and type resolution."""

    by_id: Mapping[str, LabelSchema]
    by_name: Mapping[str, LabelSchema]

    @classmethod
    def of(cls, labels: Iterable[LabelSchema]) -> _QueueLabels:
        labels = list(labels)
        return cls(
            by_id={label.id: label for label in labels if label.id},
            by_name={label.name: label for label in labels},
        )


NO_LABELS = _QueueLabels(by_id={}, by_name={})


@dataclass(frozen=True, slots=True)
class MappedValue:
    """Where one Datadog label value lands in the canonical model."""

    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    values: list[str] | None = None
    """The categorical choices, in order (kept in ``extensions.datadog.values``)."""


class _ValueError(Exception):
    """A label value of the wrong type; the caller names the field."""


def _is_unset(value: Any) -> bool:
    return value is None or value == "" or value == []


def infer_label_type(value: Any) -> str:
    """The label type a value implies when neither the answer nor the schema says.

    A bare string is taken as a categorical choice: Datadog's own example (``"value": "good"``)
    is one, and a label compares like a category while an explanation does not.
    """
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "score"
    return "categorical"


def map_label_value(label_type: str, value: Any, reasoning: str | None) -> MappedValue | None:
    """Map one Datadog label value onto canonical fields; None when the value is unset.

    =============  ==========================================================================
    score          ``score`` = value; ``explanation`` = reasoning
    boolean        ``label`` = "true"/"false", ``score`` = 1.0/0.0; ``explanation`` = reasoning
    categorical    ``label`` = the choices joined with ", " (in order), ``values`` = the list;
                   ``explanation`` = reasoning
    text           ``explanation`` = value (reasoning is kept in extensions by the caller)
    =============  ==========================================================================

    Raises ``_ValueError`` for a value of the wrong type for its label.
    """
    if _is_unset(value):
        return None
    why = reasoning or None
    if label_type == "score":
        if isinstance(value, bool):
            raise _ValueError("expected a number for a score label")
        if isinstance(value, int | float):
            return MappedValue(score=float(value), explanation=why)
        if isinstance(value, str):
            try:
                return MappedValue(score=float(value), explanation=why)
            except ValueError:
                pass
        raise _ValueError("expected a number for a score label")
    if label_type == "boolean":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise _ValueError("expected true or false for a boolean label")
        return MappedValue(label="true" if value else "false", score=1.0 if value else 0.0, explanation=why)
    if label_type == "categorical":
        choices = [value] if isinstance(value, str) else value
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise _ValueError("expected a string or a list of strings for a categorical label")
        choices = [c for c in choices if c]
        if not choices:
            return None
        return MappedValue(label=", ".join(choices), values=choices, explanation=why)
    if label_type == "text":
        if not isinstance(value, str):
            raise _ValueError("expected a string for a text label")
        return MappedValue(explanation=value)
    raise _ValueError(f"unknown label type {label_type!r}")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One label value, whichever form ``label_values`` came in."""

    label_schema_id: str
    name: str | None
    type: str | None
    value: Any
    assessment: str | None
    reasoning: str | None
    field: str
    extra: Mapping[str, Any]
    """Fields of the label value this module does not know (kept in extensions)."""


_KNOWN_LEGACY_VALUE_FIELDS = frozenset({"value", "assessment", "reasoning"})


def _entries(annotation: _WireAnnotation, labels: _QueueLabels, field: str) -> Iterator[_Entry]:
    if isinstance(annotation.label_values, list):
        for index, item in enumerate(annotation.label_values):
            yield _Entry(
                label_schema_id=item.label_schema_id,
                name=item.name_when_saved or None,
                type=item.type or None,
                value=item.value,
                assessment=item.assessment or None,
                reasoning=item.reasoning,
                field=f"{field}.label_values.{index}",
                extra=item.model_extra or {},
            )
        return
    # Legacy object form {label name: value}: the schema gives the id and the type back.
    for name, value in annotation.label_values.items():
        where = f"{field}.label_values.{name}"
        label = labels.by_name.get(name)
        assessment = reasoning = None
        extra: dict[str, Any] = {}
        if isinstance(value, dict):
            if "value" not in value:
                raise _ValueError(f"{where}: expected a value")
            assessment, reasoning = value.get("assessment"), value.get("reasoning")
            extra = {k: v for k, v in value.items() if k not in _KNOWN_LEGACY_VALUE_FIELDS}
            value = value["value"]
        yield _Entry(
            label_schema_id=label.id if label and label.id else name,
            name=name,
            type=label.type if label else None,
            value=value,
            assessment=assessment if isinstance(assessment, str) else None,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            field=where,
            extra=extra,
        )


def _needs_schema(annotation: _WireAnnotation) -> bool:
    if isinstance(annotation.label_values, dict):
        return bool(annotation.label_values)
    return any(not v.name_when_saved or not v.type for v in annotation.label_values)


def _is_zero_time(value: datetime) -> bool:
    return value.year <= 1


def _without_annotations(raw_interaction: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw_interaction.items() if k != "annotations"}


# --- errors -----------------------------------------------------------------------------------


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


def describe_error_body(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    """A short safe summary of an error answer, and its JSON:API items as problem ``errors``."""
    if not response.content.strip():
        return "empty body", []
    if not is_json(response):
        ctype = response.headers.get("content-type", "no content type").split(";", 1)[0]
        kind = "an HTML page" if "html" in ctype else f"a {ctype} body"
        return kind, []
    try:
        body = response.json()
    except ValueError:
        return "malformed JSON error body", []
    raw_errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(raw_errors, list) or not raw_errors:
        return _clip(str(body)), []
    texts: list[str] = []
    items: list[dict[str, Any]] = []
    for raw in raw_errors:
        if isinstance(raw, str):
            texts.append(raw)
            items.append({"detail": _clip(raw)})
        elif isinstance(raw, dict):
            title, detail = raw.get("title"), raw.get("detail")
            found = raw.get("source")
            source: dict[str, Any] = found if isinstance(found, dict) else {}
            text = ": ".join(str(t) for t in (title, detail) if t) or str(raw)
            item: dict[str, Any] = {"detail": _clip(str(detail or title or raw))}
            for key in ("parameter", "pointer", "header"):
                if isinstance(source.get(key), str):
                    item[key] = source[key]
                    text += f" ({key} {source[key]})"
            texts.append(text)
            items.append(item)
    return _clip("; ".join(texts)), items


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The wait a 429 asks for: ``X-RateLimit-Reset`` (seconds) or ``Retry-After``."""
    for name in ("x-ratelimit-reset", "retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _validation_problem(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    problems = exc.errors(include_url=False, include_input=False)
    items = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "detail": e["msg"]} for e in problems[:5]
    ]
    summary = "; ".join(f"{i['field']}: {i['detail']}" for i in items[:3])
    return summary, items


# --- the provider -----------------------------------------------------------------------------


class DatadogProvider:
    """One Datadog organisation (site + keys) behind one shared connection pool."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: SecretStr,
        app_key: SecretStr,
        page_size: int = 100,
        max_concurrency: int = 16,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._name = name
        self._page_size = page_size
        self._retry = retry or RetryPolicy()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._client = make_client(
            base_url,
            headers={
                "DD-API-KEY": api_key.get_secret_value(),
                "DD-APPLICATION-KEY": app_key.get_secret_value(),
                "Accept": JSONAPI_MEDIA_TYPE,
            },
            timeout_s=timeout_s,
            max_connections=max_concurrency,
            transport=transport,
        )
        self._labels: dict[str, _QueueLabels] = {}
        self._label_locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_config(
        cls,
        config: DatadogSourceConfig,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> DatadogProvider:
        """A provider for ``config``; the keys are read from the variables the config names."""
        api_key = read_secret(config.api_key_env, key=f"sources.{config.name}.api_key_env", environ=environ)
        app_key = read_secret(config.app_key_env, key=f"sources.{config.name}.app_key_env", environ=environ)
        if api_key is None or app_key is None:  # pragma: no cover - both env names are required fields
            raise ConfigError(f"sources.{config.name}: api_key_env and app_key_env are required")
        return cls(
            name=config.name,
            base_url=config.api_base_url,
            api_key=api_key,
            app_key=app_key,
            page_size=config.page_size,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            retry=RetryPolicy(attempts=config.retry_attempts, max_retry_after_s=config.max_retry_after_s),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"DatadogProvider(name={self._name!r}, base_url={str(self._client.base_url)!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> ProviderKind:
        return ProviderKind.DATADOG

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            subject_kinds=SUBJECT_KINDS,
            pushdown=frozenset({"subject_ids"}),
            needs_subject_ids=True,
            # Datadog annotations are people's reviews in queues (SPEC §2: annotator HUMAN) and
            # belong to no Phoenix-style project.
            has_projects=False,
            annotator_kinds=frozenset({AnnotatorKind.HUMAN}),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- reading ---

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        """Every annotation on the query's content ids, each once (see the module docstring)."""
        if not query.subject_ids:
            raise UnsupportedError(f"{self._name}: Datadog can only be queried by subject (content) ids")
        if query.identifiers and "" not in query.identifiers:
            return []  # Datadog annotations have no identifier: "" is the only one that matches.
        if query.subject_kinds and not SUBJECT_KINDS.intersection(query.subject_kinds):
            return []
        # A blank content id matches nothing, and Datadog answers 400 to a request whose ids are
        # all blank: a stray "" in a long id list must not fail the whole source.
        content_ids = [c for c in dict.fromkeys(query.subject_ids) if c.strip()]
        if not content_ids:
            return []
        chunks = self._chunk(content_ids)
        pages = await gather([self._fetch_chunk(chunk) for chunk in chunks], prefer=SourceError)
        interactions: dict[str, tuple[_WireInteraction, Mapping[str, Any]]] = {}
        for chunk_items in pages:
            for interaction, raw in chunk_items:
                interactions.setdefault(interaction.id, (interaction, raw))
        wanted_kinds = {k.value for k in query.subject_kinds}
        selected = [
            (i, raw) for i, raw in interactions.values() if not wanted_kinds or i.type in wanted_kinds
        ]
        need_labels = {i.queue_id for i, _ in selected if any(_needs_schema(a) for a in i.annotations)}
        await gather([self._queue_labels(queue_id) for queue_id in sorted(need_labels)], prefer=SourceError)
        names = set(query.names)
        excluded = set(query.exclude_names)
        found: dict[str, Annotation] = {}
        for interaction, raw in selected:
            for annotation in self._normalize(interaction, raw, include_raw=query.include_raw):
                if names and annotation.name not in names:
                    continue
                if annotation.name in excluded:
                    continue
                found.setdefault(annotation.id, annotation)
        log.debug(
            "datadog fetch",
            extra={
                "source": self._name,
                "chunks": len(chunks),
                "interactions": len(interactions),
                "annotations": len(found),
            },
        )
        return list(found.values())

    def _chunk(self, content_ids: Sequence[str]) -> list[list[str]]:
        """Split ids so that every page URL stays within MAX_URL_BYTES."""
        fixed = len(str(self._client.base_url).rstrip("/")) + len(ANNOTATED_INTERACTIONS_PATH) + 1
        fixed += (
            len(str(httpx.QueryParams([("offset", str(2**31 - 1)), ("limit", str(self._page_size))]))) + 1
        )
        costs = [len(str(httpx.QueryParams([("contentIds", c)]))) + 1 for c in content_ids]
        room = MAX_URL_BYTES - fixed
        too_long = next((c for c, cost in zip(content_ids, costs, strict=True) if cost > room), None)
        if too_long is not None:
            # No URL can carry it: the caller's input is too large, not the vendor at fault.
            raise PayloadTooLargeError(
                f"a subject id of {len(too_long)} characters does not fit in one Datadog URL "
                f"({MAX_URL_BYTES} bytes)"
            )
        return chunk_values(content_ids, costs, budget=room)

    async def _fetch_chunk(
        self, content_ids: Sequence[str]
    ) -> list[tuple[_WireInteraction, Mapping[str, Any]]]:
        """All pages of one chunk: the first, then the rest concurrently, then any tail."""
        first = await self._page(content_ids, 0)
        items = list(first.items)
        total = first.total
        if not first.items or len(first.items) >= total:
            return items
        # The first page shows the server's real page size (it may cap our limit).
        step = len(first.items)
        rest = await gather(
            [self._page(content_ids, offset) for offset in range(step, total, step)], prefer=SourceError
        )
        covered = step
        for page in rest:
            items.extend(page.items)
            total = max(total, page.total)
            if page.offset <= covered:
                covered = max(covered, page.offset + len(page.items))
        # A short or empty page in the middle, or a total that grew: continue one page at a time.
        while covered < total:
            page = await self._page(content_ids, covered)
            if not page.items:
                break
            items.extend(page.items)
            covered += len(page.items)
            total = page.total
        return items

    async def _page(self, content_ids: Sequence[str], offset: int) -> _Page:
        params: list[tuple[str, str | int | float | bool | None]] = [("contentIds", c) for c in content_ids]
        params += [("offset", offset), ("limit", self._page_size)]

        def build() -> httpx.Request:
            return get_request(self._client, ANNOTATED_INTERACTIONS_PATH, params)

        def classify(response: httpx.Response) -> _Page:
            body = self._success_body(response, where=f"GET {ANNOTATED_INTERACTIONS_PATH}")
            page = self._validate(_PAGE, body, where=f"GET {ANNOTATED_INTERACTIONS_PATH}")
            raw_items = body["data"]["attributes"]["annotated_interactions"]
            pairs = list(zip(page.data.attributes.annotated_interactions, raw_items, strict=True))
            return _Page(offset=offset, total=page.data.attributes.total_count, items=pairs)

        async with self._semaphore:
            return await send_idempotent(self._client, build, classify, source=self._name, policy=self._retry)

    async def _queue_labels(self, queue_id: str) -> _QueueLabels:
        """The queue's label schema, fetched once per provider life (single flight per queue)."""
        cached = self._labels.get(queue_id)
        if cached is not None:
            return cached
        lock = self._label_locks.setdefault(queue_id, asyncio.Lock())
        async with lock:
            cached = self._labels.get(queue_id)
            if cached is not None:
                return cached
            try:
                labels = _QueueLabels.of(await self.get_label_schema(queue_id))
            except SourceNotFoundError:
                # A deleted queue still has annotations on record: fall back to schema ids.
                labels = NO_LABELS
                self._labels[queue_id] = labels
            return labels

    def _normalize(
        self, interaction: _WireInteraction, raw: Mapping[str, Any], *, include_raw: bool
    ) -> Iterator[Annotation]:
        labels = self._labels.get(interaction.queue_id, NO_LABELS)
        # Built without validation: the wire models are strict, so every value below already has
        # the canonical type (build_annotation makes the timestamps UTC).
        subject = build_subject(SubjectKind(interaction.type), interaction.content_id, None)
        queue = build_queue(interaction.queue_id, interaction.queue_name or None)
        raw_interaction = _without_annotations(raw) if include_raw else None
        interaction_extra = interaction.model_extra or {}
        for index, annotation in enumerate(interaction.annotations):
            field = f"annotated_interactions[{interaction.id}].annotations.{index}"
            created = (
                interaction.created_at if _is_zero_time(annotation.created_at) else annotation.created_at
            )
            updated = (
                interaction.modified_at if _is_zero_time(annotation.modified_at) else annotation.modified_at
            )
            raw_annotation = raw["annotations"][index] if include_raw else None
            try:
                entries = list(_entries(annotation, labels, field))
            except _ValueError as exc:
                raise SourceProtocolError(f"{self._name}: {exc}", source=self._name) from None
            for entry in entries:
                label = labels.by_id.get(entry.label_schema_id) or (
                    labels.by_name.get(entry.name) if entry.name else None
                )
                name = entry.name or (label.name if label else None) or entry.label_schema_id
                label_type = entry.type or (label.type if label else None)
                inferred = label_type is None
                label_type = label_type or infer_label_type(entry.value)
                try:
                    mapped = map_label_value(label_type, entry.value, entry.reasoning)
                except _ValueError as exc:
                    raise SourceProtocolError(
                        f"{self._name}: {entry.field}.value: {exc}", source=self._name
                    ) from None
                if mapped is None:
                    continue
                datadog: dict[str, Any] = {
                    "interaction_id": interaction.id,
                    "annotation_id": annotation.id,
                    "label_schema_id": entry.label_schema_id,
                    "label_type": label_type,
                    "assessment": entry.assessment,
                    "modified_by": annotation.modified_by or None,
                    "can_annotate": interaction.can_annotate,
                    "content_id": interaction.content_id,
                }
                if mapped.values is not None:
                    datadog["values"] = mapped.values
                if label_type == "text" and entry.reasoning:
                    datadog["reasoning"] = entry.reasoning
                if inferred:
                    datadog["label_type_inferred"] = True
                # Fields newer than this module: kept, not dropped (SPEC §2), by level.
                if interaction_extra:
                    datadog["interaction"] = dict(interaction_extra)
                if annotation.model_extra:
                    datadog["annotation"] = dict(annotation.model_extra)
                if entry.extra:
                    datadog["label_value"] = dict(entry.extra)
                yield build_annotation(
                    id=f"{self._name}:{annotation.id}:{entry.label_schema_id}",
                    source=self._name,
                    provider=ProviderKind.DATADOG,
                    subject=subject,
                    name=name,
                    label=mapped.label,
                    score=mapped.score,
                    explanation=mapped.explanation,
                    annotator=build_annotator(AnnotatorKind.HUMAN, annotation.created_by or None),
                    identifier="",
                    metadata={},
                    queue=queue,
                    created_at=created,
                    updated_at=updated,
                    extensions={"datadog": datadog},
                    raw=(
                        {"annotation": raw_annotation, "interaction": raw_interaction}
                        if include_raw
                        else None
                    ),
                )

    # --- writing ---

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        raise UnsupportedError(
            f"{self._name}: Datadog sources are read-only here; annotations are written in Datadog's "
            "annotation queues (see the migrate command)"
        )

    async def health(self) -> HealthReport:
        """An authenticated read that matches nothing; never raises."""
        started = time.perf_counter()
        request = self._client.build_request(
            "GET",
            ANNOTATED_INTERACTIONS_PATH,
            params=[("contentIds", HEALTH_PROBE_CONTENT_ID), ("offset", "0"), ("limit", "1")],
        )
        try:
            response = await send(self._client, request, source=self._name)
            self._validate(_PAGE, self._success_body(response, where="health probe"), where="health probe")
        except GatewayError as exc:
            return HealthReport(ok=False, latency_ms=_ms_since(started), detail=exc.detail)
        except Exception as exc:  # a probe reports, it never raises
            return HealthReport(ok=False, latency_ms=_ms_since(started), detail=type(exc).__name__)
        return HealthReport(ok=True, latency_ms=_ms_since(started))

    # --- queue operations (for migrate and the demo) ---

    async def list_queues(
        self, *, project_id: str | None = None, queue_ids: Sequence[str] = ()
    ) -> list[DatadogQueue]:
        """``ListLLMObsAnnotationQueues``; ``project_id`` and ``queue_ids`` are exclusive."""
        params: list[tuple[str, str]] = [("queueIds", q) for q in queue_ids]
        if project_id is not None:
            params.append(("projectId", project_id))
        body = await self._call("GET", QUEUES_PATH, params=params, retry=True)
        parsed = self._validate(_QUEUE_LIST, body, where=f"GET {QUEUES_PATH}")
        return [_queue(q, raw) for q, raw in zip(parsed.data, body["data"], strict=True)]

    async def create_queue(
        self,
        name: str,
        *,
        project_id: str,
        description: str | None = None,
        label_schemas: Sequence[LabelSchema] = (),
    ) -> DatadogQueue:
        """``CreateLLMObsAnnotationQueue`` (not retried: a retry could create a second queue)."""
        attributes: dict[str, Any] = {"name": name, "project_id": project_id}
        if description is not None:
            attributes["description"] = description
        if label_schemas:
            attributes["annotation_schema"] = {"label_schemas": [_dump_label(s) for s in label_schemas]}
        body = await self._call(
            "POST",
            QUEUES_PATH,
            json={"data": {"type": "queues", "attributes": attributes}},
            expect=201,
            retry=False,
        )
        parsed = self._validate(_QUEUE_RESPONSE, body, where=f"POST {QUEUES_PATH}")
        return _queue(parsed.data, body["data"])

    async def delete_queue(self, queue_id: str) -> None:
        """``DeleteLLMObsAnnotationQueue``."""
        await self._call("DELETE", f"{QUEUES_PATH}/{_segment(queue_id)}", expect=204, retry=False)
        self._labels.pop(queue_id, None)

    async def get_label_schema(self, queue_id: str) -> tuple[LabelSchema, ...]:
        """``GetLLMObsAnnotationQueueLabelSchema``; refreshes the provider's cached copy."""
        path = f"{QUEUES_PATH}/{_segment(queue_id)}/label-schema"
        body = await self._call("GET", path, retry=True)
        return self._keep_labels(queue_id, body, where=f"GET {path}")

    async def replace_label_schema(
        self, queue_id: str, label_schemas: Sequence[LabelSchema]
    ) -> tuple[LabelSchema, ...]:
        """``UpdateLLMObsAnnotationQueueLabelSchema``: the whole schema (idempotent, so retried)."""
        path = f"{QUEUES_PATH}/{_segment(queue_id)}/label-schema"
        payload = {
            "data": {
                "type": "queues",
                "attributes": {
                    "annotation_schema": {"label_schemas": [_dump_label(s) for s in label_schemas]}
                },
            }
        }
        body = await self._call("PUT", path, json=payload, retry=True)
        return self._keep_labels(queue_id, body, where=f"PUT {path}")

    def _keep_labels(self, queue_id: str, body: Any, *, where: str) -> tuple[LabelSchema, ...]:
        """The labels of a label-schema answer, kept as the provider's cached copy for the queue."""
        parsed = self._validate(_LABEL_SCHEMA_RESPONSE, body, where=where)
        labels = tuple(parsed.data.attributes.annotation_schema.label_schemas)
        self._labels[queue_id] = _QueueLabels.of(labels)
        return labels

    async def add_interactions(
        self, queue_id: str, interactions: Sequence[tuple[str, str]]
    ) -> list[QueueInteraction]:
        """``CreateLLMObsAnnotationQueueInteractions`` for (type, content id) pairs.

        Retried like a read: adding an interaction twice answers ``already_existed``.
        """
        path = f"{QUEUES_PATH}/{_segment(queue_id)}/interactions"
        items = [{"type": kind, "content_id": content_id} for kind, content_id in interactions]
        payload = {"data": {"type": "interactions", "attributes": {"interactions": items}}}
        body = await self._call("POST", path, json=payload, expect=201, retry=True)
        return list(
            self._validate(_INTERACTIONS_RESPONSE, body, where=f"POST {path}").data.attributes.interactions
        )

    async def upsert_annotations(
        self, queue_id: str, annotations: Sequence[AnnotationUpsert]
    ) -> UpsertResult:
        """``UpsertLLMObsAnnotations``: the key's user's annotation per interaction.

        Retried like a read: an upsert keyed by (interaction, user) is idempotent. Per-item
        failures (unknown interaction, access denied) come back in ``errors``.
        """
        path = f"{QUEUES_PATH}/{_segment(queue_id)}/annotations"
        items = [a.model_dump(mode="json", exclude_none=True) for a in annotations]
        payload = {"data": {"type": "annotations", "attributes": {"annotations": items}}}
        body = await self._call("POST", path, json=payload, retry=True)
        return self._validate(_UPSERT_RESPONSE, body, where=f"POST {path}").data.attributes

    # --- plumbing ---

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
        expect: int = 200,
        retry: bool,
    ) -> Any:
        where = f"{method} {path}"

        def build() -> httpx.Request:
            return self._client.build_request(method, path, params=list(params), json=json)

        def classify(response: httpx.Response) -> Any:
            return self._success_body(response, where=where, expect=expect)

        async with self._semaphore:
            if retry:
                return await send_idempotent(
                    self._client, build, classify, source=self._name, policy=self._retry
                )
            return classify(await send(self._client, build(), source=self._name))

    def _success_body(self, response: httpx.Response, *, where: str, expect: int = 200) -> Any:
        """The parsed body of an expected success, or the SourceError the answer amounts to."""
        status = response.status_code
        if status != expect:
            raise self._error(response, where=where)
        if status == 204:
            return None
        body = parse_json(response, source=self._name)
        if isinstance(body, dict) and "errors" in body and "data" not in body:
            summary, items = describe_error_body(response)
            raise SourceProtocolError(
                f"{self._name}: {where} answered {status} with errors: {summary}",
                source=self._name,
                upstream_status=status,
                errors=items or None,
            )
        return body

    def _error(self, response: httpx.Response, *, where: str) -> SourceError:
        status = response.status_code
        summary, items = describe_error_body(response)
        detail = f"{self._name}: {where} answered {status}: {summary}"
        source = self._name
        if status in (401, 403):
            return SourceAuthError(
                f"{self._name}: Datadog refused the API or application key ({status}: {summary})",
                source=source,
                upstream_status=status,
            )
        if status == 404:
            return SourceNotFoundError(detail, source=source, upstream_status=status, errors=items or None)
        if status == 429:
            return SourceRateLimitedError(
                detail, source=source, retry_after=retry_after_seconds(response.headers)
            )
        if 400 <= status < 500:
            return SourceRequestError(detail, source=source, upstream_status=status, errors=items or None)
        if status >= 500:
            return SourceUnavailableError(detail, source=source, upstream_status=status)
        return SourceProtocolError(f"{detail} (unexpected status)", source=source, upstream_status=status)

    def _validate(self, adapter: TypeAdapter[T], body: Any, *, where: str) -> T:
        try:
            return adapter.validate_python(body)
        except ValidationError as exc:
            summary, items = _validation_problem(exc)
            raise SourceProtocolError(
                f"{self._name}: unexpected answer to {where}: {summary}", source=self._name, errors=items
            ) from None


@dataclass(frozen=True, slots=True)
class _Page:
    offset: int
    total: int
    items: list[tuple[_WireInteraction, Mapping[str, Any]]]


def _queue(queue: _WireQueue, raw: Mapping[str, Any]) -> DatadogQueue:
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


def _dump_label(label: LabelSchema) -> dict[str, Any]:
    return label.model_dump(mode="json", exclude_none=True)


def _segment(value: str) -> str:
    """A path segment: ids are opaque, so escape anything that would change the path."""
    return quote(value, safe="")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
