"""Phoenix's wire: the JSON shapes its REST API answers and takes, and how its errors read.

Contract:

- An annotation page is decoded in one of two ways, both validating: first strictly, from its
  bytes into msgspec ``Struct`` rows (:func:`strict_rows`, :class:`StrictRow`: the shape Phoenix
  20.26 answers, no field more, ~0.9 µs a row, times as stdlib UTC datetimes); when that fails —
  a field this module does not know, a value only pydantic's lax mode takes, or an answer that
  is wrong — through the TypedDicts below with pydantic's ``TypeAdapter`` (``extra="allow"``
  keeps the unknown fields, for ``extensions.phoenix``; its errors are the ones reported), whose
  rows :func:`lenient_rows` then holds as the same Structs plus their :class:`Extras`. A row
  either way has every type the canonical model needs, so :mod:`.mapping` builds the record from
  it without a second validation.
- :data:`KINDS` is everything that differs between session, trace and span annotations: the
  read path suffix, the id parameter, the row's id field, the write path, the page shape.
- Phoenix's errors: a ``text/plain`` sentence (unknown project, too many ids, "None of the
  supplied ..._ids exist in this project", "Sessions with IDs ... do not exist.") or FastAPI's
  ``{"detail": [{loc, msg, type}]}`` (422). :func:`error_message` is the sentence for a detail,
  :func:`error_items` the ``errors[]`` items (the toolkit's one shape).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, NotRequired

import httpx
import msgspec
import orjson
from pydantic import ConfigDict as PydanticConfig
from pydantic import TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.base import unknown_fields
from annotation_gateway.providers.http import ErrorItem, body_summary, fastapi_items, is_json, loc_text
from annotation_gateway.providers.http.outcomes import clip

__all__ = [
    "ANY_PAGE",
    "INSERTED",
    "KINDS",
    "KNOWN_RESULT_FIELDS",
    "NO_SUCH_SUBJECTS",
    "PHOENIX_KINDS",
    "PROJECT",
    "SESSION_LIST",
    "TRACE_LIST",
    "WRITE_NOT_FOUND",
    "Extras",
    "Kind",
    "StrictRow",
    "error_items",
    "error_message",
    "lenient_rows",
    "plain_text",
    "strict_rows",
    "unknown_ids",
]

NO_SUCH_SUBJECTS = re.compile(r"^None of the supplied (session|trace|span)_ids exist in this project")
"""A read's 404 that means "no annotations" (every id unknown), not an error."""
WRITE_NOT_FOUND = re.compile(r"^(Sessions|Traces|Spans) with IDs (?P<ids>.*) do not exist\.?\s*$", re.S)
"""A write's 404 naming the unknown subjects."""

_LAX = PydanticConfig(extra="allow")


@with_config(_LAX)
class Result(TypedDict, total=False):
    label: str | None
    score: float | None
    explanation: str | None


@with_config(_LAX)
class Row(TypedDict):
    id: str
    created_at: datetime
    updated_at: datetime
    source: str
    user_id: str | None
    name: str
    annotator_kind: str
    result: NotRequired[Result | None]
    metadata: NotRequired[dict[str, Any] | None]
    identifier: NotRequired[str]


@with_config(_LAX)
class SessionRow(Row):
    session_id: str


@with_config(_LAX)
class TraceRow(Row):
    trace_id: str


@with_config(_LAX)
class SpanRow(Row):
    span_id: str


class SessionPage(TypedDict):
    data: list[SessionRow]
    next_cursor: str | None


class TracePage(TypedDict):
    data: list[TraceRow]
    next_cursor: str | None


class SpanPage(TypedDict):
    data: list[SpanRow]
    next_cursor: str | None


class StrictResult(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A row's ``result``, strictly (the fast path's twin of :class:`Result`)."""

    label: str | None = None
    score: float | None = None
    explanation: str | None = None


class StrictRow(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    """An annotation row as Phoenix 20.26 sends it, no field more (the twin of :class:`Row`).

    ``gc=False``: decoded JSON holds no cycles, and a 10,000-row page of tracked objects made the
    cyclic collector a quarter of a big search's samples (see ``records.Record``)."""

    id: str
    created_at: datetime
    updated_at: datetime
    source: str
    user_id: str | None
    name: str
    annotator_kind: str
    result: StrictResult | None = None
    metadata: dict[str, Any] | None = None
    identifier: str = ""


class StrictSessionRow(StrictRow, kw_only=True):
    session_id: str


class StrictTraceRow(StrictRow, kw_only=True):
    trace_id: str


class StrictSpanRow(StrictRow, kw_only=True):
    span_id: str


class StrictSessionPage(msgspec.Struct, gc=False):
    data: list[StrictSessionRow]
    next_cursor: str | None


class StrictTracePage(msgspec.Struct, gc=False):
    data: list[StrictTraceRow]
    next_cursor: str | None


class StrictSpanPage(msgspec.Struct, gc=False):
    data: list[StrictSpanRow]
    next_cursor: str | None


class Extras(NamedTuple):
    """The fields of one row this module does not know (kept in ``extensions.phoenix``)."""

    row: dict[str, Any] | None
    result: dict[str, Any] | None


_ONLY_THESE = PydanticConfig(extra="ignore")
"""Listing rows: discovery reads two fields; the rest (a session's traces, token counts) is
skipped by the decoder instead of being validated and kept (the bench's profile of a scope's
first page had the listing decode as its largest CPU item)."""


@with_config(_ONLY_THESE)
class ListedSession(TypedDict):
    """A row of ``GET /v1/projects/{p}/sessions`` (only what discovery reads)."""

    session_id: str
    start_time: datetime


@with_config(_ONLY_THESE)
class ListedTrace(TypedDict):
    """A row of ``GET /v1/projects/{p}/traces`` (only what discovery reads)."""

    trace_id: str
    start_time: datetime


class SessionList(TypedDict):
    data: list[ListedSession]
    next_cursor: str | None


class TraceList(TypedDict):
    data: list[ListedTrace]
    next_cursor: str | None


class Inserted(TypedDict):
    id: str


class InsertedBody(TypedDict):
    data: list[Inserted]


class Project(TypedDict):
    id: str
    name: str


class ProjectBody(TypedDict):
    data: Project


KNOWN_RESULT_FIELDS = frozenset(Result.__required_keys__ | Result.__optional_keys__)
INSERTED = TypeAdapter(InsertedBody)
PROJECT = TypeAdapter(ProjectBody)
ANY_PAGE = TypeAdapter(dict[str, Any])
SESSION_LIST = TypeAdapter(SessionList)
TRACE_LIST = TypeAdapter(TraceList)


@dataclass(frozen=True, slots=True)
class Kind:
    """Everything that differs between session, trace and span annotations."""

    kind: SubjectKind
    read_suffix: str
    id_param: str
    row_field: str
    write_path: str
    noun: str
    page: TypeAdapter[Any]
    strict_page: type[StrictSessionPage | StrictTracePage | StrictSpanPage]
    row_type: type[StrictRow]
    kind_value: str = field(init=False)
    """``kind.value``, read once per row mapped (an enum's ``.value`` is a descriptor call)."""
    strict: msgspec.json.Decoder[StrictSessionPage | StrictTracePage | StrictSpanPage] = field(init=False)
    known_fields: frozenset[str] = field(init=False)
    """The row fields this module knows for this kind (the others are kept as extras)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind_value", self.kind.value)
        object.__setattr__(self, "strict", msgspec.json.Decoder(self.strict_page))
        object.__setattr__(self, "known_fields", frozenset(self.row_type.__struct_fields__))


KINDS: dict[SubjectKind, Kind] = {
    SubjectKind.SESSION: Kind(
        SubjectKind.SESSION,
        "session_annotations",
        "session_ids",
        "session_id",
        "/v1/session_annotations",
        "Sessions",
        TypeAdapter(SessionPage),
        StrictSessionPage,
        StrictSessionRow,
    ),
    SubjectKind.TRACE: Kind(
        SubjectKind.TRACE,
        "trace_annotations",
        "trace_ids",
        "trace_id",
        "/v1/trace_annotations",
        "Traces",
        TypeAdapter(TracePage),
        StrictTracePage,
        StrictTraceRow,
    ),
    SubjectKind.SPAN: Kind(
        SubjectKind.SPAN,
        "span_annotations",
        "span_ids",
        "span_id",
        "/v1/span_annotations",
        "Spans",
        TypeAdapter(SpanPage),
        StrictSpanPage,
        StrictSpanRow,
    ),
}
PHOENIX_KINDS = frozenset(KINDS)


def strict_rows(spec: Kind, content: bytes) -> tuple[Sequence[StrictRow], str | None] | None:
    """The rows and next cursor of a page in exactly the shape Phoenix 20.26 answers, decoded
    from its bytes; ``None`` when the page is anything else (the caller then decodes it through
    pydantic, which keeps unknown fields and describes what is wrong)."""
    try:
        page = spec.strict.decode(content)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return page.data, page.next_cursor


def lenient_rows(
    spec: Kind, rows: Sequence[Mapping[str, Any]]
) -> tuple[list[StrictRow], list[Extras | None]]:
    """Rows pydantic validated (``extra="allow"``) as the strict rows plus, per row, the fields
    this module does not know (``None`` for a row without any)."""
    held: list[StrictRow] = []
    extras: list[Extras | None] = []
    for row in rows:
        result = row.get("result")
        extra_row = unknown_fields(row, spec.known_fields)
        extra_result = unknown_fields(result, KNOWN_RESULT_FIELDS) if result else None
        fields = dict(row) if extra_row is None else {k: v for k, v in row.items() if k in spec.known_fields}
        if extra_result is not None and result is not None:
            fields["result"] = {k: v for k, v in result.items() if k in KNOWN_RESULT_FIELDS}
        held.append(msgspec.convert(fields, spec.row_type))
        extras.append(None if extra_row is None and extra_result is None else Extras(extra_row, extra_result))
    return held, extras


# --- Phoenix's errors ---------------------------------------------------------------------------


def plain_text(response: httpx.Response) -> str:
    """The body of a ``text/plain`` answer (Phoenix's error sentences), else ``""``."""
    ctype = response.headers.get("content-type", "")
    return response.text if ctype.startswith("text/plain") else ""


def _json_body(response: httpx.Response) -> Any:
    if not is_json(response):
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def error_message(response: httpx.Response) -> str:
    """Phoenix's error message: the text/plain body, or the JSON ``detail``, shortened."""
    body = _json_body(response)
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):
            return clip(
                "; ".join(
                    f"{loc_text(e.get('loc', ()))}: {e.get('msg', '')}" if isinstance(e, dict) else str(e)
                    for e in detail
                )
            )
        return clip(str(detail))
    return body_summary(response)


def error_items(response: httpx.Response) -> list[ErrorItem]:
    """The items of FastAPI's ``{"detail": [...]}`` (a 422), in the one ``errors[]`` shape."""
    return fastapi_items(_json_body(response))


def unknown_ids(listed: str, sent: Sequence[str]) -> list[str]:
    """The ids in Phoenix's "Sessions with IDs a, b do not exist." that we sent, in our order."""
    unique = list(dict.fromkeys(sent))
    pieces = set(listed.split(", "))
    known = [s for s in unique if s in pieces]
    # An id containing ", " splits wrongly; fall back to what the message contains.
    return known or [s for s in unique if s in listed] or [listed]
