"""A latency-controlled stand-in for Arize Phoenix's annotation read API (benchmarks only).

The real Phoenix (``make phoenix``) is a large server whose own latency varies by tens of
milliseconds from run to run, and it takes ~15 s to start: a poor *controlled* upstream for a
benchmark that must attribute every millisecond. This tiny raw-ASGI app answers the routes the
gateway reads with Phoenix 20.26.1's exact wire format (copied from the recorded transcripts in
``tests/fixtures/contracts/phoenix/noauth/``):

- ``GET /v1/projects/{project}/session_annotations`` (``session_ids``), ``.../trace_annotations``
  (``trace_ids``) and ``.../span_annotations`` (``span_ids``) with repeatable ids, ``identifier``,
  ``include_annotation_names``, ``exclude_annotation_names``, ``cursor`` and ``limit`` (default 10,
  1..10000): rows newest first (row id descending), ``next_cursor`` = GlobalID of the first row of
  the next page, ``null`` on the last; 404 ``text/plain`` for an unknown project and for "None of
  the supplied session_ids exist in this project"; 422 ``text/plain`` for a missing filter, too
  many ids or a bad cursor, 422 JSON ``{"detail": [...]}`` for a bad ``limit``;
- ``GET /v1/projects/{project}/sessions`` and ``.../traces`` (the listings scope discovery reads,
  shapes from ``tests/fixtures/contracts/phoenix/scope/``): ``limit`` (default 100, 1..1000: a
  bad one is a 422 JSON ``{"detail": [...]}``), ``cursor``, ``order``; sessions in row id order
  (ascending by default), ``next_cursor`` = the GlobalID of the next page's first session, a bad
  cursor 422 ``Invalid cursor format: ...``; traces by start time (newest first by default,
  then row id), ``start_time`` (inclusive) and ``end_time`` (exclusive) bounding the start time,
  ``next_cursor`` = base64 of ``"{row}:DATETIME:{start_time}"`` of the next page's first trace,
  a bad cursor 422 ``Invalid cursor``; 404 ``text/plain`` for an unknown project. The listed
  subjects are the seeded ones: every subject seeded under ``"kind": "session"`` is a session
  (with a start time, one minute per session row, and one trace of its own), every subject
  seeded under ``"kind": "trace"`` a trace, and each session's own trace is a trace of the
  project too (it has no annotations, as most traces in a real project). ``filter``,
  ``session_identifier`` and ``sort=latency_ms`` are not implemented: 400 ``text/plain`` says so
  instead of answering unfiltered;
- ``GET /arize_phoenix_version`` (``text/plain``), ``GET /v1/projects``;
- any other path: 200 ``text/html`` (Phoenix's web UI answers unknown routes that way);
- ``x-phoenix-server-version: 20.26.1`` on every answer.

Bench controls (not Phoenix's): ``POST /_bench/seed`` generates a deterministic data set,
``POST /_bench/control`` sets ``latency_ms`` (added to every annotation read and listing) and
``fail`` (answer them with 500), ``GET /_bench/stats`` returns request counters (and
``listing_window_ms``: from the first listing call's arrival to the last one's answer),
``POST /_bench/reset`` zeroes them. Serialized answers are memoized per query string so that the
stand-in costs little CPU next to the gateway it feeds.

A seed with ``"lazy": true`` registers its subjects without building their rows: each holds a
range of row ids, and its rows — the very rows an eager seed would have built — are generated
when a read asks for them. So the 1,000,000-annotation export data set costs the stand-in no
memory and no seeding time; answers that read lazy subjects are not memoized (each is asked
once by a cold export, and memoizing them would hold the whole data set as bytes).

Run: ``python -m bench.phoenix_standin --host 127.0.0.1 --port 6106 [--latency-ms 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

PHOENIX_VERSION = "20.26.1"
MAX_IDS = 1000
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 10
MEMO_MAX_ENTRIES = 20_000
LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000
SESSION_SPACING_S = 60
"""Seconds between the start times of consecutive session (and trace) rows."""
SESSION_LENGTH_US = 60_500_000
TRACE_LENGTH_US = 500_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KINDS: dict[str, tuple[str, str, str]] = {
    # route -> (subject kind, id field / query parameter stem, GlobalID type name)
    "session_annotations": ("session", "session_id", "ProjectSessionAnnotation"),
    "trace_annotations": ("trace", "trace_id", "TraceAnnotation"),
    "span_annotations": ("span", "span_id", "SpanAnnotation"),
}
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
LABELS = ("correct", "incorrect", "partial", "helpful", "unhelpful")
ANNOTATOR_KINDS = ("HUMAN", "LLM", "CODE")


def global_id(type_name: str, row_id: int) -> str:
    """Phoenix's GlobalID: standard base64 (with ``=``) of ``"{Type}:{id}"``."""
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def parse_global_id(value: str, type_name: str) -> int | None:
    try:
        decoded = base64.b64decode(value.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    prefix, _, number = decoded.partition(":")
    if prefix != type_name or not number.isdigit():
        return None
    return int(number)


@functools.lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return (BASE_TIME + timedelta(days=days)).date().isoformat()


def _timestamp_us(offset_us: int) -> str:
    """``(BASE_TIME + offset_us microseconds).isoformat()`` (Phoenix's listing timestamps)."""
    seconds, micros = divmod(offset_us, 1_000_000)
    stamp = _timestamp(seconds)
    return stamp if not micros else f"{stamp[:-6]}.{micros:06d}+00:00"


def _timestamp(offset_s: int) -> str:
    """``(BASE_TIME + offset_s seconds).isoformat()``, without building a datetime per row."""
    days, rest = divmod(offset_s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{_day(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}+00:00"


def make_row(
    type_name: str, id_field: str, subject: str, k: int, row_id: int, *, wire: bool = False
) -> dict[str, Any]:
    """The ``k``-th annotation of ``subject``, row ``row_id``; with its ``_row`` key (stripped on
    the wire) unless ``wire``."""
    score = round(((row_id * 37) % 100) / 100, 2)
    stamp = _timestamp(row_id)
    row: dict[str, Any] = {
        "id": global_id(type_name, row_id),
        "created_at": stamp,
        "updated_at": stamp,
        "source": "API",
        "user_id": None,
        "name": f"metric_{k:02d}",
        "annotator_kind": ANNOTATOR_KINDS[row_id % 3],
        "result": {
            "label": LABELS[row_id % len(LABELS)],
            "score": score,
            "explanation": f"bench explanation {row_id} for {subject}",
        },
        "metadata": {"bench": True, "n": k},
        "identifier": "" if k % 2 else f"bench-run-{k % 5}",
        id_field: subject,
    }
    if not wire:
        row["_row"] = row_id
    return row


@dataclass(frozen=True, slots=True)
class LazyRows:
    """A subject's rows ``first_row_id .. first_row_id + count - 1``, generated when iterated,
    newest first (the order an eager subject's list has)."""

    type_name: str
    id_field: str
    subject: str
    first_row_id: int
    count: int

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for k in range(self.count - 1, -1, -1):
            yield make_row(self.type_name, self.id_field, self.subject, k, self.first_row_id + k)

    def wire_rows(self, max_row_id: int | None, n: int) -> list[tuple[int, dict[str, Any]]]:
        """At most ``n`` (row id, wire row) pairs, newest first, of the rows ``<= max_row_id``."""
        top = self.count - 1 if max_row_id is None else min(self.count - 1, max_row_id - self.first_row_id)
        out = []
        for k in range(top, max(top - n, -1), -1):
            row_id = self.first_row_id + k
            out.append((row_id, make_row(self.type_name, self.id_field, self.subject, k, row_id, wire=True)))
        return out


def lazy_page(
    read: list[LazyRows], cursor_id: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """The page of ``limit`` rows (and the row id that starts the next page, if any) of lazy
    subjects with no other filter, without generating the rows beyond it: the subjects' row id
    ranges are disjoint, so newest first is range after range, each newest first."""
    picked: list[tuple[int, dict[str, Any]]] = []
    for rows in sorted(read, key=lambda r: r.first_row_id, reverse=True):
        if len(picked) > limit:
            break
        picked += rows.wire_rows(cursor_id, limit + 1 - len(picked))
    next_row = picked[limit][0] if len(picked) > limit else None
    return [row for _, row in picked[:limit]], next_row


Rows = list[dict[str, Any]] | LazyRows


@dataclass(frozen=True, slots=True)
class Listed:
    """A session or trace as the listing routes show it: its row, its start (seconds after
    ``BASE_TIME``), and, for a session, its own trace (id, row)."""

    row: int
    start_s: int
    trace: tuple[str, int] | None = None


@dataclass(slots=True)
class Store:
    """Annotations per project, kind and subject (rows kept newest first), and the sessions and
    traces the listing routes show, per project, in registration (row id) order."""

    projects: dict[str, dict[str, dict[str, Rows]]] = field(default_factory=dict)
    listed: dict[str, dict[str, dict[str, Listed]]] = field(default_factory=dict)
    project_rows: dict[str, int] = field(default_factory=dict)
    next_row_id: int = 1
    next_session_row: int = 1
    next_trace_row: int = 1

    def _list(self, project: str, kind: str, subject: str) -> None:
        """Register ``subject`` (a session or trace) for the listings, once."""
        if kind not in ("session", "trace"):
            return
        listed = self.listed.setdefault(project, {"session": {}, "trace": {}})
        if subject in listed[kind]:
            return
        if kind == "trace":
            row = self.next_trace_row
            self.next_trace_row += 1
            listed["trace"][subject] = Listed(row, row * SESSION_SPACING_S)
            return
        row = self.next_session_row
        self.next_session_row += 1
        start_s = row * SESSION_SPACING_S
        trace_id = hashlib.md5(f"{project}/{subject}".encode()).hexdigest()  # noqa: S324 - an id
        trace_row = self.next_trace_row
        self.next_trace_row += 1
        listed["session"][subject] = Listed(row, start_s, (trace_id, trace_row))
        listed["trace"].setdefault(trace_id, Listed(trace_row, start_s))

    def add_subjects(
        self,
        project: str,
        kind: str,
        subject_ids: list[str],
        per_subject: int,
        *,
        empty: bool = False,
        lazy: bool = False,
    ) -> int:
        """Create ``per_subject`` annotations on each subject (or register it without any);
        ``lazy``: register the rows' ids only, the rows are generated when read."""
        route = f"{kind}_annotations"
        _, id_field, type_name = KINDS[route]
        by_subject = self.projects.setdefault(project, {}).setdefault(route, {})
        self.project_rows.setdefault(project, len(self.project_rows) + 1)
        created = 0
        for subject in subject_ids:
            self._list(project, kind, subject)
            if lazy and not empty:
                if subject in by_subject:
                    raise ValueError(f"subject {subject!r} already has rows: a lazy seed needs new ids")
                by_subject[subject] = LazyRows(type_name, id_field, subject, self.next_row_id, per_subject)
                self.next_row_id += per_subject
                created += per_subject
                continue
            rows = by_subject.setdefault(subject, [])
            if isinstance(rows, LazyRows):
                raise ValueError(f"subject {subject!r} is lazy: seed new ids instead")
            if empty:
                continue
            for k in range(per_subject):
                row_id = self.next_row_id
                self.next_row_id += 1
                rows.insert(0, make_row(type_name, id_field, subject, k, row_id))
                created += 1
        return created


@dataclass(slots=True)
class Controls:
    latency_ms: float = 0.0
    fail: bool = False


class PhoenixStandIn:
    """The raw ASGI application."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.store = Store()
        self.controls = Controls(latency_ms=latency_ms)
        self.counters: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.memo: dict[tuple[str, bytes], tuple[int, bytes, bytes]] = {}
        self.listing_window: list[float] = []
        """When the first listing call since the last reset arrived and the last one was answered
        (``time.monotonic()``): how long a scope discovery kept the stand-in busy."""

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_bench/"):
            await self._control(path, method, receive, send)
            return
        if method == "GET" and path == "/arize_phoenix_version":
            self._count("version")
            await _respond(send, 200, b"text/plain; charset=utf-8", PHOENIX_VERSION.encode())
            return
        if method == "GET" and path == "/v1/projects":
            self._count("projects")
            body = orjson.dumps(
                {
                    "data": [
                        {"id": global_id("Project", i + 1), "name": name, "description": None}
                        for i, name in enumerate(self.store.projects)
                    ],
                    "next_cursor": None,
                }
            )
            await _respond(send, 200, b"application/json", body)
            return
        parts = path.split("/")
        # ["", "v1", "projects", "{project}", "{route}"]
        if method == "GET" and len(parts) == 5 and parts[1] == "v1" and parts[2] == "projects":
            route = parts[4]
            if route in KINDS:
                await self._annotations(unquote(parts[3]), route, scope, send)
                return
            if route in ("sessions", "traces"):
                await self._listing(unquote(parts[3]), route, scope, send)
                return
        self._count("other")
        await _respond(
            send, 200, b"text/html; charset=utf-8", b"<!DOCTYPE html><html><title>Phoenix</title></html>"
        )

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    async def _annotations(self, project: str, route: str, scope: Scope, send: Send) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._annotations_once(project, route, scope, send)
        finally:
            self.in_flight -= 1

    async def _annotations_once(self, project: str, route: str, scope: Scope, send: Send) -> None:
        self._count("annotation_reads")
        self._count(route)
        if self.controls.latency_ms > 0:
            await asyncio.sleep(self.controls.latency_ms / 1000)
        if self.controls.fail:
            self._count("failed")
            await _respond(send, 500, b"text/plain; charset=utf-8", b"Internal Server Error")
            return
        key = (f"{project}/{route}", scope["query_string"])
        memo = self.memo.get(key)
        if memo is None:
            status, ctype, body, lazy = self._answer(project, route, scope["query_string"].decode("latin-1"))
            if not lazy:
                if len(self.memo) >= MEMO_MAX_ENTRIES:
                    self.memo.clear()
                self.memo[key] = (status, ctype, body)
        else:
            status, ctype, body = memo
        await _respond(send, status, ctype, body)

    def _answer(self, project: str, route: str, query: str) -> tuple[int, bytes, bytes, bool]:
        """Status, content type, body, and whether a lazy subject was read (not memoized)."""
        _kind, id_field, type_name = KINDS[route]
        params = parse_qsl(query, keep_blank_values=True)
        ids: list[str] = []
        identifiers: list[str] = []
        include: list[str] = []
        exclude: list[str] = []
        cursor: str | None = None
        limit_raw: str | None = None
        for name, value in params:
            if name == f"{id_field}s":
                ids.append(value)
            elif name == "identifier":
                identifiers.append(value)
            elif name == "include_annotation_names":
                include.append(value)
            elif name == "exclude_annotation_names":
                exclude.append(value)
            elif name == "cursor":
                cursor = value
            elif name == "limit":
                limit_raw = value
        limit = DEFAULT_LIMIT
        if limit_raw is not None:
            problem = _limit_problem(limit_raw)
            if problem is not None:
                return 422, b"application/json", problem, False
            limit = int(limit_raw)
        routes = self.store.projects.get(project)
        if routes is None:
            return 404, b"text/plain; charset=utf-8", f"Project with name {project} not found".encode(), False
        if not ids and not identifiers:
            return (
                422,
                b"text/plain; charset=utf-8",
                f"At least one of {id_field}s or identifier must be supplied".encode(),
                False,
            )
        distinct = list(dict.fromkeys(ids))
        if len(distinct) > MAX_IDS:
            return (
                422,
                b"text/plain; charset=utf-8",
                f"Too many {id_field}s supplied: {len(distinct)} (max {MAX_IDS})".encode(),
                False,
            )
        by_subject = routes.get(route, {})
        known = [s for s in distinct if s in by_subject]
        if distinct and not known and not identifiers:
            return (
                404,
                b"text/plain; charset=utf-8",
                f"None of the supplied {id_field}s exist in this project".encode(),
                False,
            )
        cursor_id: int | None = None
        if cursor is not None:
            cursor_id = parse_global_id(cursor, type_name)
            if cursor_id is None:
                return 422, b"text/plain; charset=utf-8", b"Invalid cursor value", False
        read = [by_subject[s] for s in known] if distinct else list(by_subject.values())
        lazy = any(isinstance(rows, LazyRows) for rows in read)
        if lazy and not identifiers and not include and not exclude:
            only_lazy = [rows for rows in read if isinstance(rows, LazyRows)]
            if len(only_lazy) == len(read):
                data, next_row = lazy_page(only_lazy, cursor_id, limit)
                next_id = global_id(type_name, next_row) if next_row is not None else None
                return 200, b"application/json", orjson.dumps({"data": data, "next_cursor": next_id}), True
        candidates = [row for rows in read for row in rows]
        wanted_ids = set(identifiers)
        include_set = set(include)
        exclude_set = set(exclude)
        selected = [
            row
            for row in candidates
            if (not wanted_ids or row["identifier"] in wanted_ids)
            and (not include_set or row["name"] in include_set)
            and row["name"] not in exclude_set
            and (cursor_id is None or row["_row"] <= cursor_id)
        ]
        selected.sort(key=lambda row: row["_row"], reverse=True)
        page = selected[:limit]
        next_cursor = selected[limit]["id"] if len(selected) > limit else None
        data = [{k: v for k, v in row.items() if k != "_row"} for row in page]
        return 200, b"application/json", orjson.dumps({"data": data, "next_cursor": next_cursor}), lazy

    # -- listings (scope discovery) ------------------------------------------------------------
    async def _listing(self, project: str, route: str, scope: Scope, send: Send) -> None:
        if not self.listing_window:
            self.listing_window = [time.monotonic(), 0.0]
        try:
            await self._listing_once(project, route, scope, send)
        finally:
            self.listing_window[1] = time.monotonic()

    async def _listing_once(self, project: str, route: str, scope: Scope, send: Send) -> None:
        self._count("listings")
        self._count(f"list_{route}")
        if self.controls.latency_ms > 0:
            await asyncio.sleep(self.controls.latency_ms / 1000)
        if self.controls.fail:
            self._count("failed")
            await _respond(send, 500, b"text/plain; charset=utf-8", b"Internal Server Error")
            return
        key = (f"{project}/{route}", scope["query_string"])
        memo = self.memo.get(key)
        if memo is None:
            memo = self._list_answer(project, route, scope["query_string"].decode("latin-1"))
            if len(self.memo) >= MEMO_MAX_ENTRIES:
                self.memo.clear()
            self.memo[key] = memo
        await _respond(send, *memo)

    def _list_answer(self, project: str, route: str, query: str) -> tuple[int, bytes, bytes]:
        """``GET /v1/projects/{project}/sessions`` or ``.../traces``: status, content type, body."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        plain = b"text/plain; charset=utf-8"
        limit = LIST_DEFAULT_LIMIT
        if "limit" in params:
            problem = _limit_problem(params["limit"], LIST_MAX_LIMIT)
            if problem is not None:
                return 422, b"application/json", problem
            limit = int(params["limit"])
        order = params.get("order", "asc" if route == "sessions" else "desc")
        if order not in ("asc", "desc"):
            return 422, b"application/json", _enum_problem("order", order, ("asc", "desc"))
        unsupported = [
            name
            for name in ("filter", "session_identifier")
            if params.get(name)  # Phoenix: "Empty expressions do not filter"
        ]
        if params.get("sort", "start_time") != "start_time":
            unsupported.append("sort")
        if unsupported:
            text = f"bench stand-in: {', '.join(unsupported)} is not implemented"
            return 400, plain, text.encode()
        if project not in self.store.project_rows:
            return 404, plain, f"Project with name {project} not found".encode()
        listed = self.store.listed.get(project, {"session": {}, "trace": {}})
        project_id = global_id("Project", self.store.project_rows[project])
        if route == "sessions":
            return self._list_sessions(listed["session"], project_id, params.get("cursor"), limit, order)
        bounds: list[int | None] = []
        for name in ("start_time", "end_time"):
            raw = params.get(name)
            if raw is None:
                bounds.append(None)
                continue
            offset = _offset_us(raw)
            if offset is None:
                return 422, b"application/json", _datetime_problem(name, raw)
            bounds.append(offset)
        return self._list_traces(listed["trace"], project_id, params.get("cursor"), limit, order, bounds)

    @staticmethod
    def _list_sessions(
        sessions: dict[str, Listed], project_id: str, cursor: str | None, limit: int, order: str
    ) -> tuple[int, bytes, bytes]:
        rows = sorted(sessions.items(), key=lambda item: item[1].row, reverse=order == "desc")
        if cursor is not None:
            row = parse_global_id(cursor, "ProjectSession")
            if row is None:
                return 422, b"text/plain; charset=utf-8", f"Invalid cursor format: {cursor}".encode()
            rows = [r for r in rows if (r[1].row >= row if order == "asc" else r[1].row <= row)]
        data = []
        for session_id, entry in rows[:limit]:
            start_us = entry.start_s * 1_000_000
            traces = []
            if entry.trace is not None:
                trace_id, trace_row = entry.trace
                traces.append(
                    {
                        "id": global_id("Trace", trace_row),
                        "trace_id": trace_id,
                        "start_time": _timestamp_us(start_us),
                        "end_time": _timestamp_us(start_us + TRACE_LENGTH_US),
                    }
                )
            data.append(
                {
                    "id": global_id("ProjectSession", entry.row),
                    "session_id": session_id,
                    "project_id": project_id,
                    "start_time": _timestamp_us(start_us),
                    "end_time": _timestamp_us(start_us + SESSION_LENGTH_US),
                    "traces": traces,
                    "token_count_prompt": 0,
                    "token_count_completion": 0,
                    "token_count_total": 0,
                }
            )
        next_cursor = global_id("ProjectSession", rows[limit][1].row) if len(rows) > limit else None
        return 200, b"application/json", orjson.dumps({"data": data, "next_cursor": next_cursor})

    @staticmethod
    def _list_traces(
        traces: dict[str, Listed],
        project_id: str,
        cursor: str | None,
        limit: int,
        order: str,
        bounds: list[int | None],
    ) -> tuple[int, bytes, bytes]:
        low, high = bounds
        rows = [
            (entry.start_s * 1_000_000, entry.row, trace_id)
            for trace_id, entry in traces.items()
            if (low is None or entry.start_s * 1_000_000 >= low)
            and (high is None or entry.start_s * 1_000_000 < high)
        ]
        rows.sort(reverse=order == "desc")
        if cursor is not None:
            position = _trace_cursor(cursor)
            if position is None:
                return 422, b"text/plain; charset=utf-8", b"Invalid cursor"
            if order == "desc":
                rows = [r for r in rows if (r[0], r[1]) <= position]
            else:
                rows = [r for r in rows if (r[0], r[1]) >= position]
        data = [
            {
                "id": global_id("Trace", row),
                "trace_id": trace_id,
                "project_id": project_id,
                "start_time": _timestamp_us(start_us),
                "end_time": _timestamp_us(start_us + TRACE_LENGTH_US),
                "token_count_prompt": 0,
                "token_count_completion": 0,
                "token_count_total": 0,
                "spans": None,
            }
            for start_us, row, trace_id in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            start_us, row, _ = rows[limit]
            raw = f"{row}:DATETIME:{_timestamp_us(start_us)}"
            next_cursor = base64.b64encode(raw.encode()).decode()
        return 200, b"application/json", orjson.dumps({"data": data, "next_cursor": next_cursor})

    # -- bench controls ----------------------------------------------------------------------
    async def _control(self, path: str, method: str, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if path == "/_bench/stats" and method == "GET":
            window = self.listing_window
            answer: dict[str, Any] = {
                "counters": self.counters,
                "max_in_flight": self.max_in_flight,
                "controls": vars_of(self.controls),
                "listing_window_ms": round((window[1] - window[0]) * 1000, 1) if window else None,
            }
        elif path == "/_bench/reset" and method == "POST":
            self.counters = {}
            self.max_in_flight = 0
            self.listing_window = []
            answer = {"ok": True}
        elif path == "/_bench/control" and method == "POST":
            args = orjson.loads(body or b"{}")
            if "latency_ms" in args:
                self.controls.latency_ms = float(args["latency_ms"])
            if "fail" in args:
                self.controls.fail = bool(args["fail"])
            answer = {"controls": vars_of(self.controls)}
        elif path == "/_bench/seed" and method == "POST":
            spec = orjson.loads(body or b"{}")
            try:
                created = self.store.add_subjects(
                    project=str(spec.get("project", "bench")),
                    kind=str(spec.get("kind", "session")),
                    subject_ids=[str(s) for s in spec["subject_ids"]],
                    per_subject=int(spec.get("per_subject", 10)),
                    empty=bool(spec.get("empty", False)),
                    lazy=bool(spec.get("lazy", False)),
                )
            except ValueError as exc:
                await _respond(send, 409, b"text/plain; charset=utf-8", str(exc).encode())
                return
            self.memo.clear()
            answer = {"created": created}
        else:
            await _respond(send, 404, b"text/plain; charset=utf-8", b"Not Found")
            return
        await _respond(send, 200, b"application/json", orjson.dumps(answer))


def vars_of(controls: Controls) -> dict[str, Any]:
    return {"latency_ms": controls.latency_ms, "fail": controls.fail}


def _offset_us(raw: str) -> int | None:
    """Microseconds from ``BASE_TIME`` to the ISO 8601 ``raw`` (naive: UTC); ``None`` if invalid."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - BASE_TIME
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _trace_cursor(cursor: str) -> tuple[int, int] | None:
    """A trace listing cursor, ``base64("{row}:DATETIME:{start_time}")``, as (start µs, row)."""
    try:
        decoded = base64.b64decode(cursor.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    row, _, rest = decoded.partition(":")
    kind, _, stamp = rest.partition(":")
    offset = _offset_us(stamp)
    if not row.isdigit() or kind != "DATETIME" or offset is None:
        return None
    return offset, int(row)


def _datetime_problem(name: str, raw: str) -> bytes:
    detail = {
        "type": "datetime_from_date_parsing",
        "loc": ["query", name],
        "msg": "Input should be a valid datetime or date, invalid character in year",
        "input": raw,
        "ctx": {"error": "invalid character in year"},
    }
    return orjson.dumps({"detail": [detail]})


def _enum_problem(name: str, raw: str, allowed: tuple[str, ...]) -> bytes:
    expected = " or ".join(f"'{a}'" for a in allowed)
    detail = {
        "type": "enum",
        "loc": ["query", name],
        "msg": f"Input should be {expected}",
        "input": raw,
        "ctx": {"expected": expected},
    }
    return orjson.dumps({"detail": [detail]})


def _limit_problem(raw: str, maximum: int = MAX_LIMIT) -> bytes | None:
    try:
        value = int(raw)
    except ValueError:
        detail: dict[str, Any] = {
            "type": "int_parsing",
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": raw,
        }
        return orjson.dumps({"detail": [detail]})
    if value < 1:
        detail = {
            "type": "greater_than",
            "loc": ["query", "limit"],
            "msg": "Input should be greater than 0",
            "input": raw,
            "ctx": {"gt": 0},
        }
        return orjson.dumps({"detail": [detail]})
    if value > maximum:
        detail = {
            "type": "less_than_equal",
            "loc": ["query", "limit"],
            "msg": f"Input should be less than or equal to {maximum}",
            "input": raw,
            "ctx": {"le": maximum},
        }
        return orjson.dumps({"detail": [detail]})
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    for _ in range(100_000):  # bounded: a body of at most 100k chunks
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, ctype: bytes, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"x-phoenix-server-version", PHOENIX_VERSION.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6106)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the stand-in listens on loopback only")
    import uvicorn

    uvicorn.run(
        PhoenixStandIn(latency_ms=args.latency_ms),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
