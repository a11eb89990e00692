"""The FastAPI application factory.

Contract of :func:`create_app`:
- ``create_app(settings)`` builds every enabled source's provider (``build_provider``) and one
  :class:`~annotation_gateway.federation.Federation` in the lifespan, and closes them on
  shutdown; ``providers=`` supplies ready providers instead (the app still owns and closes
  them); ``federation=`` supplies a ready federation that the *caller* owns and closes;
- the cursor secret comes from ``GATEWAY_CURSOR_SECRET`` (so several gateway processes accept
  each other's cursors), else it is random per process (cursors then die with the process);
- middleware, outermost first: Server-Timing + request metrics + last-resort 500
  (:mod:`.timing`), body size limit (:mod:`.limits`); errors are problem+json (:mod:`.problems`);
- OpenAPI at ``/openapi.json``, Swagger UI at ``/docs``; every operation has an ``operation_id``,
  a summary and described parameters.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from annotation_gateway import __version__
from annotation_gateway.api.auth import Authenticator
from annotation_gateway.api.limits import MAX_REQUEST_BODY_BYTES, BodyLimitMiddleware
from annotation_gateway.api.problems import install_problem_handlers
from annotation_gateway.api.routes import annotations as annotation_routes
from annotation_gateway.api.routes import health, metrics, sources
from annotation_gateway.api.routes.metrics import GatewayMetrics
from annotation_gateway.api.timing import ServerTimingMiddleware
from annotation_gateway.federation import Federation, SourceStatus
from annotation_gateway.providers import AnnotationProvider, build_provider
from annotation_gateway.settings import GatewaySettings

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


def cursor_secret() -> bytes:
    """The key cursors are signed with: ``GATEWAY_CURSOR_SECRET`` or 32 random bytes."""
    configured = os.environ.get(CURSOR_SECRET_ENV, "").strip()
    if configured:
        return configured.encode()
    return secrets.token_bytes(CURSOR_SECRET_BYTES)


def _build_federation(
    settings: GatewaySettings, providers: Sequence[AnnotationProvider], observer: GatewayMetrics
) -> tuple[Federation, bool]:
    """The federation, and whether it reports to ``observer`` itself (else the API feeds metrics)."""
    kwargs: dict[str, Any] = {"cursor_secret": cursor_secret()}
    if "observer" in inspect.signature(Federation.__init__).parameters:
        kwargs["observer"] = observer
        return Federation(providers, settings.cache, **kwargs), True
    return Federation(providers, settings.cache, **kwargs), False


def _status_feeder(observer: GatewayMetrics) -> Callable[[list[SourceStatus]], None]:
    """Cache and upstream metrics derived from ``sources[]`` of each answer."""

    def feed(statuses: list[SourceStatus]) -> None:
        for status in statuses:
            if status.status == "skipped":
                continue
            if status.stale:
                observer.cache_lookup(status.source, "stale")
            elif status.cached:
                observer.cache_lookup(status.source, "hit")
                continue
            else:
                observer.cache_lookup(status.source, "miss")
            code = str(status.error.get("code")) if status.error else None
            observer.upstream_call(status.source, status.elapsed_ms / 1000.0, code)

    return feed


def create_app(
    settings: GatewaySettings,
    *,
    federation: Federation | None = None,
    providers: Sequence[AnnotationProvider] | None = None,
) -> FastAPI:
    """The gateway's ASGI app for ``settings`` (see the module docstring for ownership)."""
    gateway_metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if federation is not None:
            app.state.federation = federation
            yield
            return
        built: list[AnnotationProvider] = list(providers) if providers is not None else []
        try:
            if providers is None:
                for config in settings.sources:
                    if config.enabled:
                        built.append(build_provider(config))
            owned, observed = _build_federation(settings, built, gateway_metrics)
        except BaseException:
            for provider in built:
                await provider.aclose()
            raise
        app.state.federation = owned
        if not observed:
            app.state.status_metrics = _status_feeder(gateway_metrics)
        log.info("gateway ready with sources: %s", ", ".join(p.name for p in built) or "(none)")
        try:
            yield
        finally:
            await owned.aclose()

    app = FastAPI(
        title="annotation-gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.authenticator = Authenticator(settings.auth)
    app.state.metrics = gateway_metrics
    app.state.status_metrics = None
    if federation is not None:
        app.state.federation = federation
        app.state.status_metrics = _status_feeder(gateway_metrics)
    install_problem_handlers(app)
    app.include_router(annotation_routes.router)
    app.include_router(sources.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    # add_middleware prepends: the last added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_REQUEST_BODY_BYTES)
    app.add_middleware(ServerTimingMiddleware, observer=gateway_metrics)
    return app
