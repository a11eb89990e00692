"""Request and response models of the REST API (SPEC §3), and the hot-path serializer.

Contract:
- :class:`AnnotationQueryParams` is the ``GET /v1/annotations`` query string (lists are repeated
  keys); :class:`AnnotationSearchBody` is the same query as a JSON body with plural list names
  (``subject_ids``...) for ``POST /v1/annotations/search``; both become a
  :class:`~annotation_gateway.federation.FederatedQuery` via ``to_query``;
- the id-count limits are *not* pydantic constraints: exceeding them is a 413
  ``payload_too_large`` naming the limit (checked by :func:`check_subject_id_limit`), not a 422;
- the response models (:class:`AnnotationPage`, :class:`Problem`...) document the answers in
  OpenAPI; the hot path never validates or encodes through them: :func:`page_json` writes the
  bytes directly (pydantic's Rust serializer for the annotations, orjson for the rest), which is
  what keeps a cache hit close to a bare endpoint's speed (SPEC §4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from annotation_gateway.api.problems import validation_problem
from annotation_gateway.errors import PayloadTooLargeError
from annotation_gateway.federation import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_LENGTH,
    MAX_PAGE_SIZE,
    MAX_SUBJECT_IDS_GET,
    MAX_SUBJECT_IDS_SEARCH,
    MAX_WRITE_ITEMS,
    FederatedQuery,
    QueryPage,
    SourceStatus,
)
from annotation_gateway.federation.query import LIST_FIELDS
from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.records import json_items

__all__ = [
    "AnnotationPage",
    "AnnotationQueryParams",
    "AnnotationSearchBody",
    "HealthAnswer",
    "Problem",
    "ReadyAnswer",
    "ReadyCache",
    "SourceInfoModel",
    "SourceList",
    "SourceStatusModel",
    "WriteAnswer",
    "WriteBody",
    "check_subject_id_limit",
    "list_query",
    "page_json",
    "parse_query_params",
    "query_items",
    "query_parameters_openapi",
    "source_statuses",
]

_D_SUBJECT_ID = (
    f"Subject (session, trace, span...) ids to read annotations of; repeat the key. "
    f"1..{MAX_SUBJECT_IDS_GET} distinct ids (more → 413; use POST /v1/annotations/search)."
)
_D_SUBJECT_KIND = "Only these subject kinds; repeat the key. All kinds when absent."
_D_IDENTIFIER = "Only annotations with these Phoenix upsert identifiers; repeat the key."
_D_NAME = "Only annotations with these names; repeat the key."
_D_EXCLUDE_NAME = "Leave out annotations with these names; repeat the key."
_D_SOURCE = "Only these configured sources; repeat the key. All the key may use when absent."
_D_PROVIDER = "Only sources of these vendors; repeat the key."
_D_ANNOTATOR_KIND = "Only annotations made by these kinds of annotator; repeat the key."
_D_PROJECT = "Only annotations in these Phoenix projects; repeat the key."
_D_QUEUE = "Only annotations in these annotation queues (a Datadog queue's id or name); repeat the key."
_D_SCOPE = (
    "`all`: every subject each selected source can enumerate (Phoenix: the project's sessions and "
    "traces; Datadog: its annotation queues), instead of subject ids; answered in subject order, "
    "with `sources[].scanned_subjects`. Required when neither subject_id nor identifier is given; "
    "422 together with subject_id."
)
_D_UPDATED_AFTER = "Only annotations updated at or after this RFC 3339 time."
_D_UPDATED_BEFORE = "Only annotations updated before this RFC 3339 time."
_D_LIMIT = f"Annotations per page, 1..{MAX_PAGE_SIZE}."
_D_CURSOR = "`next_cursor` of the previous page; only valid with the same filters (else 422 invalid_cursor)."
_D_INCLUDE = "`raw`: add each annotation's original vendor record as `raw`."
_D_PARTIAL = (
    "`allow` (default): a failing source is reported in `sources[]` and the page marked partial; "
    "`deny`: a failing source fails the request."
)


def check_subject_id_limit(subject_ids: tuple[str, ...], limit: int, where: str) -> None:
    """413 when more distinct subject ids than ``limit`` were given."""
    if len(subject_ids) > limit and len(set(subject_ids)) > limit:
        raise PayloadTooLargeError(
            f"{len(set(subject_ids))} distinct subject ids in {where}; the limit is {limit}"
            + ("; send longer lists to POST /v1/annotations/search" if limit == MAX_SUBJECT_IDS_GET else "")
        )


_NUMBER = re.compile(r"^\s*[+-]?\d+(\.\d*)?\s*$")


def _not_a_number(value: Any) -> Any:
    """pydantic reads a bare number as Unix time, in seconds or milliseconds depending on its
    size: ambiguous, and not the RFC 3339 the API documents. Refused (422)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z, not a number")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_not_a_number)]


_LIST_FILTERS = tuple(field for field in LIST_FIELDS if field != "subject_ids")
"""The query's list filters by its (and the search body's) plural names; the GET query string
names each in the singular (``name``), which the body takes too."""


class _QueryFields(BaseModel):
    """Fields shared by the GET query string and the search body (single names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    updated_after: Rfc3339 | None = Field(default=None, description=_D_UPDATED_AFTER)
    updated_before: Rfc3339 | None = Field(default=None, description=_D_UPDATED_BEFORE)
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description=_D_LIMIT)
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH, description=_D_CURSOR)
    include: list[Literal["raw"]] = Field(default_factory=list, description=_D_INCLUDE)
    partial: Literal["allow", "deny"] = Field(default="allow", description=_D_PARTIAL)

    def _query(
        self,
        subject_ids: tuple[str, ...],
        lists: dict[str, list[Any]],
        scope: Literal["all"] | None,
        *,
        use_cache: bool,
    ) -> FederatedQuery:
        """The one query, from the subject ids, the list filters (by the query's names) and the
        scope."""
        filters: dict[str, Any] = {field: tuple(values) for field, values in lists.items()}
        return FederatedQuery(
            subject_ids=subject_ids,
            **filters,
            scope=scope,
            updated_after=self.updated_after,
            updated_before=self.updated_before,
            limit=self.limit,
            cursor=self.cursor,
            include_raw="raw" in self.include,
            partial=self.partial,
            use_cache=use_cache,
        )


class AnnotationQueryParams(_QueryFields):
    """The ``GET /v1/annotations`` query string."""

    subject_id: list[str] = Field(default_factory=list, description=_D_SUBJECT_ID)
    subject_kind: list[SubjectKind] = Field(default_factory=list, description=_D_SUBJECT_KIND)
    identifier: list[str] = Field(default_factory=list, description=_D_IDENTIFIER)
    name: list[str] = Field(default_factory=list, description=_D_NAME)
    exclude_name: list[str] = Field(default_factory=list, description=_D_EXCLUDE_NAME)
    source: list[str] = Field(default_factory=list, description=_D_SOURCE)
    provider: list[ProviderKind] = Field(default_factory=list, description=_D_PROVIDER)
    annotator_kind: list[AnnotatorKind] = Field(default_factory=list, description=_D_ANNOTATOR_KIND)
    project: list[str] = Field(default_factory=list, description=_D_PROJECT)
    queue: list[str] = Field(default_factory=list, description=_D_QUEUE)
    scope: Literal["all"] | None = Field(default=None, description=_D_SCOPE)

    def to_query(self, *, use_cache: bool) -> FederatedQuery:
        subject_ids = tuple(self.subject_id)
        check_subject_id_limit(subject_ids, MAX_SUBJECT_IDS_GET, "GET /v1/annotations")
        lists = {field: getattr(self, field.removesuffix("s")) for field in _LIST_FILTERS}
        return self._query(subject_ids, lists, self.scope, use_cache=use_cache)


class AnnotationSearchBody(_QueryFields):
    """``POST /v1/annotations/search``: the query of ``GET /v1/annotations`` as JSON."""

    subject_ids: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("subject_ids", "subject_id"),
        description=f"Subject ids, up to {MAX_SUBJECT_IDS_SEARCH} distinct (more → 413).",
    )
    subject_kinds: list[SubjectKind] = Field(
        default_factory=list,
        validation_alias=AliasChoices("subject_kinds", "subject_kind"),
        description=_D_SUBJECT_KIND,
    )
    identifiers: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("identifiers", "identifier"),
        description=_D_IDENTIFIER,
    )
    names: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("names", "name"), description=_D_NAME
    )
    exclude_names: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("exclude_names", "exclude_name"),
        description=_D_EXCLUDE_NAME,
    )
    sources: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("sources", "source"), description=_D_SOURCE
    )
    providers: list[ProviderKind] = Field(
        default_factory=list, validation_alias=AliasChoices("providers", "provider"), description=_D_PROVIDER
    )
    annotator_kinds: list[AnnotatorKind] = Field(
        default_factory=list,
        validation_alias=AliasChoices("annotator_kinds", "annotator_kind"),
        description=_D_ANNOTATOR_KIND,
    )
    projects: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("projects", "project"), description=_D_PROJECT
    )
    queues: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("queues", "queue"), description=_D_QUEUE
    )
    scope: Literal["all"] | None = Field(default=None, description=_D_SCOPE)

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"subject_ids": ["sess-001", "sess-002"], "names": ["resolution"], "limit": 50}]
        },
    )

    def to_query(self, *, use_cache: bool) -> FederatedQuery:
        subject_ids = tuple(self.subject_ids)
        check_subject_id_limit(subject_ids, MAX_SUBJECT_IDS_SEARCH, "POST /v1/annotations/search")
        lists = {field: getattr(self, field) for field in _LIST_FILTERS}
        return self._query(subject_ids, lists, self.scope, use_cache=use_cache)


# --- answers (documentation models) ----------------------------------------------------------


class Problem(BaseModel):
    """An RFC 9457 problem (``application/problem+json``)."""

    type: str = Field(description="A URI naming the problem type.")
    title: str
    status: int
    detail: str = Field(description="What went wrong, for a person.")
    code: str = Field(description="A machine-readable code from a closed list (validation_error...).")
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For validation_error: `[{loc, msg, type}]`, one per invalid field."
    )
    source: str | None = Field(default=None, description="For source_* problems: the source that failed.")
    upstream_status: int | None = Field(default=None, description="The vendor's HTTP status, if any.")


class SourceStatusModel(BaseModel):
    """How one source fared in this query."""

    source: str
    provider: ProviderKind
    status: Literal["ok", "error", "skipped"]
    count: int = Field(description="Matching annotations this source contributed to the whole query.")
    cached: bool = Field(description="Answered from the gateway's cache.")
    stale: bool = Field(description="Served from the cache past its TTL because the source failed.")
    elapsed_ms: float
    error: dict[str, Any] | None = Field(
        default=None, description="The source's problem when `status` is error; why, when skipped."
    )
    scanned_subjects: int | None = Field(
        default=None,
        description="Scope answers only: subjects of this source read for this answer (`count` is "
        "then the matches among them).",
    )


class AnnotationPage(BaseModel):
    """One page of a federated query."""

    data: list[Annotation]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")
    partial: bool = Field(description="True when a source failed: the page may miss its annotations.")
    sources: list[SourceStatusModel]


class WriteBody(BaseModel):
    """``POST /v1/annotations``: annotations to upsert into one writable (Phoenix) source."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "source": "phoenix-prod",
                    "annotations": [
                        {"subject_id": "sess-001", "name": "resolution", "label": "resolved", "score": 1}
                    ],
                }
            ]
        },
    )

    source: str = Field(min_length=1, description="A writable source (see GET /v1/sources).")
    annotations: list[AnnotationWrite] = Field(
        min_length=1,
        description=f"1..{MAX_WRITE_ITEMS} items, written all-or-nothing; upsert by "
        "(name, subject, identifier).",
    )


class WriteAnswer(BaseModel):
    source: str
    count: int
    ids: list[str] = Field(description="Canonical ids of the written annotations, in request order.")


class Capabilities(BaseModel):
    subject_kinds: list[SubjectKind]
    pushdown: list[str] = Field(description="Query fields the vendor filters on itself.")
    needs_subject_ids: bool = Field(description="True when it cannot be queried by identifier alone.")
    writable_kinds: list[SubjectKind] = Field(description="Subject kinds POST /v1/annotations accepts.")
    writable: bool


class SourceHealth(BaseModel):
    circuit_state: Literal["closed", "open", "half_open"]
    last_checked_at: datetime | None
    ok: bool | None = Field(description="Outcome of the last probe; null before the first.")
    latency_ms: float | None
    version: str | None = None
    detail: str | None = None


class SourceInfoModel(BaseModel):
    name: str
    provider: ProviderKind
    capabilities: Capabilities
    health: SourceHealth


class SourceList(BaseModel):
    data: list[SourceInfoModel]


class HealthAnswer(BaseModel):
    status: Literal["ok"]


class ReadySource(BaseModel):
    ok: bool
    latency_ms: float
    version: str | None = None
    detail: str | None = None


class ReadyCache(BaseModel):
    backend: Literal["redis"]
    state: Literal["ok", "degraded"] = Field(
        description="degraded: Redis does not answer; the gateway answers from memory and the sources."
    )
    detail: str | None = None


class ReadyAnswer(BaseModel):
    status: Literal["ready"]
    sources: dict[str, ReadySource]
    cache: ReadyCache | None = Field(
        default=None, description="The shared cache tier, when one is configured (SPEC §9)."
    )


# --- the hot path ----------------------------------------------------------------------------

_QUERY_LIST_FIELDS = frozenset(
    name
    for name, info in AnnotationQueryParams.model_fields.items()
    if getattr(info.annotation, "__origin__", None) is list
)


def query_items(raw: bytes) -> list[tuple[str, str]]:
    """(key, value) pairs of a raw query string, as Starlette's ``request.query_params`` has them.

    A plain ASCII query with nothing escaped — what clients send for ids and names — is split
    directly; anything else goes through ``parse_qsl``, whose per-item unquoting costs more than
    the rest of a cached query.
    """
    if raw.isascii() and b"%" not in raw and b"+" not in raw:
        out: list[tuple[str, str]] = []
        for part in raw.decode("ascii").split("&"):
            if part:
                key, _, value = part.partition("=")
                out.append((key, value))
        return out
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


def parse_query_params(items: Iterable[tuple[str, str]]) -> AnnotationQueryParams:
    """The ``GET /v1/annotations`` parameters from the query's (key, value) pairs (repeated
    keys → lists; see :func:`query_items`).

    Done here rather than by FastAPI's query-model support, which re-inspects every field's type
    on every request and costs more than the whole cached query; pydantic validates the dict in
    one Rust call. Invalid input raises ``RequestValidationError`` (422) with ``loc`` under
    ``query``, as FastAPI would have.
    """
    data: dict[str, Any] = {}
    for key, value in items:
        if key in _QUERY_LIST_FIELDS:
            values = data.get(key)
            if values is None:
                data[key] = [value]
            else:
                values.append(value)
        else:
            # A repeated scalar: the last one wins, as with FastAPI's own parameters.
            data[key] = value
    try:
        return AnnotationQueryParams.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(
            [{**err, "loc": ("query", *err["loc"])} for err in exc.errors(include_input=False)]
        ) from None


PARSED_QUERY_MEMO_MAX_ITEMS = 1024
"""Distinct query strings whose parsed query is remembered (emptied when full)."""
PARSED_QUERY_MEMO_MAX_BYTES = 4096
"""Longer query strings are parsed every time: the memo stays under ~10 MB, and for a query of
hundreds of ids parsing is a small part of the answer anyway."""
_PARSED: dict[tuple[bytes, bool], FederatedQuery] = {}


def list_query(raw: bytes, *, use_cache: bool) -> FederatedQuery:
    """The :class:`FederatedQuery` of a raw ``GET /v1/annotations`` query string.

    Dashboards repeat the same few queries: a valid one is parsed and validated once and its
    (immutable) query reused, which takes parsing off a cache hit's path. Invalid ones raise
    (422/413) every time and are not remembered, nor are pages after the first (a cursor's page
    is asked for once: remembering it would only push the polled queries out).
    """
    key = (raw, use_cache)
    query = _PARSED.get(key)
    if query is None:
        query = parse_query_params(query_items(raw)).to_query(use_cache=use_cache)
        if query.cursor is None and len(raw) <= PARSED_QUERY_MEMO_MAX_BYTES:
            if len(_PARSED) >= PARSED_QUERY_MEMO_MAX_ITEMS:
                _PARSED.clear()
            _PARSED[key] = query
    return query


def _inline_refs(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(item, defs) for item in schema]
    return schema


def query_parameters_openapi(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` (in: query, repeated keys for lists) for ``model``'s fields."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    out: list[dict[str, Any]] = []
    # The query's own fields first (subject_id...), then the shared paging ones, as in SPEC §3.
    shared = [name for name in schema["properties"] if name in _QueryFields.model_fields]
    own = [name for name in schema["properties"] if name not in _QueryFields.model_fields]
    for name in own + shared:
        prop = _inline_refs(schema["properties"][name], defs)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": prop,
        }
        if name in _QUERY_LIST_FIELDS:
            param["style"] = "form"
            param["explode"] = True
        out.append(param)
    return out


def _status(status: SourceStatus) -> dict[str, Any]:
    out = {
        "source": status.source,
        "provider": status.provider,
        "status": status.status,
        "count": status.count,
        "cached": status.cached,
        "stale": status.stale,
        # Tenths of a millisecond: more digits are noise, and they make answers harder to read.
        "elapsed_ms": round(status.elapsed_ms, 1),
        "error": status.error,
    }
    if status.scanned_subjects is not None:  # scope answers only (SPEC §7)
        out["scanned_subjects"] = status.scanned_subjects
    return out


def source_statuses(statuses: Sequence[SourceStatus]) -> list[dict[str, Any]]:
    """``sources[]`` of an answer, as JSON-ready dicts (reads, aggregates)."""
    return [_status(status) for status in statuses]


_PAGE_HEAD = b'{"data":['


def page_json(page: QueryPage) -> bytes:
    """The JSON bytes of ``page`` (the :class:`AnnotationPage` shape), without a model round trip.

    The records are written by one msgspec call (:func:`~annotation_gateway.records.json_items`);
    no model object is built. A page whose JSON the federation keeps with a cached result
    (``records_json``) keeps the answer written around it too: asked again with the same tail
    (cursor, ``partial``, ``sources`` — a polled cache hit's are the same), the answer is that
    same bytes object, not a new copy of the page (~69 KB for 100 annotations), and the records'
    JSON is then held once, inside it.
    """
    tail = b"".join(
        (
            b'],"next_cursor":',
            orjson.dumps(page.next_cursor),
            b',"partial":',
            b"true" if page.partial else b"false",
            b',"sources":',
            orjson.dumps([_status(status) for status in page.sources]),
            b"}",
        )
    )
    held = page.records_json
    if held is None:
        return b"".join((_PAGE_HEAD, json_items(page.records), tail))
    if held.tail == tail:
        return held.body
    items = held.items
    body = b"".join((_PAGE_HEAD, items, tail))
    held.items = memoryview(body)[len(_PAGE_HEAD) : len(_PAGE_HEAD) + len(items)]
    held.tail, held.body = tail, body
    return body


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": text}
    for status, text in (
        (401, "No or unknown gateway key (`unauthorized`)."),
        (403, "The key may not use a source named (`forbidden`), or a source refused our key."),
        (413, "More ids or items than a limit allows (`payload_too_large`); the detail names it."),
        (422, "Invalid parameter or body (`validation_error`), or cursor (`invalid_cursor`)."),
        (
            502,
            "A source failed with partial=deny, or every source failed: the failing source's "
            "problem (`source_error`, `source_unavailable` when unreachable, 5xx or its circuit is "
            "open). 504, 429 and the upstream 4xx classes below are answered the same way.",
        ),
        (404, "A source does not know the configured project or resource (`not_found`)."),
        (406, "The `Accept` header admits no representation this operation has (`not_acceptable`)."),
        (415, "A request body not declared as `application/json` (`unsupported_media_type`)."),
        (
            429,
            "`rate_limited`: this key made more requests than its `rate_limit` allows (with "
            "`RateLimit-Policy` and `RateLimit`), or a source throttled the gateway or its rate "
            "budget is spent (`source` names it). `Retry-After` says how long to wait.",
        ),
        (504, "A source did not answer in time (`source_timeout`)."),
    )
}
# The RateLimit fields follow draft-ietf-httpapi-ratelimit-headers-11 (api/ratelimit.py).
PROBLEM_RESPONSES[429]["headers"] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (RFC 9110 §10.2.3).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Policy": {
        "description": 'The key\'s quota policies, e.g. `"default";q=100;w=1` (q requests per w '
        "seconds); only when the key's own limit refused the request.",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'The refusing policy\'s service limit, e.g. `"default";r=0;t=1` (r requests '
        "left, t seconds until one is free again, as Retry-After); only when the key's own limit "
        "refused the request.",
        "schema": {"type": "string"},
    },
}
