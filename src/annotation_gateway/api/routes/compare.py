"""``POST /v1/compare``: pair two sources' annotations of the same subjects (SPEC §3, issue 6).

Contract:
- the body is a :class:`~annotation_gateway.compare.CompareRequest` (``subject_ids`` or
  ``scope: "all"``, ``left``, ``right``, ``names?``, ``name_map?``, ``subject_map?``,
  ``score_tolerance?``); with a scope each side reads its source's whole scope (SPEC §7);
- each side is read through the :class:`~annotation_gateway.federation.Federation` — cache,
  circuit breaker, deadline and the caller key's source limits included — as a query on that one
  source (left: ``subject_ids`` and ``names``; right: the ids and names mapped through
  ``subject_map`` / ``name_map``), following the cursor to the **last page**; the two sides are
  fetched concurrently (:func:`fetch_sides`, which the CLI reuses);
- a source the key may not use → 403 ``forbidden``; an unknown source → 422
  ``validation_error`` with ``loc`` ``["body", "left"|"right"]`` (the code the federation uses);
- **a failing source fails the request** with that source's problem (502/504, or its 4xx
  class), as with ``partial=deny``: a comparison on one side's partial data would report
  ``only_left``/``only_right`` rows that are not true. The left side's failure is reported when
  both fail;
- :func:`~annotation_gateway.compare.compare` and the rendering run in a worker thread (they are
  CPU-bound: thousands of rows must not block the event loop);
- the answer's format: ``?format=json|csv|html`` wins; otherwise the ``Accept`` header
  (``application/json``, ``text/csv``, ``text/html``, wildcards and ``q`` weights honoured; JSON
  on a tie or without the header). A ``format`` value outside the list → 422
  ``validation_error``; an ``Accept`` that admits none of them → 406 ``not_acceptable``.
  JSON is the :class:`~annotation_gateway.compare.CompareResult`; CSV and HTML are
  :func:`~annotation_gateway.reports.to_csv` / :func:`~annotation_gateway.reports.to_html` (the
  HTML report is one self-contained file). Answers carry ``Vary: Accept``;
- ``Cache-Control: no-cache`` on the request bypasses the cache for both sides. A stale cached
  answer never stands in for a failing side (that would compare old data as if it were
  current) unless the client opts in with ``Cache-Control: max-stale=N``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response

from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep, FederationDep
from annotation_gateway.api.negotiation import REPORT_MEDIA_TYPES, ReportFormat, negotiate_report
from annotation_gateway.api.routes.annotations import DEFAULT_POLICY, CachePolicy, cache_policy
from annotation_gateway.api.schemas import PROBLEM_RESPONSES
from annotation_gateway.api.timing import record_source_timing
from annotation_gateway.compare import CompareRequest, CompareResult, compare
from annotation_gateway.errors import ForbiddenError, NotAcceptableError, RequestValidationError
from annotation_gateway.federation import MAX_PAGE_SIZE, FederatedQuery, Federation
from annotation_gateway.model import Annotation
from annotation_gateway.reports import to_csv, to_html, to_json

__all__ = [
    "CompareFormat",
    "NotAcceptableError",
    "fetch_sides",
    "render",
    "router",
]

router = APIRouter(prefix="/v1", tags=["compare"])


CompareFormat = ReportFormat
"""The formats compare answers in (the report routes' one choice)."""


def render(result: CompareResult, fmt: CompareFormat) -> bytes:
    """The result's bytes in ``fmt`` (CPU-bound: call it off the event loop for big results)."""
    if fmt is CompareFormat.CSV:
        return to_csv(result).encode()
    if fmt is CompareFormat.HTML:
        return to_html(result, title=f"Annotations: {result.left} vs {result.right}").encode()
    return to_json(result)


def _check_source(federation: Federation, name: str, allowed: frozenset[str] | None, side: str) -> None:
    if name not in federation.source_names:
        visible = [n for n in federation.source_names if allowed is None or n in allowed]
        raise RequestValidationError(
            f"unknown {side} source {name!r}; known: {', '.join(visible) or 'none'}",
            errors=[{"loc": ["body", side], "msg": f"unknown source {name!r}", "type": "value_error"}],
        )
    if allowed is not None and name not in allowed:
        raise ForbiddenError(f"this key may not use source {name!r}")


async def _read_all(
    federation: Federation,
    query: FederatedQuery,
    allowed: frozenset[str] | None,
) -> tuple[list[Annotation], float]:
    started = time.perf_counter()
    out: list[Annotation] = []
    async for page in federation.pages(query, allowed_sources=allowed):
        out.extend(page.data)
    return out, (time.perf_counter() - started) * 1000


async def fetch_sides(
    federation: Federation,
    request: CompareRequest,
    *,
    allowed_sources: frozenset[str] | None = None,
    policy: CachePolicy = DEFAULT_POLICY,
    timing: Callable[[str, float], None] | None = None,
) -> tuple[list[Annotation], list[Annotation]]:
    """Every annotation of the request's subjects (and names) in the left and the right source.

    Raises the failing source's error (left first), ``ForbiddenError`` or
    ``RequestValidationError`` as the module docstring says. ``timing(source, ms)`` is told how
    long each side took.
    """
    _check_source(federation, request.left, allowed_sources, "left")
    _check_source(federation, request.right, allowed_sources, "right")
    right_names = request.right_names()
    queries = (
        FederatedQuery(
            subject_ids=tuple(request.subject_ids),
            scope=request.scope,
            names=tuple(request.names or ()),
            sources=(request.left,),
            limit=MAX_PAGE_SIZE,
            partial="deny",
        ),
        FederatedQuery(
            subject_ids=tuple(dict.fromkeys(request.right_subject_ids())),
            scope=request.scope,
            names=tuple(right_names or ()),
            sources=(request.right,),
            limit=MAX_PAGE_SIZE,
            partial="deny",
        ),
    )
    results = await asyncio.gather(
        *(_read_all(federation, policy.apply(q), allowed_sources) for q in queries), return_exceptions=True
    )
    sides: list[list[Annotation]] = []
    for source, result in zip((request.left, request.right), results, strict=True):
        if isinstance(result, BaseException):
            raise result
        if timing is not None:
            timing(source, result[1])
        sides.append(result[0])
    return sides[0], sides[1]


def _run_compare(
    left: Sequence[Annotation], right: Sequence[Annotation], request: CompareRequest, fmt: CompareFormat
) -> bytes:
    return render(compare(left, right, request), fmt)


_D_FORMAT = (
    "`json` (default), `csv` (one record per row) or `html` (a self-contained report). "
    "Overrides the `Accept` header (`application/json`, `text/csv`, `text/html`)."
)


@router.post(
    "/compare",
    operation_id="compare_sources",
    summary="Compare two sources' annotations of the same subjects",
    description="Pairs the left and the right source's annotations by (subject, name), with "
    "optional `name_map` / `subject_map` (left → right), and answers one row per pair with "
    "status `agree | label_differs | score_differs | only_left | only_right`, both sides' "
    "annotations, and a summary per name (counts, agreement rate, Cohen's kappa, mean absolute "
    "score difference). Several annotations of one (subject, name) on a side are a group: "
    "majority label, mean score. Every page of both sources is read; **a failing source fails "
    "the request** with its problem (a comparison on partial data would lie). "
    "`?format=csv` or `Accept: text/csv` gives CSV; `?format=html` or `Accept: text/html` a "
    "self-contained HTML report.",
    response_model=CompareResult,
    responses={
        200: {
            "description": "The comparison (JSON), or CSV / HTML as asked.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
        },
        **PROBLEM_RESPONSES,
        406: {
            "description": "The Accept header admits none of JSON, CSV, HTML (`not_acceptable`).",
        },
    },
    openapi_extra=BEARER_SECURITY,
)
async def compare_sources(
    request: Request,
    principal: AuthDep,
    federation: FederationDep,
    body: Annotated[
        CompareRequest,
        Body(
            description="Which subjects (left vocabulary), which two sources, and how their "
            "names and subject ids map (left → right, one-to-one).",
            examples=[
                {
                    "subject_ids": ["support-01", "support-07"],
                    "left": "phoenix-prod",
                    "right": "datadog-us1",
                    "name_map": {"quality": "answer_quality"},
                    "score_tolerance": 0.05,
                }
            ],
        ),
    ],
    format: Annotated[CompareFormat | None, Query(description=_D_FORMAT)] = None,
) -> Response:
    fmt = negotiate_report(request.headers.get("accept"), format)
    left, right = await fetch_sides(
        federation,
        body,
        allowed_sources=principal.allowed_sources,
        policy=cache_policy(request),
        timing=lambda source, ms: record_source_timing(request.scope, source, ms),
    )
    content = await anyio.to_thread.run_sync(_run_compare, left, right, body, fmt)
    headers = {"Vary": "Accept"}
    if fmt is CompareFormat.CSV:
        headers["Content-Disposition"] = f'attachment; filename="compare-{body.left}-{body.right}.csv"'
    return Response(content=content, media_type=REPORT_MEDIA_TYPES[fmt], headers=headers)
