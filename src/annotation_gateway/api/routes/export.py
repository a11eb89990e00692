"""``GET /v1/annotations/export``: every matching annotation, streamed (SPEC §3, issue 6).

Contract:
- the filters are exactly those of ``GET /v1/annotations`` (parsed by the same
  :func:`~annotation_gateway.api.schemas.parse_query_params`, same limits and errors), plus
  ``format=jsonl|csv`` (default ``jsonl``; another value → 422 ``validation_error``).
  ``limit`` and ``cursor`` are refused (422): the export pages by itself;
- the answer streams :meth:`Federation.stream`: the subject ids in chunks, a few fetched at
  once, each chunk written — a slice of :data:`CHUNK_SIZE` annotations at a time — as it
  arrives, so memory holds a few chunks, never the whole export, and nothing an export reads is
  kept in the cache. **Order**: by subject chunk (subject ids in code-point order; a chunk holds
  one subject first, then as many as make ~5,000 annotations, at most 50),
  then ``updated_at`` descending and ``id`` within a chunk; a global order would need every
  annotation before the first byte (tests/api/test_export.py measures the memory);
- ``jsonl`` (``application/x-ndjson``): one canonical annotation per line, exactly the JSON of
  ``GET /v1/annotations``'s ``data[]`` items. ``csv`` (``text/csv``): a header, then one RFC 4180
  record per annotation with the columns :data:`CSV_COLUMNS` (empty cell = null; scores written
  with ``repr`` so they parse back exactly; ``metadata`` and ``extensions`` — and ``raw`` with
  ``include=raw`` — as compact JSON strings);
- ``Content-Disposition: attachment; filename="annotations.jsonl|csv"``;
- failures: a failing first fetch (``partial=deny``, every source failed, 403, 413...) is a
  problem answer **before the first byte**. Once streaming has begun the status cannot change,
  so a source that fails (a page marked partial, or an error on a later page) is reported by a
  **trailer**, the last line of the body, and the export is never silently short:

  * JSONL: ``{"_export": {"partial": true, "sources": [{"source": ..., "error": {problem}}]}}``;
  * CSV: a record whose first cell is ``#_export`` and whose second cell is that same JSON
    object (``{"partial": true, "sources": [...]}``).

  A source answered from stale cache entries (allowed as for ``GET /v1/annotations``) is named
  in the trailer too, as ``{"source": ..., "stale": true}`` (``partial`` stays false when
  nothing failed). A complete, fresh export has no trailer. With ``partial=allow`` a source
  failing from the start shows in the trailer too (the other sources' annotations are still
  exported).
- ``Cache-Control: no-cache`` bypasses the cache; ``max-stale=N`` opts into stale answers.

:class:`ExportWriter` holds the serialization; the CLI's ``export`` command writes through it too.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep, FederationDep
from annotation_gateway.api.problems import validation_problem
from annotation_gateway.api.routes.annotations import cache_policy
from annotation_gateway.api.schemas import (
    PROBLEM_RESPONSES,
    AnnotationQueryParams,
    parse_query_params,
    query_items,
    query_parameters_openapi,
)
from annotation_gateway.errors import GatewayError, SourceError
from annotation_gateway.federation import QueryPage
from annotation_gateway.records import Record, json_lines

__all__ = [
    "CSV_COLUMNS",
    "ExportFormat",
    "ExportWriter",
    "router",
    "stream_export",
]

router = APIRouter(prefix="/v1/annotations", tags=["annotations"])

CHUNK_SIZE = 200
"""Annotations per chunk it sends (each page is serialized a slice at a time)."""

CSV_COLUMNS = (
    "id",
    "source",
    "provider",
    "subject_kind",
    "subject_id",
    "project",
    "name",
    "label",
    "score",
    "explanation",
    "annotator_kind",
    "annotator_id",
    "identifier",
    "queue_id",
    "queue_name",
    "created_at",
    "updated_at",
    "metadata",
    "extensions",
)
"""The CSV header (``raw`` is appended with ``include=raw``)."""

TRAILER_KEY = "_export"
CSV_TRAILER_CELL = "#_export"


class ExportFormat(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


MEDIA_TYPES = {ExportFormat.JSONL: "application/x-ndjson", ExportFormat.CSV: "text/csv; charset=utf-8"}


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _text(value: str | None) -> str:
    return value if value is not None else ""


class ExportWriter:
    """Serializes an export: :meth:`header`, then :meth:`page` per page, then :meth:`trailer`.

    Also collects the sources that failed on any page (:meth:`note`), so the trailer can name them.
    """

    def __init__(self, fmt: ExportFormat, *, include_raw: bool = False) -> None:
        self.format = fmt
        self.include_raw = include_raw
        self.failed: dict[str, dict[str, Any]] = {}
        self.stale: set[str] = set()
        self.count = 0

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def header(self) -> bytes:
        if self.format is ExportFormat.JSONL:
            return b""
        columns = (*CSV_COLUMNS, "raw") if self.include_raw else CSV_COLUMNS
        return self._csv([list(columns)])

    def note(self, page: QueryPage) -> None:
        """Remember every source this page reports as failed, or answered from stale cache."""
        for status in page.sources:
            if status.status == "error":
                self.failed[status.source] = status.error or {}
            elif status.stale:
                self.stale.add(status.source)

    def note_error(self, error: GatewayError) -> None:
        """Remember a failure that ended the export early (an error raised by a later page)."""
        source = error.source if isinstance(error, SourceError) and error.source else "(gateway)"
        self.failed[source] = error.problem()

    def page(self, records: Sequence[Record]) -> bytes:
        """The bytes of ``records``: JSONL lines are the records' JSON, written by one msgspec
        call; a CSV row is made from each record's JSON (no canonical model is built)."""
        self.count += len(records)
        if self.format is ExportFormat.JSONL:
            return json_lines(records)
        return self._csv(self._row(record.as_dict()) for record in records)

    def _row(self, a: dict[str, Any]) -> list[str]:
        subject, annotator, queue = a["subject"], a["annotator"], a.get("queue")
        score = a.get("score")
        row = [
            a["id"],
            a["source"],
            a["provider"],
            subject["kind"],
            subject["id"],
            subject.get("project") or "",
            a["name"],
            _text(a.get("label")),
            repr(float(score)) if score is not None else "",
            _text(a.get("explanation")),
            annotator["kind"],
            annotator.get("id") or "",
            a.get("identifier", ""),
            queue["id"] if queue is not None else "",
            (queue.get("name") or "") if queue is not None else "",
            a["created_at"],
            a["updated_at"],
            _json(a.get("metadata", {})),
            _json(a.get("extensions", {})),
        ]
        if self.include_raw:
            raw = a.get("raw")
            row.append(_json(raw) if raw is not None else "")
        return row

    @staticmethod
    def _csv(records: Iterable[list[str]]) -> bytes:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, lineterminator="\r\n").writerows(records)
        return buffer.getvalue().encode()

    def trailer(self) -> bytes:
        """The trailer naming the failed sources and those served from stale cache entries;
        empty for a complete, fresh export."""
        if not self.failed and not self.stale:
            return b""
        sources: list[dict[str, Any]] = [
            {"source": name, "error": error} for name, error in sorted(self.failed.items())
        ]
        sources += [{"source": name, "stale": True} for name in sorted(self.stale - set(self.failed))]
        body = {"partial": bool(self.failed), "sources": sources}
        if self.format is ExportFormat.JSONL:
            return orjson.dumps({TRAILER_KEY: body}) + b"\n"
        return self._csv([[CSV_TRAILER_CELL, _json(body)]])


async def stream_export(
    writer: ExportWriter, first: QueryPage, rest: AsyncIterator[QueryPage]
) -> AsyncIterator[bytes]:
    """The export's bytes: header, each page (``first`` then ``rest``), and the trailer if any.

    A ``GatewayError`` raised by a later page ends the data and is reported in the trailer.
    """
    header = writer.header()
    if header:
        yield header
    page: QueryPage | None = first
    del first  # only ``page`` refers to the current page: each is freed once it is sent
    try:
        while page is not None:
            writer.note(page)
            data = page.records
            page = None  # drop the page before waiting for the next one
            # Serialized a slice at a time: a chunk in flight is a fraction of a page.
            for start in range(0, len(data), CHUNK_SIZE):
                chunk = writer.page(data[start : start + CHUNK_SIZE])
                yield chunk
                del chunk
            del data
            try:
                page = await anext(rest)
            except StopAsyncIteration:
                page = None
    except GatewayError as exc:
        writer.note_error(exc)
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
    trailer = writer.trailer()
    if trailer:
        yield trailer


_D_FORMAT = (
    "`jsonl` (default: one canonical annotation per line) or `csv` (the documented flat columns; "
    "metadata and extensions as JSON strings)."
)


def _parameters() -> list[dict[str, Any]]:
    params = [
        p for p in query_parameters_openapi(AnnotationQueryParams) if p["name"] not in ("limit", "cursor")
    ]
    params.insert(
        0,
        {
            "name": "format",
            "in": "query",
            "required": False,
            "description": _D_FORMAT,
            "schema": {"type": "string", "enum": [f.value for f in ExportFormat], "default": "jsonl"},
        },
    )
    return params


@router.get(
    "/export",
    operation_id="export_annotations",
    summary="Export every matching annotation as JSON Lines or CSV (streamed)",
    description="The filters of `GET /v1/annotations` (without `limit` and `cursor`): every page "
    "is read and streamed as it arrives, so memory stays flat however large the export. A "
    "failure before the first byte is a problem answer; a source failing once streaming has "
    'begun is named in a trailer, the last line: JSONL `{"_export": {"partial": true, '
    '"sources": [...]}}`, CSV a record `#_export,<the same JSON>`. No trailer means complete.',
    responses={
        200: {
            "description": "The export, as an attachment.",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        **PROBLEM_RESPONSES,
    },
    response_class=Response,
    openapi_extra={"parameters": _parameters(), **BEARER_SECURITY},
)
async def export_annotations(request: Request, principal: AuthDep, federation: FederationDep) -> Response:
    items = query_items(request.scope["query_string"])
    fmt = ExportFormat.JSONL
    filters: list[tuple[str, str]] = []
    refused: list[Mapping[str, Any]] = []
    for key, value in items:
        if key == "format":
            try:
                fmt = ExportFormat(value)
            except ValueError:
                refused.append({"loc": ("query", "format"), "msg": "must be jsonl or csv", "type": "enum"})
        elif key in ("limit", "cursor"):
            msg = "not allowed: the export pages by itself"
            refused.append({"loc": ("query", key), "msg": msg, "type": "extra_forbidden"})
        else:
            filters.append((key, value))
    if refused:
        raise validation_problem(refused)
    params = parse_query_params(filters)
    query = cache_policy(request).apply(params.to_query(use_cache=True))
    pages = federation.stream(query, allowed_sources=principal.allowed_sources)
    # The first page before the first byte: its errors are still a proper problem answer.
    first = await anext(pages)
    writer = ExportWriter(fmt, include_raw=query.include_raw)
    return StreamingResponse(
        stream_export(writer, first, pages),
        media_type=writer.media_type,
        headers={"Content-Disposition": f'attachment; filename="annotations.{fmt.value}"'},
    )
