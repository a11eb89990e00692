"""Datadog's I/O: the provider's reads — chunking, paging, label schemas — and health.

Contract (see :mod:`annotation_gateway.providers.base`): :meth:`DatadogProvider.fetch` returns
every annotation of the queried content ids — each exactly once — as canonical annotations, or
raises a :class:`~annotation_gateway.errors.SourceError`.

Reading: ``GET {base}/api/v2/llm-obs/v1/annotated-interactions?contentIds=a&contentIds=b
&offset=0&limit=N`` (``contentIds`` repeated, never comma-joined: a comma is part of an id) with
``DD-API-KEY``/``DD-APPLICATION-KEY``. Ids are de-duplicated and chunked so each URL stays within
:data:`MAX_URL_BYTES`; chunks and pages are fetched concurrently under the source's concurrency
cap (held per request, not while waiting to retry). Paging is offset/limit over *interactions*
until ``total_count`` is reached or a page comes back empty; interactions and annotations are
de-duplicated across pages. Datadog pushes down only the content ids; kinds, names and
identifiers are filtered here (Datadog has no identifier: it is always ``""``). Label schemas a
page needs to name its values are read once per queue for the provider's life (single flight);
a deleted queue's annotations fall back to schema ids. Mapping is :mod:`.mapping`'s job.

Errors: every answer is classified by status and content type before a success is parsed, by
the toolkit's status table (:mod:`annotation_gateway.providers.http.outcomes`): 401/403 →
:class:`SourceAuthError`; 404 → :class:`SourceNotFoundError`; other 4xx →
:class:`SourceRequestError` with Datadog's ``detail`` and its JSON:API errors in ``errors``;
429 → :class:`SourceRateLimitedError` (``Retry-After``, else ``X-RateLimit-Reset``); 5xx,
connect errors and timeouts → retryable; HTML, empty or malformed bodies, missing fields and
wrong types → :class:`SourceProtocolError` naming the field. Keys never appear in an error or
log.

Discovering (SPEC §7): the queues of the scope — ``scope_queue_ids``, else the queues of each
of ``scope_project_ids``, else every queue the keys see (``ListLLMObsAnnotationQueues``),
narrowed to a query's ``queue`` filter (ids or names) — each read whole
(``GetLLMObsAnnotatedInteractions``, concurrently); their content ids are the scope's
subjects. When the scope is narrower than every queue, it names its queues (``queue_ids``) so
that annotations of the same content ids in other queues are left out. Datadog lists no times,
so a time window does not narrow discovery.

Writing: Datadog is read-only for the gateway's ``POST /v1/annotations`` (:meth:`write` raises
``UnsupportedError``); annotation queues are written through :attr:`DatadogProvider.queues`
(:class:`~.queues.DatadogQueues`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import orjson
from pydantic import SecretStr

from annotation_gateway.concurrency import gather
from annotation_gateway.errors import (
    GatewayError,
    PayloadTooLargeError,
    SourceError,
    SourceNotFoundError,
    UnsupportedError,
)
from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.providers.base import (
    Capabilities,
    HealthReport,
    ScopeRequest,
    ScopeSubjects,
    SourceQuery,
    WriteResult,
)
from annotation_gateway.providers.config import ConfigError, read_secret
from annotation_gateway.providers.datadog.api import ANNOTATED_INTERACTIONS_PATH, VENDOR, DatadogApi
from annotation_gateway.providers.datadog.config import DatadogSourceConfig
from annotation_gateway.providers.datadog.mapping import NO_LABELS, QueueLabels, needs_schema, to_records
from annotation_gateway.providers.datadog.queues import DatadogQueues
from annotation_gateway.providers.datadog.wire import (
    JSONAPI_MEDIA_TYPE,
    SUBJECT_KINDS,
    InteractionExtras,
    ReadPage,
    StrictInteraction,
    strict_page,
)
from annotation_gateway.providers.http import (
    RetryPolicy,
    Upstream,
    chunk_values,
    encode_query,
    make_client,
    param_len,
)
from annotation_gateway.providers.http.budget import RequestBudget
from annotation_gateway.records import Record, RecordBuilder, decode

__all__ = ["HEALTH_PROBE_CONTENT_ID", "MAX_URL_BYTES", "DatadogProvider"]

log = logging.getLogger(__name__)

MAX_URL_BYTES = 8 * 1024
"""Longest URL sent: proxies and load balancers in front of APIs commonly stop at 8 KiB."""

HEALTH_PROBE_CONTENT_ID = "annotation-gateway-health-probe"
"""A content id no one uses: the probe is an authenticated read that matches nothing."""


class _Item(NamedTuple):
    """An interaction of a page, its fields this module does not know, and (only when the read
    asks for ``raw``) the interaction as received."""

    interaction: StrictInteraction
    extras: InteractionExtras | None
    raw: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Page:
    offset: int
    total: int
    items: list[_Item]


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
        scope: DatadogSourceConfig | None = None,
        max_concurrency: int = 16,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        self._name = name
        self._page_size = page_size
        self._scope_queue_ids = tuple(scope.scope_queue_ids) if scope else ()
        self._scope_project_ids = tuple(scope.scope_project_ids) if scope else ()
        self._scope_kinds = frozenset(
            scope.scope_subject_kinds if scope and scope.scope_subject_kinds else SUBJECT_KINDS
        )
        client = make_client(
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
        self._http = Upstream(
            client,
            source=name,
            vendor=VENDOR,
            max_concurrency=max_concurrency,
            retry=retry or RetryPolicy(),
            budget=budget,
        )
        self._api = DatadogApi(self._http)
        self._labels: dict[str, QueueLabels] = {}
        self._label_locks: dict[str, asyncio.Lock] = {}
        self._queues = DatadogQueues(self._api, self._labels)

    @classmethod
    def from_config(
        cls,
        config: DatadogSourceConfig,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RequestBudget | None = None,
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
            scope=config,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            retry=RetryPolicy(attempts=config.retry_attempts, max_retry_after_s=config.max_retry_after_s),
            transport=transport,
            budget=budget,
        )

    def __repr__(self) -> str:
        return f"DatadogProvider(name={self._name!r}, base_url={str(self._http.client.base_url)!r})"

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
            scope_kinds=self._scope_kinds,
            has_queues=True,
        )

    @property
    def queues(self) -> DatadogQueues:
        """The annotation-queue write API of this organisation (what ``migrate`` writes through)."""
        return self._queues

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- reading ---

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        """:meth:`fetch_records` as canonical models."""
        return decode(await self.fetch_records(query))

    async def fetch_records(self, query: SourceQuery) -> list[Record]:
        """Every annotation on the query's content ids, each once (see the module docstring),
        as records."""
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
        include_raw = query.include_raw
        pages = await gather(
            [self._fetch_chunk(chunk, include_raw=include_raw) for chunk in chunks], prefer=SourceError
        )
        interactions: dict[str, _Item] = {}
        for chunk_items in pages:
            for item in chunk_items:
                interactions.setdefault(item.interaction.id, item)
        wanted = {k.value for k in query.subject_kinds}
        selected = [i for i in interactions.values() if not wanted or i.interaction.type in wanted]
        need_labels = {i.queue_id for i, _, _ in selected if any(needs_schema(a) for a in i.annotations)}
        await gather([self._queue_labels(queue_id) for queue_id in sorted(need_labels)], prefer=SourceError)
        names = set(query.names)
        excluded = set(query.exclude_names)
        found: dict[str, Record] = {}
        builder = RecordBuilder(self._name, ProviderKind.DATADOG.value)
        for interaction, extras, raw in selected:
            labels = self._labels.get(interaction.queue_id, NO_LABELS)
            for record in to_records(interaction, extras, raw, labels, builder):
                if names and record.name not in names:
                    continue
                if record.name in excluded:
                    continue
                found.setdefault(record.id, record)
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
        fixed = len(str(self._http.client.base_url).rstrip("/")) + len(ANNOTATED_INTERACTIONS_PATH) + 1
        fixed += len(encode_query([("offset", 2**31 - 1), ("limit", self._page_size)])) + 1
        costs = [param_len("contentIds", c) + 1 for c in content_ids]
        room = MAX_URL_BYTES - fixed
        too_long = next((c for c, cost in zip(content_ids, costs, strict=True) if cost > room), None)
        if too_long is not None:
            # No URL can carry it: the caller's input is too large, not the vendor at fault.
            raise PayloadTooLargeError(
                f"a subject id of {len(too_long)} characters does not fit in one Datadog URL "
                f"({MAX_URL_BYTES} bytes)"
            )
        return chunk_values(content_ids, costs, budget=room)

    async def _fetch_chunk(self, content_ids: Sequence[str], *, include_raw: bool) -> list[_Item]:
        """All pages of one chunk: the first, then the rest concurrently, then any tail."""
        first = await self._page(content_ids, 0, include_raw)
        items = list(first.items)
        total = first.total
        if not first.items or len(first.items) >= total:
            return items
        # The first page shows the server's real page size (it may cap our limit).
        step = len(first.items)
        rest = await gather(
            [self._page(content_ids, offset, include_raw) for offset in range(step, total, step)],
            prefer=SourceError,
        )
        covered = step
        for page in rest:
            items.extend(page.items)
            total = max(total, page.total)
            if page.offset <= covered:
                covered = max(covered, page.offset + len(page.items))
        # A short or empty page in the middle, or a total that grew: continue one page at a time.
        while covered < total:
            page = await self._page(content_ids, covered, include_raw)
            if not page.items:
                break
            items.extend(page.items)
            covered += len(page.items)
            total = page.total
        return items

    async def _page(self, content_ids: Sequence[str], offset: int, include_raw: bool) -> _Page:
        params: list[tuple[str, str | int | float | bool | None]] = [("contentIds", c) for c in content_ids]
        params += [("offset", offset), ("limit", self._page_size)]
        where = f"GET {ANNOTATED_INTERACTIONS_PATH}"

        def paged(page: ReadPage, raws: list[Mapping[str, Any] | None] | None) -> _Page:
            interactions = page.interactions
            extras = page.extras or [None] * len(interactions)
            rows = raws or [None] * len(interactions)
            items = [_Item(*item) for item in zip(interactions, extras, rows, strict=True)]
            return _Page(offset=offset, total=page.total, items=items)

        # Set by decode once it has run on an answer's bytes: if they come back to classify (not
        # today's shape), read_page does not decode them strictly a second time.
        strict_tried = False

        def classify(response: httpx.Response) -> _Page:
            page = self._api.read_page(response, where=where, strict_tried=strict_tried)
            if not include_raw:
                return paged(page, None)
            # The rows as received (their times as Datadog wrote them): parsed again only for a
            # read that asks for raw, never on the common path.
            body = orjson.loads(response.content)
            return paged(page, list(body["data"]["attributes"]["annotated_interactions"]))

        def decode(content: bytes) -> _Page | None:
            # A 200 page of today's shape, from its bytes (no httpx response built): what
            # read_page's strict path gives; any other answer is classified.
            nonlocal strict_tried
            strict_tried = True
            page = strict_page(content)
            return None if page is None else paged(page, None)

        if include_raw:
            return await self._http.get(ANNOTATED_INTERACTIONS_PATH, params, classify)
        return await self._http.get_decoded(ANNOTATED_INTERACTIONS_PATH, params, decode, classify)

    async def _queue_labels(self, queue_id: str) -> QueueLabels:
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
                labels = QueueLabels.of(await self._queues.get_label_schema(queue_id))
            except SourceNotFoundError:
                # A deleted queue still has annotations on record: fall back to schema ids.
                labels = NO_LABELS
                self._labels[queue_id] = labels
            return labels

    # --- discovering ---

    async def discover(self, request: ScopeRequest) -> ScopeSubjects:
        """The content ids of the scope's queues (module docstring), sorted, each once."""
        if self._scope_project_ids:
            listed = await gather(
                [self._queues.list_queues(project_id=p) for p in self._scope_project_ids], prefer=SourceError
            )
            queues = [q for part in listed for q in part]
        else:
            queues = await self._queues.list_queues(queue_ids=self._scope_queue_ids)
        if request.queues:
            wanted = set(request.queues)
            queues = [q for q in queues if q.id in wanted or q.name in wanted]
        kinds = {k.value for k in request.subject_kinds if k in self._scope_kinds}
        contents = await gather([self._queues.read_queue(q.id) for q in queues], prefer=SourceError)
        subjects: set[tuple[str, SubjectKind]] = set()
        for items in contents:
            subjects.update((i.content_id, SubjectKind(i.type)) for i in items if i.type in kinds)
            if len(subjects) > request.max_subjects:
                raise PayloadTooLargeError(
                    f"{self._name}: the scope's queues hold more than {request.max_subjects} "
                    "interactions; narrow it with queue, subject_kind or the source's scope_queue_ids"
                )
        narrowed = bool(self._scope_queue_ids or self._scope_project_ids or request.queues)
        return ScopeSubjects(
            tuple(sorted(subjects)), queue_ids=frozenset(q.id for q in queues) if narrowed else None
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
        request = self._http.client.build_request(
            "GET",
            ANNOTATED_INTERACTIONS_PATH,
            params=[("contentIds", HEALTH_PROBE_CONTENT_ID), ("offset", "0"), ("limit", "1")],
        )
        try:
            response = await self._http.send(request)
            self._api.read_page(response, where="health probe")
        except GatewayError as exc:
            return HealthReport(ok=False, latency_ms=_ms_since(started), detail=exc.detail)
        except Exception as exc:  # a probe reports, it never raises
            return HealthReport(ok=False, latency_ms=_ms_since(started), detail=type(exc).__name__)
        return HealthReport(ok=True, latency_ms=_ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
