"""``/v1/annotations``: the federated query (GET and POST search) and writes to Phoenix sources.

Contract (SPEC §3):
- ``GET /v1/annotations`` and ``POST /v1/annotations/search`` answer
  ``{data, next_cursor, partial, sources}`` (see :class:`~annotation_gateway.api.schemas.AnnotationPage`);
  the key's source limits are passed to the federation (403 for a source outside them);
  ``Cache-Control: no-cache`` on the request bypasses the cache and ``max-stale=N`` opts into
  stale answers where they are otherwise refused (:func:`cache_policy`); the cursor is issued
  to the caller's key (``audience``) and refused for any other key;
- a failing source makes the page ``partial`` (status ``error`` with its problem); with
  ``partial=deny``, or when every source failed, the federation raises the source's error and the
  answer is its problem (502/504, or the upstream-4xx class: never a 5xx for a 4xx);
- ``POST /v1/annotations`` upserts into one writable source all-or-nothing and synchronously, so
  an immediate read sees the write (the federation invalidates the cached subjects);
- each source's time goes into ``Server-Timing`` (metrics come from the federation's observer).

The answers are written as bytes (:func:`~annotation_gateway.api.schemas.page_json`) and returned
as a raw ``Response``: ``response_model`` only documents them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep, FederationDep, authorize
from annotation_gateway.api.negotiation import require_json
from annotation_gateway.api.schemas import (
    PROBLEM_RESPONSES,
    AnnotationPage,
    AnnotationQueryParams,
    AnnotationSearchBody,
    WriteAnswer,
    WriteBody,
    list_query,
    page_json,
    query_parameters_openapi,
)
from annotation_gateway.api.timing import record_source_timing
from annotation_gateway.errors import PayloadTooLargeError, RequestValidationError
from annotation_gateway.federation import MAX_WRITE_ITEMS, FederatedQuery, Federation, QueryPage

__all__ = ["CachePolicy", "answer_list", "cache_policy", "parse_cache_control", "router"]

router = APIRouter(prefix="/v1/annotations", tags=["annotations"])

JSON = "application/json"
MAX_STALE_DIGITS = 9
"""``max-stale`` values beyond 30 years are no number a client means (and are capped anyway)."""


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What the client's ``Cache-Control`` asks of the cache (see :func:`cache_policy`)."""

    use_cache: bool = True
    max_stale_s: float | None = None

    def apply(self, query: FederatedQuery) -> FederatedQuery:
        if self.use_cache and self.max_stale_s is None:
            return query
        use_cache = query.use_cache and self.use_cache
        if use_cache == query.use_cache and self.max_stale_s == query.max_stale_s:
            return query  # built with this policy already (``list_query``'s memo is keyed by it)
        # ``replace`` validates the whole query again (~11 µs for five ids): not per request.
        return replace(query, use_cache=use_cache, max_stale_s=self.max_stale_s)


DEFAULT_POLICY = CachePolicy()


def cache_policy(request: Request) -> CachePolicy:
    """The client's ``Cache-Control`` as a :class:`CachePolicy` (:func:`parse_cache_control`)."""
    return parse_cache_control(request.headers.get("cache-control"))


def parse_cache_control(value: str | None) -> CachePolicy:
    """A ``Cache-Control`` request header (RFC 9111 request directives) as a :class:`CachePolicy`.

    ``no-cache`` / ``no-store``: read every source afresh (what is fetched still refreshes the
    cache), and no stale answer stands in for a failing source. ``max-stale=N``: the client
    accepts an answer up to N seconds old (capped by the cache's ``max_stale_s``) in place of a
    failing source — also with ``no-cache``, with ``partial=deny`` and in compare, where stale
    answers are otherwise refused; bare ``max-stale`` accepts whatever the cache keeps. A
    malformed ``max-stale`` value is a 422. Other directives are ignored.
    """
    if value is None:
        return DEFAULT_POLICY
    fresh = False
    max_stale: float | None = None
    for directive in value.split(","):
        name, _, argument = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-cache", "no-store"):
            fresh = True
        elif name == "max-stale":
            argument = argument.strip().strip('"')
            if not argument:
                max_stale = math.inf
            elif argument.isascii() and argument.isdigit() and len(argument) <= MAX_STALE_DIGITS:
                max_stale = float(argument)
            else:
                raise RequestValidationError(
                    "Cache-Control: max-stale must be a number of seconds (e.g. max-stale=60)",
                    errors=[
                        {
                            "loc": ["header", "cache-control"],
                            "msg": "max-stale takes a non-negative integer of seconds",
                            "type": "value_error",
                        }
                    ],
                )
    if not fresh and max_stale is None:
        return DEFAULT_POLICY
    return CachePolicy(use_cache=not fresh, max_stale_s=max_stale)


def _answer(request: Request, page: QueryPage) -> Response:
    scope = request.scope
    for status in page.sources:
        desc = "cached" if status.cached else ("skipped" if status.status == "skipped" else None)
        if status.stale:
            desc = "stale"
        record_source_timing(scope, status.source, status.elapsed_ms, desc)
    return Response(content=page_json(page), media_type=JSON)


_HOT_HEADERS = (b"authorization", b"accept", b"cache-control")


def _head_values(scope: Scope) -> list[str | None]:
    """The first ``Authorization``, ``Accept`` and ``Cache-Control`` values of the request's head
    (what ``request.headers.get`` returns for each), read in one pass: Starlette's ``Headers``
    finds an absent header through a ``KeyError`` (~0.8 µs each, two per cache hit)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _HOT_HEADERS and name not in found:
            found[name] = value
    return [found[name].decode("latin-1") if name in found else None for name in _HOT_HEADERS]


@router.get(
    "",
    operation_id="list_annotations",
    summary="Query annotations across every source",
    description="One federated query over every configured source (Phoenix and Datadog), merged "
    "in one schema, ordered by `updated_at` descending then `id`, paged with an opaque cursor "
    "bound to the query. Give at least one `subject_id` or `identifier`. Send "
    "`Cache-Control: no-cache` to bypass the cache.",
    response_model=AnnotationPage,
    responses=PROBLEM_RESPONSES,
    # The parameters are parsed by parse_query_params (fast path) and documented from the model.
    openapi_extra={"parameters": query_parameters_openapi(AnnotationQueryParams), **BEARER_SECURITY},
)
async def list_annotations(request: Request) -> Response:
    # Normally reached through the fast lane (api/fastlane.py), which calls this same function
    # without FastAPI's routing and dependency resolution.
    return await answer_list(request)


async def answer_list(request: Request) -> Response:
    """``GET /v1/annotations``. Auth and the federation are looked up directly rather than
    through AuthDep/FederationDep, whose dependency resolution costs a fifth of a cached answer."""
    scope = request.scope
    authorization, accept, cache_control = _head_values(scope)
    principal = await authorize(scope, authorization)
    require_json(accept)
    policy = parse_cache_control(cache_control)
    query = policy.apply(list_query(scope["query_string"], use_cache=policy.use_cache))
    federation: Federation = request.app.state.federation
    page = await federation.query(query, allowed_sources=principal.allowed_sources, audience=principal.name)
    return _answer(request, page)


@router.post(
    "/search",
    operation_id="search_annotations",
    summary="Query annotations with a JSON body (long id lists)",
    description="The query of `GET /v1/annotations` as a JSON body, for id lists too long for a "
    "URL: up to 10,000 subject ids. Lists use plural names (`subject_ids`, `names`...). Same "
    "answer, same cursor rules.",
    response_model=AnnotationPage,
    responses=PROBLEM_RESPONSES,
    openapi_extra=BEARER_SECURITY,
)
async def search_annotations(
    request: Request,
    principal: AuthDep,
    federation: FederationDep,
    body: AnnotationSearchBody,
) -> Response:
    require_json(request.headers.get("accept"))
    query = cache_policy(request).apply(body.to_query(use_cache=True))
    page = await federation.query(query, allowed_sources=principal.allowed_sources, audience=principal.name)
    return _answer(request, page)


@router.post(
    "",
    operation_id="write_annotations",
    summary="Create or update annotations in a writable source",
    description="Upserts annotations into one writable (Phoenix) source, keyed by (name, subject, "
    "identifier): all-or-nothing and synchronous, so a read right after sees them. At least one "
    "of label, score or explanation per item. Unknown subject ids → 404, nothing written.",
    response_model=WriteAnswer,
    responses={
        **PROBLEM_RESPONSES,
        400: {"description": "The source is read-only (`not_supported`)."},
        404: {"description": "Unknown source or subject (`not_found`)."},
    },
    openapi_extra=BEARER_SECURITY,
)
async def write_annotations(
    request: Request,
    principal: AuthDep,
    federation: FederationDep,
    body: WriteBody,
) -> Response:
    if len(body.annotations) > MAX_WRITE_ITEMS:
        raise PayloadTooLargeError(
            f"{len(body.annotations)} annotations in one write; the limit is {MAX_WRITE_ITEMS}"
        )
    start = time.perf_counter()
    result = await federation.write(body.source, body.annotations, allowed_sources=principal.allowed_sources)
    record_source_timing(request.scope, body.source, (time.perf_counter() - start) * 1000.0)
    answer = WriteAnswer(source=body.source, count=len(result.ids), ids=list(result.ids))
    return Response(content=answer.model_dump_json(), media_type=JSON)
