"""``GET /metrics``: Prometheus metrics of the gateway and of each upstream source.

Contract:
- every app has its own :class:`GatewayMetrics` with its own ``CollectorRegistry`` (several apps
  in one process — tests, the demo — never collide);
- metric families (all prefixed ``annotation_gateway_``):
  ``http_requests_total{route,method,status}``, ``http_request_duration_seconds{route}``,
  ``http_requests_in_flight``, ``upstream_request_duration_seconds{source,operation,outcome}``,
  ``upstream_errors_total{source,code}``, ``upstream_requests_in_flight{source}``,
  ``circuit_state{source}``, ``cache_requests_total{source,result}`` (hit | miss | stale),
  ``ratelimit_redis_degraded`` (1 while the rate limits count in process memory because Redis
  failed; :mod:`annotation_gateway.ratelimit`),
  ``webhook_deliveries_total{webhook,outcome}`` (ok | rejected | timeout | error: one per
  attempt), ``webhook_delivered_annotations_total{webhook}``, ``webhook_pending_messages{webhook}``
  (0 or 1) and ``webhook_last_success_timestamp_seconds{webhook}`` (:mod:`annotation_gateway.webhooks`);
  with the Redis cache tier (SPEC §9) also ``redis_cache_lookups_total{source,result}`` (per
  subject: hit | miss | invalid; per lookup: wait | bypass), ``redis_errors_total{operation}``
  and ``redis_up`` (1 answering, 0 degraded) — never the Redis URL; they exist only in an app
  built with that backend (``GatewayMetrics(redis=True)``);
- :class:`GatewayMetrics` is the federation's ``FederationObserver`` (``on_upstream``,
  ``on_cache``, ``on_inflight``, ``on_circuit``, ``on_shared_cache``, ``on_redis_error``,
  ``on_redis_state``) and the middleware's request observer;
- label values are only route templates, HTTP methods/status codes, configured source and
  webhook names and closed-list problem codes — never anything a client or vendor sent, so never a credential;
- several worker processes (``serve --workers N``): ``GatewayMetrics(multiprocess_dir=...)``
  renders every live worker's values through prometheus-client's multiprocess mode
  (``MultiProcessCollector`` over ``PROMETHEUS_MULTIPROC_DIR``, which ``serve`` points at a fresh
  directory before the workers start): counters and histograms are summed over the workers
  (those of a worker that exited included, so they never go backwards); the in-flight gauges are
  summed over the live workers and ``circuit_state`` is the worst state of any live worker
  (each worker has its own breakers). In one process the gauges' ``multiprocess_mode`` is inert.
  The values then live in memory-mapped files: a hit's metric updates cost 15.5 µs instead of
  9.5 µs (20,000 simulated requests, 2-core dev machine);
- the families every request or upstream call updates (``http_*``, ``cache_requests``,
  ``upstream_request_duration_seconds``, ``upstream_requests_in_flight``) are held by
  :mod:`annotation_gateway.api.hot_metrics`: in one process as plain numbers behind a collector
  (~1 µs a hit's updates), with several workers as the prometheus-client objects above.

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
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.responses import Response

from annotation_gateway.api.hot_metrics import (
    PREFIX,
    Children,
    ClientHotMetrics,
    HotMetrics,
    OwnedHotMetrics,
)

__all__ = ["GatewayMetrics", "router"]

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    """The gateway's metrics, in a registry of their own."""

    def __init__(self, *, multiprocess_dir: str | None = None, redis: bool = False) -> None:
        """``multiprocess_dir``: the ``PROMETHEUS_MULTIPROC_DIR`` of a multi-worker ``serve``
        (render every worker's values from it); ``None``: this process's values only.
        ``redis``: the shared cache tier is configured (its metrics are registered)."""
        # The *_created series double every counter's output and no dashboard reads them. The
        # switch is process-wide in prometheus-client; the gateway owns its process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors",
            "Failed source calls, by source and problem code.",
            ("source", "code"),
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            f"{PREFIX}_circuit_state",
            "Circuit breaker state per source: 0 closed, 1 half open, 2 open (with several "
            "workers: the worst of them).",
            ("source",),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.ratelimit_degraded = Gauge(
            f"{PREFIX}_ratelimit_redis_degraded",
            "1 while rate limits are counted in process memory because Redis failed (shared "
            "windows are not enforced across processes meanwhile); with several workers, the max.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.webhook_deliveries = Counter(
            f"{PREFIX}_webhook_deliveries",
            "Webhook delivery attempts, by webhook and outcome (ok, rejected: a non-2xx answer, "
            "timeout, error: a transport failure).",
            ("webhook", "outcome"),
            registry=self.registry,
        )
        self.webhook_annotations = Counter(
            f"{PREFIX}_webhook_delivered_annotations",
            "Annotations in webhook messages answered with a 2xx, by webhook.",
            ("webhook",),
            registry=self.registry,
        )
        self.webhook_pending = Gauge(
            f"{PREFIX}_webhook_pending_messages",
            "Webhook messages stored and not yet acknowledged (0 or 1 per webhook).",
            ("webhook",),
            registry=self.registry,
            multiprocess_mode="livemax",  # one worker delivers a webhook; the others report 0
        )
        self.webhook_last_success = Gauge(
            f"{PREFIX}_webhook_last_success_timestamp_seconds",
            "Unix time of the last webhook message answered with a 2xx, by webhook.",
            ("webhook",),
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.redis_lookups: Counter | None = None
        self._redis_results: Children[Counter] | None = None
        self.redis_errors: Counter | None = None
        self.redis_up: Gauge | None = None
        if redis:
            self._register_redis()
        # The families every request updates: plain numbers behind a collector in one process,
        # prometheus-client's objects (their values in the shared files) with several workers.
        self._hot: HotMetrics = (
            OwnedHotMetrics(self.registry) if multiprocess_dir is None else ClientHotMetrics(self.registry)
        )

        self._render_registry = self.registry
        if multiprocess_dir is not None:
            # The values live in per-process files; this registry reads all of them at scrape.
            self._render_registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self._render_registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]

    def _register_redis(self) -> None:
        self.redis_lookups = Counter(
            f"{PREFIX}_redis_cache_lookups",
            "Shared cache tier (Redis) lookups per source: per subject hit, miss or invalid (an "
            "undecodable value); per lookup wait (for another process's call) or bypass (Redis "
            "degraded, skipped).",
            ("source", "result"),
            registry=self.registry,
        )
        self._redis_results = Children(self.redis_lookups)
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
            multiprocess_mode="livemin",  # with several workers: 0 when any worker sees Redis down
        )
        self.redis_up.set(1)

    # --- the HTTP side (called by the Server-Timing middleware) --------------------------------

    def request_started(self) -> None:
        self._hot.started()

    def request_finished(self, route: str, method: str, status: int, seconds: float) -> None:
        self._hot.finished(route, method, status, seconds)

    # --- the upstream side: the federation's observer hooks (FederationObserver) -------------

    def on_upstream(self, source: str, operation: str, elapsed_s: float, outcome: str) -> None:
        """One upstream call ended; ``outcome`` is ``ok`` or a problem code (closed list)."""
        self._hot.upstream(source, operation, "ok" if outcome == "ok" else "error", elapsed_s)
        if outcome != "ok":
            self.upstream_errors.labels(source, outcome).inc()

    def on_cache(self, source: str, result: str) -> None:
        self._hot.cache(source, result)

    def on_inflight(self, source: str, delta: int) -> None:
        self._hot.inflight(source, delta)

    def on_circuit(self, source: str, state: str) -> None:
        self.circuit_state.labels(source).set(CIRCUIT_STATE_VALUES.get(state, -1))

    def on_shared_cache(self, source: str, result: str, count: int) -> None:
        if self._redis_results is not None:
            self._redis_results(source, result).inc(count)

    def on_redis_error(self, operation: str) -> None:
        if self.redis_errors is not None:
            self.redis_errors.labels(operation).inc()

    def on_redis_state(self, up: bool) -> None:
        if self.redis_up is not None:
            self.redis_up.set(1 if up else 0)

    def on_ratelimit_degraded(self, degraded: bool) -> None:
        """The rate limiter switched to process memory (``True``) or back to Redis."""
        self.ratelimit_degraded.set(1 if degraded else 0)

    # --- webhooks (annotation_gateway.webhooks.deliver.WebhookObserver) -------------------------

    def on_webhook_delivery(self, webhook: str, outcome: str, annotations: int) -> None:
        self.webhook_deliveries.labels(webhook, outcome).inc()
        if outcome == "ok":
            self.webhook_annotations.labels(webhook).inc(annotations)

    def on_webhook_pending(self, webhook: str, pending: int) -> None:
        self.webhook_pending.labels(webhook).set(pending)

    def on_webhook_success(self, webhook: str, at: float) -> None:
        self.webhook_last_success.labels(webhook).set(at)

    def render(self) -> bytes:
        return generate_latest(self._render_registry)


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
