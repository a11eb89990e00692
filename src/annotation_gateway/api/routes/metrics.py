"""``GET /metrics``: Prometheus metrics of the gateway and of each upstream source.

Contract:
- every app has its own :class:`GatewayMetrics` with its own ``CollectorRegistry`` (several apps
  in one process — tests, the demo — never collide);
- metric families (all prefixed ``annotation_gateway_``):
  ``http_requests_total{route,method,status}``, ``http_request_duration_seconds{route}``,
  ``http_requests_in_flight``, ``upstream_request_duration_seconds{source,operation,outcome}``,
  ``upstream_errors_total{source,code}``, ``upstream_requests_in_flight{source}``,
  ``circuit_state{source}``, ``cache_requests_total{source,result}`` (hit | miss | stale);
  with the Redis cache tier (SPEC §9) also ``redis_cache_lookups_total{source,result}`` (per
  subject: hit | miss | invalid; per lookup: wait | bypass), ``redis_errors_total{operation}``
  and ``redis_up`` (1 answering, 0 degraded) — never the Redis URL; they exist only in an app
  built with that backend (``GatewayMetrics(redis=True)``);
- :class:`GatewayMetrics` is the federation's ``FederationObserver`` (``on_upstream``,
  ``on_cache``, ``on_inflight``, ``on_circuit``, ``on_shared_cache``, ``on_redis_error``,
  ``on_redis_state``) and the middleware's request observer;
- label values are only route templates, HTTP methods/status codes, configured source names and
  closed-list problem codes — never anything a client or vendor sent, so never a credential.

The endpoint is public (no gateway key), as Prometheus scrapers expect; it reveals source names
and counts only.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.responses import Response

__all__ = ["GatewayMetrics", "router"]

PREFIX = "annotation_gateway"
# Buckets in seconds: a cache hit is sub-millisecond, a cold Phoenix query 10-500 ms, a timeout 5 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    """The gateway's metrics, in a registry of their own."""

    def __init__(self, *, redis: bool = False) -> None:
        """``redis``: the shared cache tier is configured (its metrics are registered)."""
        # The *_created series double every counter's output and no dashboard reads them. The
        # switch is process-wide in prometheus-client; the gateway owns its process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_http_requests_in_flight",
            "HTTP requests being answered right now.",
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_request_duration_seconds",
            "Time a source took to answer the gateway, by source, operation (fetch|write) and "
            "outcome (ok|error).",
            ("source", "operation", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors",
            "Failed source calls, by source and problem code.",
            ("source", "code"),
            registry=self.registry,
        )
        self.upstream_in_flight = Gauge(
            f"{PREFIX}_upstream_requests_in_flight",
            "Upstream calls in progress, per source.",
            ("source",),
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            f"{PREFIX}_circuit_state",
            "Circuit breaker state per source: 0 closed, 1 half open, 2 open.",
            ("source",),
            registry=self.registry,
        )
        self.cache = Counter(
            f"{PREFIX}_cache_requests",
            "Cache lookups per source: hit, miss, or stale (served stale on error).",
            ("source", "result"),
            registry=self.registry,
        )
        self.redis_lookups: Counter | None = None
        self.redis_errors: Counter | None = None
        self.redis_up: Gauge | None = None
        if redis:
            self._register_redis()
        # labels() takes a lock and builds a key each call; the children are cached here instead.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._cache_children: dict[tuple[str, str], Counter] = {}
        self._redis_children: dict[tuple[str, str], Counter] = {}

    def _register_redis(self) -> None:
        self.redis_lookups = Counter(
            f"{PREFIX}_redis_cache_lookups",
            "Shared cache tier (Redis) lookups per source: per subject hit, miss or invalid (an "
            "undecodable value); per lookup wait (for another process's call) or bypass (Redis "
            "degraded, skipped).",
            ("source", "result"),
            registry=self.registry,
        )
        self.redis_errors = Counter(
            f"{PREFIX}_redis_errors",
            "Failed Redis calls of the shared cache tier, by operation.",
            ("operation",),
            registry=self.registry,
        )
        self.redis_up = Gauge(
            f"{PREFIX}_redis_up",
            "Whether the shared cache tier's Redis answers (1) or the tier is degraded (0).",
            registry=self.registry,
        )
        self.redis_up.set(1)

    # --- the HTTP side (called by the Server-Timing middleware) --------------------------------

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(self, route: str, method: str, status: int, seconds: float) -> None:
        self.in_flight.dec()
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        histogram = self._duration_children.get(route)
        if histogram is None:
            histogram = self._duration_children[route] = self.request_duration.labels(route)
        histogram.observe(seconds)

    # --- the upstream side: the federation's observer hooks (FederationObserver) -------------

    def on_upstream(self, source: str, operation: str, elapsed_s: float, outcome: str) -> None:
        """One upstream call ended; ``outcome`` is ``ok`` or a problem code (closed list)."""
        self.upstream_duration.labels(source, operation, "ok" if outcome == "ok" else "error").observe(
            elapsed_s
        )
        if outcome != "ok":
            self.upstream_errors.labels(source, outcome).inc()

    def on_cache(self, source: str, result: str) -> None:
        # Called per source on every query, cache hits included: keep the hot path lock-free.
        key = (source, result)
        counter = self._cache_children.get(key)
        if counter is None:
            counter = self._cache_children[key] = self.cache.labels(source, result)
        counter.inc()

    def on_inflight(self, source: str, delta: int) -> None:
        self.upstream_in_flight.labels(source).inc(delta)

    def on_circuit(self, source: str, state: str) -> None:
        self.circuit_state.labels(source).set(CIRCUIT_STATE_VALUES.get(state, -1))

    def on_shared_cache(self, source: str, result: str, count: int) -> None:
        if self.redis_lookups is None:
            return
        key = (source, result)
        counter = self._redis_children.get(key)
        if counter is None:
            counter = self._redis_children[key] = self.redis_lookups.labels(source, result)
        counter.inc(count)

    def on_redis_error(self, operation: str) -> None:
        if self.redis_errors is not None:
            self.redis_errors.labels(operation).inc()

    def on_redis_state(self, up: bool) -> None:
        if self.redis_up is not None:
            self.redis_up.set(1 if up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    operation_id="get_metrics",
    summary="Prometheus metrics",
    description="Request counts and latencies, upstream latency and errors per source, cache "
    "hits and misses, and requests in flight, in the Prometheus text format. No key needed.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
async def get_metrics(request: Request) -> Response:
    metrics: GatewayMetrics = request.app.state.metrics
    return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)
