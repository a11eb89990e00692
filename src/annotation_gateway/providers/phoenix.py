"""Arize Phoenix provider: session, trace and span annotations over Phoenix's REST API.

Contract (see :mod:`annotation_gateway.providers.base` for the provider contract itself):

Reading — ``GET /v1/projects/{project}/{session,trace,span}_annotations``:

- ``subject_kinds`` empty means session, trace and span, read concurrently; kinds Phoenix does
  not have (``experiment_trace``, ``display_block``) have no annotations here.
- Subject ids and identifiers are de-duplicated and pushed down (``session_ids``/``trace_ids``/
  ``span_ids``, ``identifier``), as are names (``include_annotation_names``) and excluded names.
  Phoenix reads an empty value specially (``include_annotation_names=`` matches nothing,
  ``identifier=`` is a 422), so an empty string is never sent: a filter holding ``""`` is applied
  by the provider instead. An empty subject id matches nothing. An identifier-only query is
  allowed (Phoenix supports it), except for the empty identifier, which Phoenix cannot look up.
- Id lists are chunked to at most :data:`MAX_IDS_PER_REQUEST` ids and URLs of at most
  :data:`MAX_URL_BYTES`; chunks are read concurrently, each page request under the source's
  concurrency cap, every chunk paged through ``next_cursor`` to the end with ``limit=page_size``.
  Filters too long for one URL are applied by the provider instead of pushed down.
- Rows are validated (a TypedDict per kind, through ``TypeAdapter``) and normalised to SPEC §2:
  id ``{source}:{GlobalID}``, ``result: null`` → null label/score/explanation, annotator
  ``{annotator_kind, user_id}``; ``extensions.phoenix`` keeps the GlobalID, ``source`` (API/APP)
  and every field this module does not know; ``raw`` is the row as received, on request.

Outcomes — classified by status and content type before any success body is parsed:
unknown project (404 text) → :class:`SourceNotFoundError`; "None of the supplied ..._ids exist
in this project" (404) → no annotations; 401/403 → :class:`SourceAuthError`; other 4xx (422 as
text or as JSON ``{"detail": [...]}``) → :class:`SourceRequestError` with Phoenix's message (and
``errors`` from ``detail``); 429 → :class:`SourceRateLimitedError` with ``Retry-After`` (else
``X-RateLimit-Reset``); 5xx → :class:`SourceUnavailableError`; 200 with ``text/html`` (Phoenix's
web UI answers unknown routes, trailing slashes and HEAD) or any non-JSON, malformed JSON, a
missing or wrong-typed field →
:class:`SourceProtocolError` naming the field. Reads are retried on connect errors, timeouts, 5xx
and 429 (:class:`~annotation_gateway.providers.http.RetryPolicy`); writes are not.

Writing — ``POST /v1/{session,trace,span}_annotations?sync=true``:

1. every item is checked first (kind, the reserved name ``note``, annotator kind ``UNKNOWN``,
   JSON-serialisable metadata) → :class:`RequestValidationError` listing each bad item; nothing
   is sent;
2. a pre-flight read checks that every subject exists *in the configured project* (sessions and
   traces through Phoenix's filter expressions, spans through ``span_ids``) →
   :class:`SourceNotFoundError` whose ``errors`` list the unknown subjects; nothing is written;
3. the items go in batches of :data:`WRITE_BATCH_SIZE`, one after the other in request order
   (so the last of several upserts of one key wins). Each batch is all-or-nothing upstream;
   across batches Phoenix offers no transaction, so if a later batch fails (a subject deleted
   after the pre-flight, Phoenix down) the earlier ones stay written and the error says how
   many. Writes are upserts keyed by (name, subject, identifier): re-sending is safe.
   ``identifier`` is always sent as a string (``""`` for none; Phoenix refuses null).

``health()`` reads the public ``/arize_phoenix_version`` and then the configured project with
the API key, so a wrong key or an unknown project shows as unhealthy; it never raises.
No error message or log line carries the API key: errors name the method and path only.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypeVar
from urllib.parse import quote, urlencode

import httpx
import orjson
from pydantic import ConfigDict as PydanticConfig
from pydantic import Field, HttpUrl, TypeAdapter, ValidationError, field_validator, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from annotation_gateway.concurrency import gather
from annotation_gateway.errors import (
    GatewayError,
    PayloadTooLargeError,
    RequestValidationError,
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceRequestError,
    SourceUnavailableError,
)
from annotation_gateway.model import (
    Annotation,
    AnnotationWrite,
    AnnotatorKind,
    ProviderKind,
    SubjectKind,
    build_annotation,
    build_annotator,
    build_subject,
)
from annotation_gateway.providers.base import Capabilities, HealthReport, SourceQuery, WriteResult
from annotation_gateway.providers.config import BaseSourceConfig, read_secret
from annotation_gateway.providers.http import (
    RetryPolicy,
    chunk_values,
    get_request,
    is_json,
    make_client,
    parse_json,
    send,
)

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "MAX_URL_BYTES",
    "RESERVED_NAMES",
    "WRITE_BATCH_SIZE",
    "PhoenixProvider",
    "PhoenixSourceConfig",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
_Query = list[tuple[str, str | int | float | bool | None]]
"""Query parameters in order, keys repeated (what httpx takes)."""

FORBIDDEN_PROJECT_CHARS = frozenset("/?#")

MAX_IDS_PER_REQUEST = 1000
"""Phoenix refuses more than 1000 distinct subject ids in one read (422)."""
MAX_URL_BYTES = 16 * 1024
"""Longest GET URL sent (about 300 UUIDs); longer id lists are chunked."""
CURSOR_RESERVE_BYTES = 256
"""Room kept in every chunk's URL for ``&cursor=...`` (a GlobalID is ~50 bytes URL-encoded)."""
MIN_ID_ROOM_BYTES = 4 * 1024
"""Pushed-down filters may take the URL only down to this much room for ids; past it they are
applied by the provider instead."""
WRITE_BATCH_SIZE = 500
"""Items per ``POST ...?sync=true`` (Phoenix takes 1000 in ~one request; 500 keeps each short)."""
PREFLIGHT_PAGE_SIZE = 1000
"""Page size of the pre-flight reads (Phoenix's maximum for traces and spans)."""
RESERVED_NAMES = frozenset({"note"})
"""Annotation names Phoenix keeps for its notes (``POST /v1/session_notes``); refused (400)."""
WRITABLE_ANNOTATOR_KINDS = frozenset({AnnotatorKind.HUMAN, AnnotatorKind.LLM, AnnotatorKind.CODE})
THREAD_PARSE_MIN_BYTES = 256 * 1024
"""Pages at least this big are validated in a worker thread: a 10,000-row page costs 80-170 ms of
CPU, which would otherwise stall every other request on the event loop."""
ID_ROOM_MEMO_MAX_ITEMS = 256
"""Distinct (path, pushed-down filters) whose URL room is remembered (emptied when full)."""
MAX_MESSAGE_CHARS = 500
MAX_LISTED_ERRORS = 20
NO_SUCH_SUBJECTS = re.compile(r"^None of the supplied (session|trace|span)_ids exist in this project")
WRITE_NOT_FOUND = re.compile(r"^(Sessions|Traces|Spans) with IDs (?P<ids>.*) do not exist\.?\s*$", re.S)


class PhoenixSourceConfig(BaseSourceConfig):
    """A Phoenix project reached over REST."""

    provider: Literal["phoenix"] = "phoenix"
    base_url: HttpUrl = Field(description="Phoenix server, e.g. http://127.0.0.1:6006")
    project: str = Field(min_length=1, description="Project name or GlobalID.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the Phoenix API key."
    )
    page_size: int = Field(default=10_000, ge=1, le=10_000, description="Rows per upstream page.")

    @field_validator("project")
    @classmethod
    def _project_is_a_path_segment(cls, value: str) -> str:
        bad = sorted(FORBIDDEN_PROJECT_CHARS.intersection(value))
        if bad:
            raise ValueError(f"project may not contain {' '.join(bad)} (it is a URL path segment)")
        return value


# --- Phoenix's wire shapes ----------------------------------------------------------------------
# TypedDicts validated through TypeAdapter: about 4x cheaper than BaseModel instances per row, and
# extra="allow" keeps fields this module does not know, for extensions.phoenix.

_LAX = PydanticConfig(extra="allow")


@with_config(_LAX)
class _Result(TypedDict, total=False):
    label: str | None
    score: float | None
    explanation: str | None


@with_config(_LAX)
class _Row(TypedDict):
    id: str
    created_at: datetime
    updated_at: datetime
    source: str
    user_id: str | None
    name: str
    annotator_kind: str
    result: NotRequired[_Result | None]
    metadata: NotRequired[dict[str, Any] | None]
    identifier: NotRequired[str]


@with_config(_LAX)
class _SessionRow(_Row):
    session_id: str


@with_config(_LAX)
class _TraceRow(_Row):
    trace_id: str


@with_config(_LAX)
class _SpanRow(_Row):
    span_id: str


class _SessionPage(TypedDict):
    data: list[_SessionRow]
    next_cursor: str | None


class _TracePage(TypedDict):
    data: list[_TraceRow]
    next_cursor: str | None


class _SpanPage(TypedDict):
    data: list[_SpanRow]
    next_cursor: str | None


class _Inserted(TypedDict):
    id: str


class _InsertedBody(TypedDict):
    data: list[_Inserted]


class _Project(TypedDict):
    id: str
    name: str


class _ProjectBody(TypedDict):
    data: _Project


_KNOWN_ROW_FIELDS = _Row.__required_keys__ | _Row.__optional_keys__ | {"session_id", "trace_id", "span_id"}
_KNOWN_RESULT_FIELDS = frozenset({"label", "score", "explanation"})
_PHOENIX_ANNOTATOR_KINDS = {kind.value: kind for kind in WRITABLE_ANNOTATOR_KINDS}
_INSERTED = TypeAdapter(_InsertedBody)
_PROJECT = TypeAdapter(_ProjectBody)
_ANY_PAGE = TypeAdapter(dict[str, Any])


@dataclass(frozen=True, slots=True)
class _Kind:
    """Everything that differs between session, trace and span annotations."""

    kind: SubjectKind
    read_suffix: str
    id_param: str
    row_field: str
    write_path: str
    noun: str
    page: TypeAdapter[Any]


_KINDS: dict[SubjectKind, _Kind] = {
    SubjectKind.SESSION: _Kind(
        SubjectKind.SESSION,
        "session_annotations",
        "session_ids",
        "session_id",
        "/v1/session_annotations",
        "Sessions",
        TypeAdapter(_SessionPage),
    ),
    SubjectKind.TRACE: _Kind(
        SubjectKind.TRACE,
        "trace_annotations",
        "trace_ids",
        "trace_id",
        "/v1/trace_annotations",
        "Traces",
        TypeAdapter(_TracePage),
    ),
    SubjectKind.SPAN: _Kind(
        SubjectKind.SPAN,
        "span_annotations",
        "span_ids",
        "span_id",
        "/v1/span_annotations",
        "Spans",
        TypeAdapter(_SpanPage),
    ),
}
PHOENIX_KINDS = frozenset(_KINDS)


# --- the read plan ------------------------------------------------------------------------------


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class _Plan:
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
    def of(cls, query: SourceQuery) -> _Plan | None:
        """The plan for ``query``, or None when nothing can match."""
        subject_ids = _unique(s for s in query.subject_ids if s)
        if query.subject_ids and not subject_ids:
            return None  # only empty ids were asked for: nothing can match
        identifiers = _unique(query.identifiers)
        names = _unique(query.names)
        exclude = _unique(query.exclude_names)
        push_identifiers: tuple[str, ...] = identifiers
        local_identifiers: frozenset[str] | None = None
        if "" in identifiers:
            if not subject_ids:
                raise RequestValidationError(
                    "Phoenix cannot look up annotations by the empty identifier without subject ids",
                    errors=[{"loc": ["identifier"], "msg": "give subject ids with an empty identifier"}],
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

    def fixed_params(self) -> _Query:
        params: _Query = [("identifier", v) for v in self.push_identifiers]
        params += [("include_annotation_names", v) for v in self.push_names]
        params += [("exclude_annotation_names", v) for v in self.push_exclude]
        return params

    def filtered_locally(self) -> _Plan:
        """The same query with nothing pushed down but the chunked ids (for over-long filters)."""
        return _Plan(
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


def _encoded_len(param: str, value: str) -> int:
    """Bytes ``&param=value`` adds to a URL (httpx encodes queries as ``urlencode`` does)."""
    return len(urlencode([(param, value)])) + 1


# --- the provider -------------------------------------------------------------------------------


class PhoenixProvider:
    """One Phoenix project behind one shared connection pool (see the module docstring)."""

    def __init__(self, config: PhoenixSourceConfig, *, client: httpx.AsyncClient) -> None:
        self._config = config
        self._client = client
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._retry = RetryPolicy(attempts=config.retry_attempts, max_retry_after_s=config.max_retry_after_s)
        self._project_path = f"/v1/projects/{quote(config.project, safe='')}"
        self._id_rooms: dict[tuple[str, tuple[tuple[str, Any], ...]], int] = {}
        self._capabilities = Capabilities(
            subject_kinds=PHOENIX_KINDS,
            pushdown=frozenset({"subject_ids", "identifiers", "names", "exclude_names"}),
            needs_subject_ids=False,
            writable_kinds=PHOENIX_KINDS,
        )

    @classmethod
    def from_config(
        cls,
        config: PhoenixSourceConfig,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> PhoenixProvider:
        """Build the provider; the API key comes from the variable ``api_key_env`` names."""
        secret = read_secret(config.api_key_env, key=f"sources.{config.name}.api_key_env", environ=environ)
        headers = {"Accept": "application/json", "User-Agent": "annotation-gateway"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret.get_secret_value()}"
        client = make_client(
            str(config.base_url),
            headers=headers,
            timeout_s=config.timeout_s,
            max_connections=config.max_concurrency,
            transport=transport,
        )
        return cls(config, client=client)

    def __repr__(self) -> str:
        return f"PhoenixProvider(name={self.name!r}, project={self._config.project!r})"

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def kind(self) -> ProviderKind:
        return ProviderKind.PHOENIX

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def config(self) -> PhoenixSourceConfig:
        return self._config

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- reading ------------------------------------------------------------------------------

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        """Every matching annotation of this project, each once (module docstring)."""
        kinds = [_KINDS[k] for k in (query.subject_kinds or tuple(_KINDS)) if k in _KINDS]
        plan = _Plan.of(query)
        if plan is None or not kinds:
            return []
        per_kind = await gather([self._fetch_kind(spec, plan, query.include_raw) for spec in kinds])
        merged: dict[str, Annotation] = {}
        for found in per_kind:
            for annotation in found:
                # Chunks and kinds are disjoint; this only guards against a row repeated by
                # Phoenix across a page boundary, so that each annotation is returned once.
                merged.setdefault(annotation.id, annotation)
        return list(merged.values())

    async def _fetch_kind(self, spec: _Kind, plan: _Plan, include_raw: bool) -> list[Annotation]:
        path = f"{self._project_path}/{spec.read_suffix}"
        if plan.subject_ids:
            param, values = spec.id_param, plan.subject_ids
        else:
            param, values = "identifier", plan.chunk_identifiers
        room = self._id_room(path, plan)
        if room < MIN_ID_ROOM_BYTES and plan.fixed_params():
            plan = plan.filtered_locally()
            room = self._id_room(path, plan)
        costs = [_encoded_len(param, v) for v in values]
        too_long = next((v for v, c in zip(values, costs, strict=True) if c > room), None)
        if too_long is not None:
            raise PayloadTooLargeError(
                f"a {param} value of {len(too_long)} characters does not fit in one Phoenix URL "
                f"({MAX_URL_BYTES} bytes)"
            )
        chunks = chunk_values(values, costs, budget=room, max_count=MAX_IDS_PER_REQUEST)
        results = await gather(
            [self._read_chunk(spec, path, param, chunk, plan, include_raw) for chunk in chunks]
        )
        return [annotation for chunk_result in results for annotation in chunk_result]

    def _id_room(self, path: str, plan: _Plan) -> int:
        """URL bytes left for ids once the path, fixed filters, limit and a cursor are in.

        Remembered per (path, filters): building the URL through httpx parses it character
        by character, which cost more than the rest of planning a small query."""
        params = [*plan.fixed_params(), ("limit", str(self._config.page_size))]
        key = (path, tuple(params))
        room = self._id_rooms.get(key)
        if room is None:
            fixed = self._client.build_request("GET", path, params=params)
            room = MAX_URL_BYTES - len(str(fixed.url)) - CURSOR_RESERVE_BYTES
            if len(self._id_rooms) >= ID_ROOM_MEMO_MAX_ITEMS:
                self._id_rooms.clear()
            self._id_rooms[key] = room
        return room

    async def _read_chunk(
        self,
        spec: _Kind,
        path: str,
        param: str,
        chunk: Sequence[str],
        plan: _Plan,
        include_raw: bool,
    ) -> list[Annotation]:
        base: _Query = [(param, v) for v in chunk]
        base += plan.fixed_params()
        base.append(("limit", str(self._config.page_size)))
        out: list[Annotation] = []
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params = base if cursor is None else [*base, ("cursor", cursor)]
            page = await self._get_page(spec, path, params, plan, include_raw)
            if page is None:  # "None of the supplied ..._ids exist in this project"
                return out
            annotations, cursor = page
            out.extend(annotations)
            if not cursor:
                return out
            if cursor in seen_cursors:
                raise SourceProtocolError(
                    f"{self.name}: Phoenix repeated the page cursor {cursor!r} on {path}",
                    source=self.name,
                )
            seen_cursors.add(cursor)

    async def _get_page(
        self,
        spec: _Kind,
        path: str,
        params: _Query,
        plan: _Plan,
        include_raw: bool,
    ) -> tuple[list[Annotation], str | None] | None:
        response = await self._get(path, params)
        if response.status_code == 404 and NO_SUCH_SUBJECTS.match(_text(response)):
            return None
        self._raise_for_status(response)
        self._require_json(response, path)
        if len(response.content) >= THREAD_PARSE_MIN_BYTES:
            return await asyncio.to_thread(self._parse_page, spec, response, plan, include_raw)
        return self._parse_page(spec, response, plan, include_raw)

    async def _get(self, path: str, params: _Query) -> httpx.Response:
        """One idempotent GET, retried per policy on retryable failures, under the cap."""

        async def once() -> httpx.Response:
            request = get_request(self._client, path, params)
            async with self._semaphore:
                response = await send(self._client, request, source=self.name)
            if response.status_code == 429 or response.status_code >= 500:
                self._raise_for_status(response)  # retryable: RetryPolicy decides
            return response

        return await self._retry.run(once)

    def _parse_page(
        self, spec: _Kind, response: httpx.Response, plan: _Plan, include_raw: bool
    ) -> tuple[list[Annotation], str | None]:
        body = parse_json(response, source=self.name)
        page = self._validate(spec.page, body, what=f"{spec.kind.value} annotation page")
        raw_rows: list[Any] = body["data"]
        keep_all = not plan.filters_locally
        annotations = [
            self._canonical(spec, row, raw_rows[index] if include_raw else None)
            for index, row in enumerate(page["data"])
            if keep_all or plan.keeps(row["name"], row.get("identifier", ""))
        ]
        cursor: str | None = page["next_cursor"]
        return annotations, cursor

    def _canonical(self, spec: _Kind, row: Mapping[str, Any], raw: dict[str, Any] | None) -> Annotation:
        """A validated Phoenix row as a canonical Annotation (SPEC §2).

        Built without a second validation: the row's wire TypedDict already guarantees every
        type the canonical model needs (build_annotation makes the timestamps UTC).
        """
        result: Mapping[str, Any] = row.get("result") or {}
        gid: str = row["id"]
        phoenix: dict[str, Any] = {"id": gid, "source": row["source"]}
        phoenix.update((k, v) for k, v in row.items() if k not in _KNOWN_ROW_FIELDS)
        extra_result = {k: v for k, v in result.items() if k not in _KNOWN_RESULT_FIELDS}
        if extra_result:
            phoenix["result"] = extra_result
        annotator_kind = _PHOENIX_ANNOTATOR_KINDS.get(row["annotator_kind"])
        if annotator_kind is None:  # a kind newer than this module: keep what Phoenix said
            annotator_kind = AnnotatorKind.UNKNOWN
            phoenix["annotator_kind"] = row["annotator_kind"]
        return build_annotation(
            id=f"{self.name}:{gid}",
            source=self.name,
            provider=ProviderKind.PHOENIX,
            subject=build_subject(spec.kind, row[spec.row_field], self._config.project),
            name=row["name"],
            label=result.get("label"),
            score=result.get("score"),
            explanation=result.get("explanation"),
            annotator=build_annotator(annotator_kind, row["user_id"]),
            identifier=row.get("identifier", ""),
            metadata=row.get("metadata") or {},
            queue=None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            extensions={"phoenix": phoenix},
            raw=raw,
        )

    # --- writing ------------------------------------------------------------------------------

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        """Upsert ``items`` (module docstring: checks, pre-flight, ordered batches)."""
        items = list(items)
        if not items:
            return WriteResult(ids=())
        bodies = self._check_writes(items)
        await self._preflight(items)
        ids: list[str | None] = [None] * len(items)
        by_kind: dict[SubjectKind, list[int]] = {}
        for index, item in enumerate(items):
            by_kind.setdefault(item.subject_kind, []).append(index)
        written = 0
        for kind, indexes in by_kind.items():
            spec = _KINDS[kind]
            for start in range(0, len(indexes), WRITE_BATCH_SIZE):
                batch = indexes[start : start + WRITE_BATCH_SIZE]
                try:
                    gids = await self._post_batch(spec, [bodies[i] for i in batch], [items[i] for i in batch])
                except SourceError as exc:
                    if written:
                        _amend(
                            exc,
                            f" ({written} of {len(items)} items were written before this failure; "
                            "re-sending the request is safe: writes are upserts)",
                        )
                    raise
                for index, gid in zip(batch, gids, strict=True):
                    ids[index] = f"{self.name}:{gid}"
                written += len(batch)
        return WriteResult(ids=tuple(i for i in ids if i is not None))

    def _check_writes(self, items: Sequence[AnnotationWrite]) -> list[bytes]:
        """Refuse what Phoenix would refuse, before any request; the JSON of each item."""
        errors: list[dict[str, Any]] = []
        bodies: list[bytes] = []
        for index, item in enumerate(items):
            spec = _KINDS.get(item.subject_kind)
            if spec is None:
                errors.append(
                    _item_error(
                        index, "subject_kind", f"Phoenix has no {item.subject_kind.value} annotations"
                    )
                )
                continue
            if item.name in RESERVED_NAMES:
                errors.append(
                    _item_error(index, "name", f"the name {item.name!r} is reserved by Phoenix for notes")
                )
            if item.annotator_kind not in WRITABLE_ANNOTATOR_KINDS:
                errors.append(
                    _item_error(index, "annotator_kind", "Phoenix takes HUMAN, LLM or CODE annotators")
                )
            try:
                bodies.append(orjson.dumps(self._wire_item(spec, item)))
            except orjson.JSONEncodeError as exc:
                errors.append(_item_error(index, "metadata", f"not JSON-serialisable: {exc}"))
        if errors:
            raise RequestValidationError(
                f"{len(errors)} annotation(s) cannot be written to Phoenix: {errors[0]['msg']}",
                errors=errors[:MAX_LISTED_ERRORS],
            )
        return bodies

    @staticmethod
    def _wire_item(spec: _Kind, item: AnnotationWrite) -> dict[str, Any]:
        return {
            spec.row_field: item.subject_id,
            "name": item.name,
            "annotator_kind": item.annotator_kind.value,
            "result": {"label": item.label, "score": item.score, "explanation": item.explanation},
            "metadata": item.metadata,
            "identifier": item.identifier,  # a string always: Phoenix refuses null (422)
        }

    async def _post_batch(
        self, spec: _Kind, bodies: list[bytes], items: Sequence[AnnotationWrite]
    ) -> list[str]:
        content = b'{"data":[' + b",".join(bodies) + b"]}"
        request = self._client.build_request(
            "POST",
            spec.write_path,
            params={"sync": "true"},
            content=content,
            headers={"Content-Type": "application/json"},
        )
        async with self._semaphore:
            response = await send(self._client, request, source=self.name)
        if response.status_code == 404:
            match = WRITE_NOT_FOUND.match(_text(response))
            if match:
                unknown = _unknown_ids(match.group("ids"), [item.subject_id for item in items])
                raise self._not_found(spec.kind, unknown)
        self._raise_for_status(response)
        self._require_json(response, spec.write_path)
        body = self._validate(_INSERTED, parse_json(response, source=self.name), what="write answer")
        gids = [row["id"] for row in body["data"]]
        if len(gids) != len(items):
            raise SourceProtocolError(
                f"{self.name}: Phoenix answered {len(gids)} ids for {len(items)} written annotations",
                source=self.name,
            )
        return gids

    async def _preflight(self, items: Sequence[AnnotationWrite]) -> None:
        """Raise SourceNotFoundError unless every subject exists in the configured project."""
        wanted: dict[SubjectKind, list[str]] = {}
        for item in items:
            wanted.setdefault(item.subject_kind, []).append(item.subject_id)
        found = await gather([self._existing(kind, _unique(ids)) for kind, ids in wanted.items()])
        missing: list[tuple[SubjectKind, str]] = []
        for (kind, ids), present in zip(wanted.items(), found, strict=True):
            missing.extend((kind, subject_id) for subject_id in _unique(ids) if subject_id not in present)
        if missing:
            kinds = {kind for kind, _ in missing}
            raise self._not_found(kinds.pop() if len(kinds) == 1 else None, [s for _, s in missing], missing)

    async def _existing(self, kind: SubjectKind, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` exist in the configured project."""
        if kind is SubjectKind.SPAN:
            path, param = f"{self._project_path}/spans", "span_id"
            costs = [_encoded_len(param, v) for v in ids]
            overhead = len(urlencode([("limit", str(PREFLIGHT_PAGE_SIZE))]))
        else:
            # Sessions and traces have no id-list parameter; Phoenix's filter expressions
            # (`session_id in [...]`) do the same in one request per chunk, scoped to the project.
            path = f"{self._project_path}/{'sessions' if kind is SubjectKind.SESSION else 'traces'}"
            param = "filter"
            costs = [len(urlencode([("f", repr(v) + ", ")])) - 2 for v in ids]
            overhead = len(urlencode([("filter", f"{kind.value}_id in []"), ("limit", "1000")]))
        fixed = len(str(self._client.build_request("GET", path).url)) + overhead + CURSOR_RESERVE_BYTES
        chunks = chunk_values(ids, costs, budget=MAX_URL_BYTES - fixed, max_count=PREFLIGHT_PAGE_SIZE)
        results = await gather([self._existing_chunk(kind, path, param, chunk) for chunk in chunks])
        return set().union(*results)

    async def _existing_chunk(self, kind: SubjectKind, path: str, param: str, chunk: list[str]) -> set[str]:
        base: _Query
        if param == "filter":
            base = [("filter", f"{kind.value}_id in {chunk!r}")]
        else:
            base = [(param, v) for v in chunk]
        base.append(("limit", str(PREFLIGHT_PAGE_SIZE)))
        present: set[str] = set()
        cursor: str | None = None
        for _ in range(len(chunk) + 1):  # ids are unique, so one page; bounded in any case
            response = await self._get(path, base if cursor is None else [*base, ("cursor", cursor)])
            self._raise_for_status(response)
            self._require_json(response, path)
            body = self._validate(_ANY_PAGE, parse_json(response, source=self.name), what="pre-flight page")
            try:
                for row in body["data"]:
                    present.add(
                        row["context"]["span_id"] if kind is SubjectKind.SPAN else row[f"{kind.value}_id"]
                    )
                cursor = body.get("next_cursor")
            except (KeyError, TypeError) as exc:
                raise SourceProtocolError(
                    f"{self.name}: unexpected answer from GET {path}: missing {exc}", source=self.name
                ) from exc
            if not cursor:
                break
        return present

    def _not_found(
        self,
        kind: SubjectKind | None,
        ids: Sequence[str],
        pairs: Sequence[tuple[SubjectKind, str]] | None = None,
    ) -> SourceNotFoundError:
        pairs = pairs if pairs is not None else [(kind or SubjectKind.SESSION, i) for i in ids]
        one = len(ids) == 1
        noun = (kind.value if kind is not None else "subject") + ("" if one else "s")
        shown = ", ".join(ids[:MAX_LISTED_ERRORS]) + (" ..." if len(ids) > MAX_LISTED_ERRORS else "")
        return SourceNotFoundError(
            f"{self.name}: {len(ids)} {noun} {'does' if one else 'do'} not exist in Phoenix project "
            f"{self._config.project!r}: {shown}; nothing was written",
            source=self.name,
            upstream_status=404,
            errors=[{"subject_kind": k.value, "subject_id": i, "msg": "unknown subject"} for k, i in pairs],
        )

    # --- health -------------------------------------------------------------------------------

    async def health(self) -> HealthReport:
        """Probe version (public) and the project (authenticated); never raises."""
        started = time.perf_counter()
        version: str | None = None
        try:
            async with self._semaphore:
                response = await send(
                    self._client,
                    self._client.build_request("GET", "/arize_phoenix_version"),
                    source=self.name,
                )
            self._raise_for_status(response)
            ctype = response.headers.get("content-type", "")
            if not ctype.startswith("text/plain"):
                raise SourceProtocolError(
                    f"{self.name}: /arize_phoenix_version answered {ctype or 'no content type'}; "
                    "is base_url a Phoenix server?",
                    source=self.name,
                )
            version = response.text.strip()
            async with self._semaphore:
                response = await send(
                    self._client, self._client.build_request("GET", self._project_path), source=self.name
                )
            self._raise_for_status(response)
            self._require_json(response, self._project_path)
            project = self._validate(_PROJECT, parse_json(response, source=self.name), what="project")
        except GatewayError as exc:
            return HealthReport(ok=False, latency_ms=_ms_since(started), version=version, detail=exc.detail)
        except Exception as exc:  # health() must never raise: report, don't propagate
            log.warning(
                "phoenix health probe failed", extra={"source": self.name, "error": type(exc).__name__}
            )
            return HealthReport(
                ok=False,
                latency_ms=_ms_since(started),
                version=version,
                detail=f"{self.name}: health probe failed: {type(exc).__name__}",
            )
        return HealthReport(
            ok=True,
            latency_ms=_ms_since(started),
            version=version,
            extra={"project": project["data"]["name"], "project_id": project["data"]["id"]},
        )

    # --- classification -----------------------------------------------------------------------

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Raise the SourceError an unsuccessful status means; return on 2xx."""
        status = response.status_code
        if 200 <= status < 300:
            return
        where = f"{response.request.method} {response.request.url.path}"
        message = _message(response)
        if status in (401, 403):
            raise SourceAuthError(
                f"{self.name}: Phoenix refused the credentials (HTTP {status} on {where}): {message}",
                source=self.name,
                upstream_status=status,
            )
        if status == 429:
            raise SourceRateLimitedError(
                f"{self.name}: Phoenix is rate limiting (HTTP 429 on {where})",
                source=self.name,
                retry_after=_retry_after(response),
            )
        if status >= 500:
            raise SourceUnavailableError(
                f"{self.name}: Phoenix failed (HTTP {status} on {where}): {message}",
                source=self.name,
                upstream_status=status,
            )
        if status == 404:
            raise SourceNotFoundError(
                f"{self.name}: {message} (HTTP 404 on {where})", source=self.name, upstream_status=404
            )
        if 400 <= status < 500:
            raise SourceRequestError(
                f"{self.name}: Phoenix rejected the request (HTTP {status} on {where}): {message}",
                source=self.name,
                upstream_status=status,
                errors=_detail_errors(response),
            )
        raise SourceProtocolError(
            f"{self.name}: unexpected HTTP {status} from Phoenix on {where}",
            source=self.name,
            upstream_status=status,
        )

    def _require_json(self, response: httpx.Response, path: str) -> None:
        """A success must be JSON: Phoenix's web UI answers 200 text/html to unknown routes."""
        if is_json(response):
            return
        ctype = response.headers.get("content-type", "no content type")
        hint = " (Phoenix's web UI page: wrong route or base_url)" if ctype.startswith("text/html") else ""
        raise SourceProtocolError(
            f"{self.name}: expected JSON from GET/POST {path} but got {ctype}{hint}",
            source=self.name,
            upstream_status=response.status_code,
        )

    def _validate(self, adapter: TypeAdapter[T], data: Any, *, what: str) -> T:
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            errors = [
                {"loc": _loc(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)[:MAX_LISTED_ERRORS]
            ]
            first = errors[0]
            raise SourceProtocolError(
                f"{self.name}: invalid {what} from Phoenix: field {first['loc']}: {first['msg']}",
                source=self.name,
                errors=errors,
            ) from None


# --- helpers ------------------------------------------------------------------------------------


def _text(response: httpx.Response) -> str:
    ctype = response.headers.get("content-type", "")
    return response.text if ctype.startswith("text/plain") else ""


def _message(response: httpx.Response) -> str:
    """Phoenix's error message: the text/plain body, or the JSON ``detail``, shortened."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("text/plain"):
        message = response.text.strip()
    elif is_json(response):
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return "malformed JSON error body"
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, list):
            message = "; ".join(
                f"{_loc(e.get('loc', ()))}: {e.get('msg', '')}" if isinstance(e, dict) else str(e)
                for e in detail
            )
        else:
            message = str(detail if detail is not None else body)
    elif ctype.startswith("text/html"):
        message = "an HTML page"
    else:
        message = f"a {ctype or 'body without content type'}"
    return message[:MAX_MESSAGE_CHARS] or "(empty body)"


def _detail_errors(response: httpx.Response) -> list[dict[str, Any]] | None:
    """The entries of FastAPI's ``{"detail": [...]}`` as ``{loc, msg, type}`` (input dropped)."""
    if not is_json(response):
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, list):
        return None
    return [
        {"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in detail[:MAX_LISTED_ERRORS]
        if isinstance(e, dict)
    ] or None


def _loc(loc: Iterable[Any]) -> str:
    """``("data", 3, "created_at")`` → ``data[3].created_at``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def _retry_after(response: httpx.Response) -> float | None:
    """The wait a 429 asks for: ``Retry-After`` (seconds or an HTTP date), else the seconds of
    ``X-RateLimit-Reset`` (what rate-limiting proxies in front of Phoenix commonly send)."""
    value = response.headers.get("retry-after")
    if not value:
        reset = response.headers.get("x-ratelimit-reset")
        try:
            return max(0.0, float(reset)) if reset else None
        except ValueError:
            return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _unknown_ids(listed: str, sent: Sequence[str]) -> list[str]:
    """The ids in Phoenix's "Sessions with IDs a, b do not exist." that we sent, in our order."""
    pieces = set(listed.split(", "))
    unknown = [s for s in _unique(sent) if s in pieces]
    # An id containing ", " splits wrongly; fall back to what the message contains.
    return unknown or [s for s in _unique(sent) if s in listed] or [listed]


def _item_error(index: int, field_name: str, msg: str) -> dict[str, Any]:
    return {"loc": ["annotations", index, field_name], "msg": msg}


def _amend(exc: GatewayError, suffix: str) -> None:
    exc.detail += suffix
    exc.args = (exc.detail,)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
