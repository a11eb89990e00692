"""``GET /v1/annotations/changes`` (SPEC §10): what was created or updated since a watermark.

Contract: the filters of ``GET /v1/annotations`` (ids or ``scope=all``; not ``cursor``) plus
``since`` (the previous answer's ``next_since``; absent: from the beginning) and ``limit``
(default 100, max 1000). Answer ``{"data": [...], "next_since": str, "partial", "sources"}``,
``data`` oldest first, each annotation in the SPEC §2 shape; an empty ``data`` means caught up.
A ``since`` that was altered, or issued for other filters or another key, is 422
``invalid_cursor``. What the feed guarantees (never a change skipped, perhaps one twice; no
deletions) is :mod:`annotation_gateway.federation.changes`'s contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep, FederationDep
from annotation_gateway.api.problems import validation_problem
from annotation_gateway.api.schemas import (
    PROBLEM_RESPONSES,
    AnnotationQueryParams,
    parse_query_params,
    query_items,
    query_parameters_openapi,
    source_statuses,
)
from annotation_gateway.federation import limits
from annotation_gateway.federation.changes import ChangesPage
from annotation_gateway.records import json_items

__all__ = ["changes_json", "router"]

router = APIRouter(prefix="/v1/annotations", tags=["changes"])


def changes_json(page: ChangesPage) -> bytes:
    """The answer's bytes; the records written by one msgspec call."""
    return b"".join(
        (
            b'{"data":[',
            json_items(page.records),
            b'],"next_since":',
            orjson.dumps(page.next_since),
            b',"partial":',
            b"true" if page.partial else b"false",
            b',"sources":',
            orjson.dumps(source_statuses(page.sources)),
            b"}",
        )
    )


def _parameters() -> list[dict[str, Any]]:
    own: list[dict[str, Any]] = [
        {
            "name": "since",
            "in": "query",
            "required": False,
            "description": "`next_since` of the previous answer (opaque); absent: from the beginning.",
            "schema": {"type": "string", "maxLength": limits.MAX_SINCE_LENGTH},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": f"Changes per answer, 1..{limits.MAX_CHANGES_LIMIT}.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": limits.MAX_CHANGES_LIMIT,
                "default": limits.DEFAULT_CHANGES_LIMIT,
            },
        },
    ]
    rest = [
        p for p in query_parameters_openapi(AnnotationQueryParams) if p["name"] not in ("limit", "cursor")
    ]
    return own + rest


@router.get(
    "/changes",
    operation_id="annotation_changes",
    summary="Annotations created or updated after a watermark, oldest first",
    description="The filters of `GET /v1/annotations` (ids or `scope=all`) plus `since` and "
    "`limit`. Oldest first (`updated_at`, then `id`); `next_since` continues after this answer. "
    "No change is ever skipped (one that lands while a page is read shows up on the next call at "
    "the latest); a change may come twice. An empty `data` means caught up: poll again with the "
    "same `next_since`. Vendors expose no deletions, so the feed has none. Reads are never "
    "answered from the cache.",
    response_class=Response,
    responses={
        200: {"description": "`{data, next_since, partial, sources}`"},
        **PROBLEM_RESPONSES,
    },
    openapi_extra={"parameters": _parameters(), **BEARER_SECURITY},
)
async def annotation_changes(request: Request, principal: AuthDep, federation: FederationDep) -> Response:
    since: str | None = None
    limit = limits.DEFAULT_CHANGES_LIMIT
    filters: list[tuple[str, str]] = []
    refused: list[Mapping[str, Any]] = []
    for key, value in query_items(request.scope["query_string"]):
        if key == "since":
            since = value
        elif key == "limit":
            try:
                limit = int(value)
            except ValueError:
                refused.append(
                    {"loc": ("query", "limit"), "msg": "must be an integer", "type": "int_parsing"}
                )
        elif key == "cursor":
            refused.append(
                {"loc": ("query", "cursor"), "msg": "not allowed: use since", "type": "extra_forbidden"}
            )
        else:
            filters.append((key, value))
    if refused:
        raise validation_problem(refused)
    query = parse_query_params(filters).to_query(use_cache=False)
    page = await federation.changes(
        query,
        since=since,
        limit=limit,
        allowed_sources=principal.allowed_sources,
        audience=principal.name,
    )
    return Response(changes_json(page), media_type="application/json")
