"""``GET /v1/sources``: each configured source, what it can do, and how healthy it is.

Contract: one entry per source the caller's key may use (a key limited to some sources sees only
those), with its provider, capabilities (subject kinds, pushed-down filters, whether it needs
subject ids, writable kinds) and health (circuit state, last probe time, outcome and latency).
``?refresh=true`` probes every source now instead of showing the last probe. No credential, base
URL or vendor account detail is ever part of the answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep, FederationDep
from annotation_gateway.api.schemas import (
    PROBLEM_RESPONSES,
    Capabilities,
    SourceHealth,
    SourceInfoModel,
    SourceList,
)
from annotation_gateway.api.timing import record_source_timing
from annotation_gateway.federation import SourceInfo

__all__ = ["router", "source_model"]

router = APIRouter(prefix="/v1/sources", tags=["sources"])


def source_model(info: SourceInfo) -> SourceInfoModel:
    caps = info.capabilities
    health = info.last_health
    return SourceInfoModel(
        name=info.name,
        provider=info.provider,
        capabilities=Capabilities(
            subject_kinds=sorted(caps.subject_kinds),
            pushdown=sorted(caps.pushdown),
            needs_subject_ids=caps.needs_subject_ids,
            writable_kinds=sorted(caps.writable_kinds),
            writable=bool(caps.writable_kinds),
        ),
        health=SourceHealth(
            circuit_state=info.circuit_state,
            last_checked_at=info.last_checked_at,
            ok=health.ok if health is not None else None,
            latency_ms=round(health.latency_ms, 1) if health is not None else None,
            version=health.version if health is not None else None,
            detail=health.detail if health is not None else None,
        ),
    )


@router.get(
    "",
    operation_id="list_sources",
    summary="List the configured sources with capabilities and health",
    description="Each source this key may use: provider, which filters it pushes down, whether "
    "it can be written to, and its health (last probe, latency, circuit breaker state).",
    response_model=SourceList,
    responses={401: PROBLEM_RESPONSES[401], 429: PROBLEM_RESPONSES[429]},
    openapi_extra=BEARER_SECURITY,
)
async def list_sources(
    request: Request,
    principal: AuthDep,
    federation: FederationDep,
    refresh: Annotated[
        bool, Query(description="Probe every source now instead of showing the last probe.")
    ] = False,
) -> Response:
    infos = await federation.sources_info(refresh=refresh)
    allowed = principal.allowed_sources
    models = [source_model(info) for info in infos if allowed is None or info.name in allowed]
    if refresh:
        for model in models:
            if model.health.latency_ms is not None:
                record_source_timing(request.scope, model.name, model.health.latency_ms, "probe")
    return Response(content=SourceList(data=models).model_dump_json(), media_type="application/json")
