"""``/healthz`` (the process answers) and ``/readyz`` (every source is reachable).

Contract: ``GET /healthz`` is 200 ``{"status": "ok"}`` whenever the process serves requests and
never touches a source. ``GET /readyz`` probes every source concurrently (each probe is bounded
by the source's timeout) and answers 200 ``{"status": "ready", "sources": {...}}`` when all are
reachable, else 503 ``source_unavailable`` problem+json whose ``errors`` name each unreachable
source. With the shared cache tier (``[cache] backend = "redis"``) the answer also carries
``"cache": {"backend": "redis", "state": "ok" | "degraded", "detail": ...}``; a degraded tier
does not make the gateway unready (it still answers, from memory and the sources: restarting or
draining it would not bring Redis back), so it never turns 200 into 503. Both are public (no
gateway key) for orchestrators; they show source names, latencies and the cache tier's state
only (never its URL). Both answer ``HEAD`` too (same status, no body), as many probes send it.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from annotation_gateway.api.auth import FederationDep
from annotation_gateway.api.problems import problem_response
from annotation_gateway.api.schemas import HealthAnswer, Problem, ReadyAnswer, ReadyCache, ReadySource
from annotation_gateway.api.timing import record_source_timing
from annotation_gateway.errors import SourceUnavailableError

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_HEALTHY = b'{"status":"ok"}'


@router.get(
    "/healthz",
    operation_id="get_health",
    summary="Liveness: the process is up",
    description="Always 200 while the process serves requests; touches no source.",
    response_model=HealthAnswer,
)
async def healthz() -> Response:
    return Response(content=_HEALTHY, media_type="application/json")


# Many probes (load balancers, uptime checkers) send HEAD. FastAPI, unlike Starlette's Route,
# does not answer HEAD for a GET route, so each probe path declares it; the server drops the body.
@router.head(
    "/healthz",
    operation_id="head_health",
    summary="Liveness, for probes that send HEAD",
    description="The status of `GET /healthz`, without a body.",
    response_model=None,
)
async def healthz_head() -> Response:
    return await healthz()


@router.get(
    "/readyz",
    operation_id="get_readiness",
    summary="Readiness: every source is reachable",
    description="Probes every source; 200 when all answer, 503 `source_unavailable` naming the "
    "unreachable ones otherwise.",
    response_model=ReadyAnswer,
    responses={503: {"model": Problem, "description": "A source is unreachable."}},
)
async def readyz(request: Request, federation: FederationDep) -> Response:
    return await _readiness(request, federation)


@router.head(
    "/readyz",
    operation_id="head_readiness",
    summary="Readiness, for probes that send HEAD",
    description="The status of `GET /readyz` (200 or 503), without a body.",
    response_model=None,
    responses={503: {"model": Problem, "description": "A source is unreachable."}},
)
async def readyz_head(request: Request, federation: FederationDep) -> Response:
    return await _readiness(request, federation)


async def _readiness(request: Request, federation: FederationDep) -> Response:
    reports, cache = await asyncio.gather(federation.ready(), federation.cache_status())
    sources = {
        name: ReadySource(
            ok=report.ok, latency_ms=round(report.latency_ms, 1), version=report.version, detail=report.detail
        )
        for name, report in reports.items()
    }
    for name, report in reports.items():
        record_source_timing(request.scope, name, report.latency_ms, "probe")
    down = sorted(name for name, report in reports.items() if not report.ok)
    if down:
        error = SourceUnavailableError(
            f"unreachable: {', '.join(down)}",
            source=down[0],
            status=503,  # here, and only here, 503 is right: this gateway is not ready
            errors=[
                {
                    "source": name,
                    "detail": reports[name].detail or "unreachable",
                    "latency_ms": sources[name].latency_ms,
                }
                for name in down
            ],
        )
        return problem_response(error, instance=request.url.path)
    if cache is None:
        answer = ReadyAnswer(status="ready", sources=sources)
        return Response(content=answer.model_dump_json(exclude={"cache"}), media_type="application/json")
    answer = ReadyAnswer(status="ready", sources=sources, cache=ReadyCache.model_validate(cache))
    return Response(content=answer.model_dump_json(), media_type="application/json")
