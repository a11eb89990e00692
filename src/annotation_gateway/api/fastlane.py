"""The fast lane: ``GET /v1/annotations`` answered without FastAPI's routing machinery.

Contract: a pure ASGI middleware, inside the Server-Timing middleware and outside FastAPI's
router. A ``GET`` whose path is exactly ``/v1/annotations`` is answered by
:func:`~annotation_gateway.api.routes.annotations.answer_list` — the very function the
documented FastAPI route calls — with a plain Starlette ``Request``; a ``GatewayError`` becomes its
problem+json answer exactly as the app's handler would make it; anything else propagates to the
Server-Timing middleware (500 problem). ``scope["route"]`` is set to the FastAPI route, so
metrics label it like any routed request. Every other request goes through FastAPI unchanged.

Why: a cached query is a dict lookup and joining pre-serialized bytes, cheaper than FastAPI's
per-request route matching, dependency solving and response-model plumbing it would otherwise
pay (SPEC §4: a cache hit should run close to a bare endpoint). OpenAPI still comes from the route.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from annotation_gateway.api.problems import error_response
from annotation_gateway.api.routes.annotations import answer_list
from annotation_gateway.errors import GatewayError

__all__ = ["FAST_LANE_PATH", "FastLaneMiddleware"]

FAST_LANE_PATH = "/v1/annotations"


class FastLaneMiddleware:
    """Serves ``GET /v1/annotations`` directly; passes everything else on."""

    def __init__(self, app: ASGIApp, route: BaseRoute | None = None) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != FAST_LANE_PATH:
            await self.app(scope, receive, send)
            return
        if self.route is not None:
            scope["route"] = self.route
        request = Request(scope, receive)
        try:
            response = await answer_list(request)
        except GatewayError as exc:
            response = error_response(exc, FAST_LANE_PATH)
        await response(scope, receive, send)
