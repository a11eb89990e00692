"""The fast lane: a declared registry of hot routes answered without FastAPI's routing machinery.

Contract: :data:`HOT_ROUTES` lists every route the lane serves, each as (method, exact path,
the endpoint function). A hot route's endpoint is the very function its documented FastAPI route
calls, taking a plain Starlette ``Request``. :class:`FastLaneMiddleware`, a pure ASGI middleware
inside the Server-Timing middleware and outside FastAPI's router, answers a request whose method
and path match a registered route by calling that endpoint; a ``GatewayError`` becomes its
problem+json answer through :func:`~annotation_gateway.api.problems.error_response`, the app's
own problem handler; any other exception propagates to the Server-Timing middleware's
last-resort 500, exactly as a routed request's does (Starlette raises it through the user
middleware before its own outermost handler sees it).
``scope["route"]`` is set to the FastAPI route, so metrics label it like any routed request.
Everything else goes through FastAPI unchanged.

The lane must answer exactly what the routed path answers — status, headers that matter and
bytes, errors included: ``tests/api/test_fastlane.py`` sends the same requests both ways
(``create_app(..., fast_lane=False)`` turns the lane off) and compares them.

Why: a cached query is a dict lookup and joining pre-serialized bytes, cheaper than FastAPI's
per-request route matching, dependency solving and response-model plumbing it would otherwise
pay (SPEC §4: a cache hit should run close to a bare endpoint). OpenAPI still comes from the route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from annotation_gateway.api.problems import error_response
from annotation_gateway.api.routes.annotations import answer_list
from annotation_gateway.errors import GatewayError

__all__ = ["HOT_ROUTES", "FastLaneMiddleware", "HotRoute"]

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    """One route the fast lane serves: ``method`` on exactly ``path``, by ``endpoint``."""

    method: str
    path: str
    endpoint: Endpoint


HOT_ROUTES: tuple[HotRoute, ...] = (HotRoute("GET", "/v1/annotations", answer_list),)
"""The hot routes: dashboards poll GET /v1/annotations; everything else is routed."""


class FastLaneMiddleware:
    """Serves the registered hot routes directly; passes everything else on."""

    def __init__(
        self,
        app: ASGIApp,
        hot_routes: Sequence[tuple[HotRoute, BaseRoute | None]] = (),
    ) -> None:
        """``hot_routes``: each registered route with the FastAPI route documenting it (for the
        metrics' route label)."""
        self.app = app
        self._routes = {(hot.method, hot.path): (hot, route) for hot, route in hot_routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self._routes.get((scope["method"], scope["path"]))
        if found is None:
            await self.app(scope, receive, send)
            return
        hot, route = found
        if route is not None:
            scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await hot.endpoint(request)
        except GatewayError as exc:
            response = error_response(exc, hot.path)
        await response(scope, receive, send)
