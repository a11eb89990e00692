"""``/v1/annotations``: the federated query (GET and POST search) and writes to Phoenix sources.

Contract (SPEC §3):
- ``GET /v1/annotations`` and ``POST /v1/annotations/search`` answer
  ``{data, next_cursor, partial, sources}`` (see :class:`~annotation_gateway.api.schemas.AnnotationPage`);
  the key's source limits are passed to the federation (403 for a source outside them);
  ``Cache-Control: no-cache`` on the request bypasses the cache;
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

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep, FederationDep, authenticate
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
from annotation_gateway.errors import PayloadTooLargeError
from annotation_gateway.federation import MAX_WRITE_ITEMS, Federation, QueryPage

__all__ = ["answer_list", "router"]

router = APIRouter(prefix="/v1/annotations", tags=["annotations"])

JSON = "application/json"


def wants_fresh(request: Request) -> bool:
    """True when the client sent ``Cache-Control: no-cache`` (or ``no-store``)."""
    value = request.headers.get("cache-control")
    return value is not None and ("no-cache" in value.lower() or "no-store" in value.lower())


def _answer(request: Request, page: QueryPage) -> Response:
    state = request.state
    for status in page.sources:
        desc = "cached" if status.cached else ("skipped" if status.status == "skipped" else None)
        if status.stale:
            desc = "stale"
        record_source_timing(state, status.source, status.elapsed_ms, desc)
    return Response(content=page_json(page), media_type=JSON)


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
    principal = await authenticate(request)
    query = list_query(request.scope["query_string"], use_cache=not wants_fresh(request))
    federation: Federation = request.app.state.federation
    page = await federation.query(query, allowed_sources=principal.allowed_sources)
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
    query = body.to_query(use_cache=not wants_fresh(request))
    page = await federation.query(query, allowed_sources=principal.allowed_sources)
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
    record_source_timing(request.state, body.source, (time.perf_counter() - start) * 1000.0)
    answer = WriteAnswer(source=body.source, count=len(result.ids), ids=list(result.ids))
    return Response(content=answer.model_dump_json(), media_type=JSON)
