"""Phoenix's I/O: the provider's HTTP calls, chunking and paging, writes and health.

Contract (see :mod:`annotation_gateway.providers.base` for the provider contract itself):

Reading — ``GET /v1/projects/{project}/{session,trace,span}_annotations``:

- ``subject_kinds`` empty means session, trace and span, read concurrently; kinds Phoenix does
  not have (``experiment_trace``, ``display_block``) have no annotations here.
- What is pushed down and what is filtered locally is :class:`~.plan.ReadPlan`'s job.
- Id lists are chunked to at most :data:`MAX_IDS_PER_REQUEST` ids and URLs of at most
  :data:`MAX_URL_BYTES`; chunks are read concurrently, each page request under the source's
  concurrency cap, every chunk paged through ``next_cursor`` to the end with ``limit=page_size``.
  Filters too long for one URL are applied by the provider instead of pushed down.
- Pages are validated by :mod:`.wire` (big ones in a worker thread) and mapped by
  :mod:`.mapping`.

Outcomes — classified by status and content type before any success body is parsed, through
the toolkit's status table (:mod:`annotation_gateway.providers.http.outcomes`): "None of the
supplied ..._ids exist in this project" (404) → no annotations; an unknown project (404 text) →
:class:`SourceNotFoundError`; 401/403 → :class:`SourceAuthError`; other 4xx (422 as text or as
JSON ``{"detail": [...]}``) → :class:`SourceRequestError` with Phoenix's message and ``errors``;
429 → :class:`SourceRateLimitedError` (``Retry-After``, else ``X-RateLimit-Reset``); 5xx →
:class:`SourceUnavailableError`; 200 with ``text/html`` (Phoenix's web UI answers unknown routes,
trailing slashes and HEAD) or any non-JSON, malformed JSON, a missing or wrong-typed field →
:class:`SourceProtocolError` naming the field. Reads are retried on connect errors, timeouts,
5xx and 429 (the toolkit's one retrying GET); writes are not.

Writing — ``POST /v1/{session,trace,span}_annotations?sync=true``:

1. every item is checked first (:func:`~.mapping.check_writes`) → :class:`RequestValidationError`
   listing each bad item; nothing is sent;
2. a pre-flight read checks that every subject exists *in the configured project* (sessions and
   traces through Phoenix's filter expressions, spans through ``span_ids``) →
   :class:`SourceNotFoundError` whose ``errors`` list the unknown subjects (``loc`` the first
   item naming each, ``subject_kind`` and ``subject_id`` what it is); nothing is written;
3. the items go in batches of :data:`WRITE_BATCH_SIZE`, one after the other in request order
   (so the last of several upserts of one key wins). Each batch is all-or-nothing upstream;
   across batches Phoenix offers no transaction, so if a later batch fails (a subject deleted
   after the pre-flight, Phoenix down) the earlier ones stay written and the error says how
   many. Writes are upserts keyed by (name, subject, identifier): re-sending is safe.

Discovering (SPEC §7) — ``GET /v1/projects/{project}/sessions`` and ``.../traces``, each paged
through ``next_cursor`` (one page after the other: the cursor is the only way on) with
:data:`LIST_PAGE_SIZE` rows a page. Traces are listed with ``end_time`` = the query's
``updated_before`` (Phoenix filters traces by start time); sessions have no time parameter, so
all are listed and those that started at or after ``updated_before`` are left out here. An
unknown project is :class:`SourceNotFoundError`; a repeated cursor :class:`SourceProtocolError`;
more subjects than the request allows :class:`PayloadTooLargeError`, as soon as it is seen.

``health()`` reads the public ``/arize_phoenix_version`` and then the configured project with
the API key, so a wrong key or an unknown project shows as unhealthy; it never raises.
No error message or log line carries the API key: errors name the method and path only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import httpx

from annotation_gateway.concurrency import gather
from annotation_gateway.errors import (
    GatewayError,
    PayloadTooLargeError,
    SourceError,
    SourceNotFoundError,
    SourceProtocolError,
)
from annotation_gateway.model import Annotation, AnnotationWrite, ProviderKind, SubjectKind
from annotation_gateway.providers.base import (
    Capabilities,
    HealthReport,
    ScopeRequest,
    ScopeSubjects,
    SourceQuery,
    WriteResult,
)
from annotation_gateway.providers.config import read_secret
from annotation_gateway.providers.http import (
    RetryPolicy,
    Upstream,
    chunk_values,
    is_json,
    make_client,
    param_len,
    parse_json,
)
from annotation_gateway.providers.http.budget import RequestBudget
from annotation_gateway.providers.http.outcomes import MAX_ERROR_ITEMS, unknown_subject_item
from annotation_gateway.providers.phoenix.config import PhoenixSourceConfig
from annotation_gateway.providers.phoenix.mapping import check_writes, to_records
from annotation_gateway.providers.phoenix.plan import Query, ReadPlan, encoded_len, unique
from annotation_gateway.providers.phoenix.wire import (
    ANY_PAGE,
    INSERTED,
    KINDS,
    NO_SUCH_SUBJECTS,
    PHOENIX_KINDS,
    PROJECT,
    SESSION_LIST,
    TRACE_LIST,
    WRITE_NOT_FOUND,
    Extras,
    Kind,
    StrictRow,
    error_items,
    error_message,
    lenient_rows,
    plain_text,
    strict_rows,
    unknown_ids,
)
from annotation_gateway.records import Record, RecordBuilder, decode

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "MAX_URL_BYTES",
    "WRITE_BATCH_SIZE",
    "PhoenixProvider",
]

log = logging.getLogger(__name__)

VENDOR = "Phoenix"
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
THREAD_PARSE_MIN_BYTES = 256 * 1024
"""Pages at least this big are decoded, then mapped, in a worker thread (two steps, so that the
next page is asked for once the cursor is known): a 10,000-row page costs ~70 ms of CPU, which
would otherwise stall every other request on the event loop."""
LIST_PAGE_SIZE = 1000
"""Rows per page of the sessions and traces listings (Phoenix's maximum for traces)."""
ID_ROOM_MEMO_MAX_ITEMS = 256
"""Distinct (path, pushed-down filters) whose URL room is remembered (emptied when full)."""


class _Decoded(NamedTuple):
    """An annotation page decoded (its cursor known), not yet mapped to records."""

    rows: Sequence[StrictRow]
    extras: list[Extras | None] | None
    raw_rows: list[Any] | None
    """The rows as received, only for a read that asks for ``include=raw``."""
    cursor: str | None
    size: int
    """The answer's bytes (a big page is mapped in a worker thread too)."""


class PhoenixProvider:
    """One Phoenix project behind one shared connection pool (see the module docstring)."""

    def __init__(
        self, config: PhoenixSourceConfig, *, client: httpx.AsyncClient, budget: RequestBudget | None = None
    ) -> None:
        """``budget``: the source's rate budget, taken before every request (none: unlimited)."""
        self._config = config
        self._http = Upstream(
            client,
            source=config.name,
            vendor=VENDOR,
            max_concurrency=config.max_concurrency,
            retry=RetryPolicy(attempts=config.retry_attempts, max_retry_after_s=config.max_retry_after_s),
            budget=budget,
        )
        self._project_path = f"/v1/projects/{quote(config.project, safe='')}"
        self._id_rooms: dict[tuple[str, tuple[tuple[str, Any], ...]], int] = {}
        self._capabilities = Capabilities(
            subject_kinds=PHOENIX_KINDS,
            pushdown=frozenset({"subject_ids", "identifiers", "names", "exclude_names"}),
            needs_subject_ids=False,
            writable_kinds=PHOENIX_KINDS,
            scope_kinds=frozenset(config.scope_subject_kinds),
        )

    @classmethod
    def from_config(
        cls,
        config: PhoenixSourceConfig,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RequestBudget | None = None,
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
        return cls(config, client=client, budget=budget)

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
        await self._http.aclose()

    # --- reading ------------------------------------------------------------------------------

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        """:meth:`fetch_records` as canonical models."""
        return decode(await self.fetch_records(query))

    async def fetch_records(self, query: SourceQuery) -> list[Record]:
        """Every matching annotation of this project, each once (module docstring), as records."""
        kinds = [KINDS[k] for k in (query.subject_kinds or tuple(KINDS)) if k in KINDS]
        plan = ReadPlan.of(query)
        if plan is None or not kinds:
            return []
        per_kind = await gather([self._fetch_kind(spec, plan, query.include_raw) for spec in kinds])
        merged: dict[str, Record] = {}
        for found in per_kind:
            for record in found:
                # Chunks and kinds are disjoint; this only guards against a row repeated by
                # Phoenix across a page boundary, so that each annotation is returned once.
                merged.setdefault(record.id, record)
        return list(merged.values())

    async def _fetch_kind(self, spec: Kind, plan: ReadPlan, include_raw: bool) -> list[Record]:
        path = f"{self._project_path}/{spec.read_suffix}"
        if plan.subject_ids:
            param, values = spec.id_param, plan.subject_ids
        else:
            param, values = "identifier", plan.chunk_identifiers
        room = self._id_room(path, plan)
        if room < MIN_ID_ROOM_BYTES and plan.fixed_params():
            plan = plan.filtered_locally()
            room = self._id_room(path, plan)
        costs = [encoded_len(param, v) for v in values]
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
        return [record for chunk_result in results for record in chunk_result]

    def _id_room(self, path: str, plan: ReadPlan) -> int:
        """URL bytes left for ids once the path, fixed filters, limit and a cursor are in.

        Remembered per (path, filters): building the URL through httpx parses it character
        by character, which cost more than the rest of planning a small query."""
        params = [*plan.fixed_params(), ("limit", str(self._config.page_size))]
        key = (path, tuple(params))
        room = self._id_rooms.get(key)
        if room is None:
            fixed = self._http.client.build_request("GET", path, params=params)
            room = MAX_URL_BYTES - len(str(fixed.url)) - CURSOR_RESERVE_BYTES
            if len(self._id_rooms) >= ID_ROOM_MEMO_MAX_ITEMS:
                self._id_rooms.clear()
            self._id_rooms[key] = room
        return room

    async def _read_chunk(
        self,
        spec: Kind,
        path: str,
        param: str,
        chunk: Sequence[str],
        plan: ReadPlan,
        include_raw: bool,
    ) -> list[Record]:
        """Every page of one chunk of ids, following Phoenix's cursor.

        A cursor can only be followed one page after another, so the next page is asked for as
        soon as a page is decoded (its cursor known), and the page is mapped to records while
        the next one is on its way: a 10,000-row page maps in ~60 ms, time that used to be
        added to every page of a chunk holding more rows than a page."""
        base: Query = [(param, v) for v in chunk]
        base += plan.fixed_params()
        base.append(("limit", str(self._config.page_size)))
        out: list[Record] = []
        seen_cursors: set[str] = set()
        page = await self._get_page(spec, path, base, include_raw)
        following: asyncio.Future[_Decoded | None] | None = None
        try:
            while page is not None:  # None: "None of the supplied ..._ids exist in this project"
                cursor = page.cursor
                if cursor:
                    if cursor in seen_cursors:
                        raise SourceProtocolError(
                            f"{self.name}: Phoenix repeated the page cursor {cursor!r} on {path}",
                            source=self.name,
                        )
                    seen_cursors.add(cursor)
                    params = [*base, ("cursor", cursor)]
                    following = asyncio.ensure_future(self._get_page(spec, path, params, include_raw))
                    await asyncio.sleep(0)  # let it send the request before a small page maps on the loop
                out.extend(await self._map_page(spec, page, plan))
                if following is None:
                    break
                page, following = await following, None
        finally:
            if following is not None:  # the mapping failed: the page after it is not wanted
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
        return out

    async def _get_page(self, spec: Kind, path: str, params: Query, include_raw: bool) -> _Decoded | None:
        strict_tried = False
        if include_raw:
            response = await self._get(path, params)
        else:
            # A page of today's shape, decoded from its bytes (no httpx response built); any
            # other answer (an error, another shape, a page to decode in a thread) as below.
            def strict(content: bytes) -> _Decoded | None:
                nonlocal strict_tried
                strict_tried = True  # these very bytes are the response's content if it comes back
                return self._strict_page(spec, content)

            answer = await self._http.get_decoded(
                path, params, strict, self._raise_if_retryable, max_bytes=THREAD_PARSE_MIN_BYTES - 1
            )
            if not isinstance(answer, httpx.Response):
                return answer
            response = answer
        if response.status_code == 404 and NO_SUCH_SUBJECTS.match(plain_text(response)):
            return None
        self._raise_for_status(response)
        self._require_json(response, path)
        if len(response.content) >= THREAD_PARSE_MIN_BYTES:
            return await asyncio.to_thread(
                self._decode_page, spec, response, include_raw, strict_tried=strict_tried
            )
        return self._decode_page(spec, response, include_raw, strict_tried=strict_tried)

    async def _get(self, path: str, params: Query) -> httpx.Response:
        """The toolkit's retrying GET; retryable answers (429, 5xx) raise inside it, the rest
        come back for the caller to classify."""
        return await self._http.get(path, params, self._raise_if_retryable)

    def _raise_if_retryable(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 429 or response.status_code >= 500:
            raise self._error(response)
        return response

    @staticmethod
    def _strict_page(spec: Kind, content: bytes) -> _Decoded | None:
        """A 200 page decoded from its bytes when it has exactly Phoenix 20.26's shape, else None."""
        strict = strict_rows(spec, content)
        if strict is None:
            return None
        rows, cursor = strict
        return _Decoded(rows, None, None, cursor, len(content))

    def _decode_page(
        self, spec: Kind, response: httpx.Response, include_raw: bool, *, strict_tried: bool = False
    ) -> _Decoded:
        """The page in ``response``: strictly decoded when it has today's shape (not tried again
        when ``strict_tried``: the strict decoder already said it has not, having read up to the
        first row that differs — up to ~33 µs for a 50-row page whose last row does), else
        validated by pydantic, which keeps what it does not know."""
        what = f"{spec.kind.value} annotation page"
        raw_rows: list[Any] | None = None  # the rows as received: only for include=raw
        extras: list[Extras | None] | None = None
        # The page as Phoenix 20.26 sends it.
        strict = None if strict_tried else strict_rows(spec, response.content)
        if strict is not None:
            rows, cursor = strict
            if include_raw:
                raw_rows = parse_json(response, source=self.name)["data"]
        else:  # anything else: pydantic keeps unknown fields, or says what is wrong
            if include_raw:  # the rows as received are wanted too: parse, then validate
                body = parse_json(response, source=self.name)
                page = self._http.validate(spec.page, body, what=what)
                raw_rows = body["data"]
            else:
                page = self._http.decode(spec.page, response, what=what)
            rows, extras = lenient_rows(spec, page["data"])
            cursor = page["next_cursor"]
        return _Decoded(rows, extras, raw_rows, cursor, len(response.content))

    async def _map_page(self, spec: Kind, page: _Decoded, plan: ReadPlan) -> list[Record]:
        if page.size >= THREAD_PARSE_MIN_BYTES:
            return await asyncio.to_thread(self._records, spec, page, plan)
        return self._records(spec, page, plan)

    def _records(self, spec: Kind, page: _Decoded, plan: ReadPlan) -> list[Record]:
        return to_records(
            spec,
            page.rows,
            page.extras,
            page.raw_rows,
            RecordBuilder(self.name, ProviderKind.PHOENIX.value),
            project=self._config.project,
            keeps=plan.keeps if plan.filters_locally else None,
        )

    # --- discovering ---------------------------------------------------------------------------

    async def discover(self, request: ScopeRequest) -> ScopeSubjects:
        """The project's sessions and/or traces (module docstring), sorted, each once."""
        kinds = [k for k in request.subject_kinds if k in self._capabilities.scope_kinds]
        listed = await gather([self._list(kind, request) for kind in kinds], prefer=SourceError)
        subjects = sorted({(sid, kind) for kind, ids in zip(kinds, listed, strict=True) for sid in ids})
        if len(subjects) > request.max_subjects:
            raise self._too_many(request.max_subjects)
        return ScopeSubjects(tuple(subjects))

    async def _list(self, kind: SubjectKind, request: ScopeRequest) -> list[str]:
        session = kind is SubjectKind.SESSION
        path = f"{self._project_path}/{'sessions' if session else 'traces'}"
        params: Query = [("limit", str(LIST_PAGE_SIZE))]
        before = request.started_before
        if before is not None and not session:
            params.append(("end_time", before.isoformat()))
        ids: list[str] = []
        cursor: str | None = None
        seen: set[str] = set()
        # Bounded: every page but the last is full, and the request bounds the subjects.
        for _ in range(request.max_subjects // LIST_PAGE_SIZE + 2):
            response = await self._get(path, params if cursor is None else [*params, ("cursor", cursor)])
            self._raise_for_status(response)
            self._require_json(response, path)
            what = f"{kind.value} listing"
            if session:
                page_s = self._http.decode(SESSION_LIST, response, what=what)
                rows = [(r["session_id"], r["start_time"]) for r in page_s["data"]]
                cursor = page_s["next_cursor"]
            else:
                page_t = self._http.decode(TRACE_LIST, response, what=what)
                rows = [(r["trace_id"], r["start_time"]) for r in page_t["data"]]
                cursor = page_t["next_cursor"]
            ids.extend(sid for sid, started in rows if before is None or started < before)
            if len(ids) > request.max_subjects:
                raise self._too_many(request.max_subjects)
            if not cursor:
                return ids
            if cursor in seen:
                raise SourceProtocolError(
                    f"{self.name}: Phoenix repeated the listing cursor {cursor!r} on {path}", source=self.name
                )
            seen.add(cursor)
        raise self._too_many(request.max_subjects)

    def _too_many(self, limit: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"{self.name}: the project {self._config.project!r} has more than {limit} subjects in "
            "scope; narrow it with updated_before, subject_kind or the source's scope_subject_kinds"
        )

    # --- writing ------------------------------------------------------------------------------

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        """Upsert ``items`` (module docstring: checks, pre-flight, ordered batches)."""
        items = list(items)
        if not items:
            return WriteResult(ids=())
        bodies = check_writes(items)
        await self._preflight(items)
        ids: list[str | None] = [None] * len(items)
        by_kind: dict[SubjectKind, list[int]] = {}
        for index, item in enumerate(items):
            by_kind.setdefault(item.subject_kind, []).append(index)
        written = 0
        for kind, indexes in by_kind.items():
            spec = KINDS[kind]
            for start in range(0, len(indexes), WRITE_BATCH_SIZE):
                batch = indexes[start : start + WRITE_BATCH_SIZE]
                try:
                    gids = await self._post_batch(spec, [bodies[i] for i in batch], items, batch)
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

    async def _post_batch(
        self, spec: Kind, bodies: list[bytes], items: Sequence[AnnotationWrite], batch: Sequence[int]
    ) -> list[str]:
        content = b'{"data":[' + b",".join(bodies) + b"]}"
        request = self._http.client.build_request(
            "POST",
            spec.write_path,
            params={"sync": "true"},
            content=content,
            headers={"Content-Type": "application/json"},
        )
        response = await self._http.send(request)
        if response.status_code == 404:
            match = WRITE_NOT_FOUND.match(plain_text(response))
            if match:
                first: dict[str, int] = {}
                for index in batch:
                    first.setdefault(items[index].subject_id, index)
                unknown = unknown_ids(match.group("ids"), list(first))
                raise self._not_found([(spec.kind, s, first.get(s, batch[0])) for s in unknown])
        self._raise_for_status(response)
        self._require_json(response, spec.write_path)
        body = self._http.validate(INSERTED, parse_json(response, source=self.name), what="write answer")
        gids = [row["id"] for row in body["data"]]
        if len(gids) != len(batch):
            raise SourceProtocolError(
                f"{self.name}: Phoenix answered {len(gids)} ids for {len(batch)} written annotations",
                source=self.name,
            )
        return gids

    async def _preflight(self, items: Sequence[AnnotationWrite]) -> None:
        """Raise SourceNotFoundError unless every subject exists in the configured project."""
        first: dict[tuple[SubjectKind, str], int] = {}
        for index, item in enumerate(items):
            first.setdefault((item.subject_kind, item.subject_id), index)
        wanted: dict[SubjectKind, list[str]] = {}
        for kind, subject_id in first:
            wanted.setdefault(kind, []).append(subject_id)
        found = await gather([self._existing(kind, ids) for kind, ids in wanted.items()])
        missing: list[tuple[SubjectKind, str, int]] = []
        for (kind, ids), present in zip(wanted.items(), found, strict=True):
            missing.extend((kind, s, first[(kind, s)]) for s in ids if s not in present)
        if missing:
            raise self._not_found(missing)

    async def _existing(self, kind: SubjectKind, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` exist in the configured project."""
        if kind is SubjectKind.SPAN:
            path, param = f"{self._project_path}/spans", "span_id"
            costs = [encoded_len(param, v) for v in ids]
            overhead = len(urlencode([("limit", str(PREFLIGHT_PAGE_SIZE))]))
        else:
            # Sessions and traces have no id-list parameter; Phoenix's filter expressions
            # (`session_id in [...]`) do the same in one request per chunk, scoped to the project.
            path = f"{self._project_path}/{'sessions' if kind is SubjectKind.SESSION else 'traces'}"
            param = "filter"
            costs = [param_len("f", repr(v) + ", ") - 2 for v in ids]
            overhead = len(urlencode([("filter", f"{kind.value}_id in []"), ("limit", "1000")]))
        fixed = len(str(self._http.client.build_request("GET", path).url)) + overhead + CURSOR_RESERVE_BYTES
        chunks = chunk_values(ids, costs, budget=MAX_URL_BYTES - fixed, max_count=PREFLIGHT_PAGE_SIZE)
        results = await gather([self._existing_chunk(kind, path, param, chunk) for chunk in chunks])
        return set().union(*results)

    async def _existing_chunk(self, kind: SubjectKind, path: str, param: str, chunk: list[str]) -> set[str]:
        base: Query
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
            body = self._http.validate(
                ANY_PAGE, parse_json(response, source=self.name), what="pre-flight page"
            )
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

    def _not_found(self, missing: Sequence[tuple[SubjectKind, str, int]]) -> SourceNotFoundError:
        """The error for subjects unknown in the project: (kind, id, first item naming it)."""
        ids = list(unique(subject_id for _, subject_id, _ in missing))
        kinds = {kind for kind, _, _ in missing}
        one = len(ids) == 1
        noun = (kinds.pop().value if len(kinds) == 1 else "subject") + ("" if one else "s")
        shown = ", ".join(ids[:MAX_ERROR_ITEMS]) + (" ..." if len(ids) > MAX_ERROR_ITEMS else "")
        project = self._config.project
        return SourceNotFoundError(
            f"{self.name}: {len(ids)} {noun} {'does' if one else 'do'} not exist in Phoenix project "
            f"{project!r}: {shown}; nothing was written",
            source=self.name,
            upstream_status=404,
            errors=[
                dict(
                    unknown_subject_item(
                        ["annotations", index, "subject_id"],
                        f"no such {kind.value} in Phoenix project {project!r}",
                        subject_kind=kind.value,
                        subject_id=subject_id,
                    )
                )
                for kind, subject_id, index in missing[:MAX_ERROR_ITEMS]
            ],
        )

    # --- health -------------------------------------------------------------------------------

    async def health(self) -> HealthReport:
        """Probe version (public) and the project (authenticated); never raises."""
        started = time.perf_counter()
        version: str | None = None
        client = self._http.client
        try:
            response = await self._http.send(client.build_request("GET", "/arize_phoenix_version"))
            self._raise_for_status(response)
            ctype = response.headers.get("content-type", "")
            if not ctype.startswith("text/plain"):
                raise SourceProtocolError(
                    f"{self.name}: /arize_phoenix_version answered {ctype or 'no content type'}; "
                    "is base_url a Phoenix server?",
                    source=self.name,
                )
            version = response.text.strip()
            response = await self._http.send(client.build_request("GET", self._project_path))
            self._raise_for_status(response)
            self._require_json(response, self._project_path)
            project = self._http.validate(PROJECT, parse_json(response, source=self.name), what="project")
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

    def _error(self, response: httpx.Response) -> SourceError:
        return self._http.error(response, summary=error_message(response), errors=error_items(response))

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Raise the SourceError an unsuccessful status means; return on 2xx."""
        if not 200 <= response.status_code < 300:
            raise self._error(response)

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


def _amend(exc: GatewayError, suffix: str) -> None:
    exc.detail += suffix
    exc.args = (exc.detail,)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
