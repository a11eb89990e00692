"""The FastAPI application factory.

Contract of :func:`create_app`:
- ``create_app(settings)`` builds every enabled source's provider (``build_provider``) and one
  :class:`~annotation_gateway.federation.Federation` in the lifespan, and closes them on
  shutdown; ``providers=`` supplies ready providers instead (the app still owns and closes
  them); ``federation=`` supplies a ready federation that the *caller* owns and closes;
- the cursor secret comes from the variable ``server.cursor_secret_env`` names
  (``GATEWAY_CURSOR_SECRET``; so several gateway processes accept each other's cursors), else it
  is random per process (cursors then die with the process); the breaker, deadline and bulkhead
  come from ``[resilience]``;
- rate limits (:mod:`annotation_gateway.ratelimit`): one limiter per app when a source or a key
  has a ``rate_limit`` (Redis-shared with ``[cache] backend = "redis"``): each source's budget is
  given to its provider, each key's limit is checked after authentication (:mod:`.ratelimit`);
- middleware, outermost first: Server-Timing + request metrics + last-resort 500
  (:mod:`.timing`), body size limit (:mod:`.limits`), the fast lane for the hot routes
  (:mod:`.fastlane`, ``fast_lane=False`` turns it off); errors are problem+json (:mod:`.problems`);
- OpenAPI at ``/openapi.json``, Swagger UI at ``/docs`` (its assets served from the
  ``swagger-ui-bundle`` package, so it works offline); every operation has an ``operation_id``,
  a summary and described parameters; no trailing-slash redirects (an unknown path is a 404);
- ``[[webhooks]]`` (:mod:`annotation_gateway.webhooks`): their delivery loops start in the
  lifespan once the federation is there (a missing or malformed secret fails the startup) and
  stop before it closes; their status is ``GET /v1/webhooks`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from annotation_gateway import __version__
from annotation_gateway.allocator import fix_mmap_threshold
from annotation_gateway.api.auth import BEARER_SCHEME_NAME, BEARER_SECURITY_SCHEME, Authenticator
from annotation_gateway.api.fastlane import HOT_ROUTES, FastLaneMiddleware, HotRoute
from annotation_gateway.api.limits import MAX_REQUEST_BODY_BYTES, BodyLimitMiddleware
from annotation_gateway.api.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from annotation_gateway.api.ratelimit import ClientLimits
from annotation_gateway.api.routes import aggregates as aggregate_routes
from annotation_gateway.api.routes import annotations as annotation_routes
from annotation_gateway.api.routes import changes as change_routes
from annotation_gateway.api.routes import compare as compare_routes
from annotation_gateway.api.routes import export as export_routes
from annotation_gateway.api.routes import health, metrics, sources
from annotation_gateway.api.routes import webhooks as webhook_routes
from annotation_gateway.api.routes.metrics import GatewayMetrics
from annotation_gateway.api.schemas import Problem
from annotation_gateway.api.timing import ServerTimingMiddleware
from annotation_gateway.federation import Federation
from annotation_gateway.providers import AnnotationProvider, build_provider
from annotation_gateway.ratelimit import RateLimiter, source_budgets
from annotation_gateway.settings import GatewaySettings
from annotation_gateway.webhooks.deliver import WebhookService

__all__ = ["CURSOR_SECRET_ENV", "create_app", "cursor_secret"]

log = logging.getLogger(__name__)

CURSOR_SECRET_ENV = "GATEWAY_CURSOR_SECRET"  # noqa: S105 - the variable's name, not a secret
CURSOR_SECRET_BYTES = 32

DESCRIPTION = """\
One federated REST API over **Arize Phoenix** and **Datadog LLM Observability** annotations.

Authenticate with `Authorization: Bearer <gateway key>`. Errors are RFC 9457
`application/problem+json` with a machine-readable `code`. Every answer carries `Server-Timing`
with one `src-<source>` entry per source involved and the gateway's own time.
"""


def cursor_secret(env: str = CURSOR_SECRET_ENV) -> bytes:
    """The key cursors are signed with: the environment variable ``env`` (``server.cursor_secret_env``,
    ``GATEWAY_CURSOR_SECRET`` by default) or 32 random bytes."""
    configured = os.environ.get(env, "").strip()
    if configured:
        return configured.encode()
    return secrets.token_bytes(CURSOR_SECRET_BYTES)


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """OpenAPI with the bearer scheme, and error answers documented as problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER_SCHEME_NAME] = BEARER_SECURITY_SCHEME
        schemas = components.setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        problem_content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for status, response in operation.get("responses", {}).items():
                    # FastAPI documents every model under application/json; errors are problem+json.
                    if status[:1] in ("4", "5"):
                        response["content"] = problem_content
        app.openapi_schema = schema
        return schema

    return openapi


DOCS_PATH = "/docs"
DOCS_ASSETS_PATH = "/docs/assets"


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` with its JavaScript and CSS served from the ``swagger-ui-bundle``
    package: FastAPI's default loads them from a CDN, so ``/docs`` is blank without internet."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)


def _documenting(routers: Sequence[APIRouter], hot: HotRoute) -> APIRoute:
    """The FastAPI route that documents a hot route (every hot route must have one)."""
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path == hot.path and hot.method in (route.methods or ()):
                return route
    raise LookupError(f"hot route {hot.method} {hot.path} has no documented FastAPI route")


def create_app(
    settings: GatewaySettings,
    *,
    federation: Federation | None = None,
    providers: Sequence[AnnotationProvider] | None = None,
    fast_lane: bool = True,
    metrics_multiprocess_dir: str | None = None,
) -> FastAPI:
    """The gateway's ASGI app for ``settings`` (see the module docstring for ownership).
    ``fast_lane=False`` routes the hot routes through FastAPI too (the parity test compares);
    ``metrics_multiprocess_dir``: ``/metrics`` renders every worker's values from that
    ``PROMETHEUS_MULTIPROC_DIR`` (``serve --workers N``)."""
    gateway_metrics = GatewayMetrics(
        multiprocess_dir=metrics_multiprocess_dir,
        redis=settings.cache.backend == "redis" and settings.cache.enabled,
    )
    limiter = RateLimiter.from_settings(settings, on_degraded=gateway_metrics.on_ratelimit_degraded)
    budgets = source_budgets(limiter, settings)

    webhooks = WebhookService(settings.webhooks, observer=gateway_metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        fix_mmap_threshold(settings.server.malloc_mmap_threshold_bytes)  # each worker is a process
        if limiter is not None:
            await limiter.warm()
        if federation is not None:
            app.state.federation = federation
            await webhooks.start(federation)
            try:
                yield
            finally:
                await webhooks.stop()
            return
        built: list[AnnotationProvider] = list(providers) if providers is not None else []
        try:
            if providers is None:
                for config in settings.sources:
                    if config.enabled:
                        built.append(build_provider(config, budget=budgets.get(config.name)))
            owned = Federation.from_settings(
                built,
                settings,
                cursor_secret=cursor_secret(settings.server.cursor_secret_env),
                observer=gateway_metrics,
            )
        except BaseException:
            for provider in built:
                await provider.aclose()
            raise
        app.state.federation = owned
        try:
            # Started after the federation they read, stopped before it closes.
            await webhooks.start(owned)
        except BaseException:
            await owned.aclose()
            raise
        log.info("gateway ready with sources: %s", ", ".join(p.name for p in built) or "(none)")
        try:
            yield
        finally:
            await webhooks.stop()
            await owned.aclose()

    app = FastAPI(
        title="annotation-gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package's own assets below, not from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
        # No 307 to the path without its trailing slash: Starlette builds that Location from the
        # client's Host header, before authentication. An unknown path is a 404 problem.
        redirect_slashes=False,
        # FastAPI's native OpenTelemetry support asks the global OTel providers whether they are
        # configured on every request (~5 % of a cache hit's CPU); the gateway reports through
        # its own Prometheus metrics and Server-Timing, and configures no OTel provider.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.authenticator = Authenticator(settings.auth)
    app.state.client_limits = ClientLimits.from_settings(limiter, settings.auth)
    app.state.metrics = gateway_metrics
    app.state.webhooks = webhooks
    if federation is not None:
        # A caller-built federation reports upstream metrics to whatever observer it was given
        # (build it with observer=app.state.metrics to see them in /metrics).
        app.state.federation = federation
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    _install_docs(app)
    install_problem_handlers(app)
    # Before the annotations router; /v1/annotations/export is not the fast lane's exact path.
    routers = (
        export_routes.router,
        aggregate_routes.router,
        change_routes.router,
        annotation_routes.router,
        compare_routes.router,
        sources.router,
        webhook_routes.router,
        health.router,
        metrics.router,
    )
    for router in routers:
        app.include_router(router)
    # add_middleware prepends: the last added is the outermost.
    if fast_lane:
        app.add_middleware(
            FastLaneMiddleware, hot_routes=[(hot, _documenting(routers, hot)) for hot in HOT_ROUTES]
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_REQUEST_BODY_BYTES)
    app.add_middleware(ServerTimingMiddleware, observer=gateway_metrics)
    return app
