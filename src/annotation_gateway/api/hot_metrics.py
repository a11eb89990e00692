"""The metric families every request updates, held the way the process's mode calls for.

Contract:
- a :class:`HotMetrics` holds the families the Server-Timing middleware and the federation's
  observer hooks update on every request and every upstream call (names, help and buckets as
  :mod:`annotation_gateway.api.routes.metrics` documents them): ``http_requests_total{route,
  method,status}``, ``http_request_duration_seconds{route}``, ``http_requests_in_flight``,
  ``cache_requests_total{source,result}``, ``upstream_request_duration_seconds{source,operation,
  outcome}`` and ``upstream_requests_in_flight{source}``;
- :class:`OwnedHotMetrics` (one process: ``serve``, the tests, the demo) holds their values as
  plain numbers — a dict entry per label set, a histogram's bucket found by bisection — and
  exposes them through a prometheus-client ``Collector`` registered in the app's registry, so a
  scrape reads them as they are. It is updated from the app's event loop only (its requests, its
  federation); a scrape copies each table before reading it;
- :class:`ClientHotMetrics` (``serve --workers N``) keeps them in prometheus-client's metric
  objects, whose values then live in the multiprocess directory's files, where the worker that
  answers a scrape reads every worker's (prometheus-client has no public way to add a
  histogram's bucket counts in bulk, so owned values could not be handed to those files);
- for the same events both expose the same samples (``tests/api/test_hot_metrics.py``).

Why: each prometheus-client update takes a lock and checks its metric's labels; a cache hit
makes seven (the in-flight gauge up and down, the request counter, the latency histogram's sum
and bucket, two cache counters). Measured on the bench's hit with those updates turned off
(alternated, 6 rounds): 0.086 → 0.078 ms of CPU, 9 % of a hit; owned, they cost ~1 µs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["LATENCY_BUCKETS", "PREFIX", "Children", "ClientHotMetrics", "HotMetrics", "OwnedHotMetrics"]

PREFIX = "annotation_gateway"
# Buckets in seconds: a cache hit is sub-millisecond, a cold Phoenix query 10-500 ms, a timeout 5 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = (f"{PREFIX}_http_requests", "HTTP requests answered, by route template, method and status.")
REQUEST_DURATION = (
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
)
IN_FLIGHT = (f"{PREFIX}_http_requests_in_flight", "HTTP requests being answered right now.")
UPSTREAM_DURATION = (
    f"{PREFIX}_upstream_request_duration_seconds",
    "Time a source took to answer the gateway, by source, operation (fetch|write) and outcome (ok|error).",
)
UPSTREAM_IN_FLIGHT = (f"{PREFIX}_upstream_requests_in_flight", "Upstream calls in progress, per source.")
CACHE = (
    f"{PREFIX}_cache_requests",
    "Cache lookups per source: hit, miss, or stale (served stale on error).",
)


class HotMetrics(Protocol):
    """The per-request and per-upstream-call updates (module docstring)."""

    def started(self) -> None: ...

    def finished(self, route: str, method: str, status: int, seconds: float) -> None: ...

    def cache(self, source: str, result: str) -> None: ...

    def upstream(self, source: str, operation: str, outcome: str, seconds: float) -> None: ...

    def inflight(self, source: str, delta: int) -> None: ...


# --- one process: plain numbers behind a collector ---------------------------------------------

_BOUNDS = tuple(float(b) for b in LATENCY_BUCKETS)
_LE = tuple(floatToGoString(b) for b in (*_BOUNDS, float("inf")))  # type: ignore[no-untyped-call]
"""The buckets' ``le`` labels as prometheus-client writes them (``+Inf`` last)."""


def _observe(series: dict[tuple[str, ...], list[float]], labels: tuple[str, ...], seconds: float) -> None:
    counts = series.get(labels)
    if counts is None:
        # One count per bucket (its own, not cumulative; +Inf last), then the sum.
        counts = series[labels] = [0.0] * (len(_BOUNDS) + 2)
    # The first bound at or above the value: prometheus-client's "value <= bound".
    counts[bisect_left(_BOUNDS, seconds)] += 1.0
    counts[-1] += seconds


def _histogram(
    name: str, documentation: str, labelnames: Sequence[str], series: dict[tuple[str, ...], list[float]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labelnames)
    for labels, counts in list(series.items()):
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for le, count in zip(_LE, counts[:-1], strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        family.add_metric(labels, buckets, sum_value=counts[-1])
    return family


def _counter(
    name: str, documentation: str, labelnames: Sequence[str], values: dict[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labelnames)
    for labels, value in list(values.items()):
        family.add_metric(labels, value)
    return family


class OwnedHotMetrics(Collector):
    """The hot families as plain numbers, exposed by :meth:`collect` (module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests: dict[tuple[str, ...], float] = {}
        self._durations: dict[tuple[str, ...], list[float]] = {}
        self._in_flight = 0
        self._cache: dict[tuple[str, ...], float] = {}
        self._upstream: dict[tuple[str, ...], list[float]] = {}
        self._upstream_in_flight: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def started(self) -> None:
        self._in_flight += 1

    def finished(self, route: str, method: str, status: int, seconds: float) -> None:
        self._in_flight -= 1
        key = (route, method, str(status))
        requests = self._requests
        requests[key] = requests.get(key, 0.0) + 1.0
        _observe(self._durations, (route,), seconds)

    def cache(self, source: str, result: str) -> None:
        key = (source, result)
        cache = self._cache
        cache[key] = cache.get(key, 0.0) + 1.0

    def upstream(self, source: str, operation: str, outcome: str, seconds: float) -> None:
        _observe(self._upstream, (source, operation, outcome), seconds)

    def inflight(self, source: str, delta: int) -> None:
        key = (source,)
        in_flight = self._upstream_in_flight
        in_flight[key] = in_flight.get(key, 0.0) + delta

    def collect(self) -> Iterator[Metric]:
        yield _counter(*REQUESTS, ("route", "method", "status"), self._requests)
        yield _histogram(*REQUEST_DURATION, ("route",), self._durations)
        yield GaugeMetricFamily(*IN_FLIGHT, value=self._in_flight)
        yield _histogram(*UPSTREAM_DURATION, ("source", "operation", "outcome"), self._upstream)
        in_flight = GaugeMetricFamily(*UPSTREAM_IN_FLIGHT, labels=("source",))
        for labels, value in list(self._upstream_in_flight.items()):
            in_flight.add_metric(labels, value)
        yield in_flight
        yield _counter(*CACHE, ("source", "result"), self._cache)


# --- several workers: prometheus-client's objects (their values in the multiprocess files) -----

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


class Children(Generic[_Metric]):
    """A labelled metric's children, each looked up by its label values once: ``labels()``
    takes a lock and builds a key on every call."""

    __slots__ = ("_found", "_metric")

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._found: dict[tuple[str, ...], _Metric] = {}

    def __call__(self, *values: str) -> _Metric:
        child = self._found.get(values)
        if child is None:
            child = self._found[values] = self._metric.labels(*values)
        return child


class ClientHotMetrics:
    """The hot families as prometheus-client metric objects (module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._in_flight = Gauge(*IN_FLIGHT, registry=registry, multiprocess_mode="livesum")
        self._requests = Children(Counter(*REQUESTS, ("route", "method", "status"), registry=registry))
        self._durations = Children(
            Histogram(*REQUEST_DURATION, ("route",), buckets=LATENCY_BUCKETS, registry=registry)
        )
        self._upstream = Children(
            Histogram(
                *UPSTREAM_DURATION,
                ("source", "operation", "outcome"),
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self._upstream_in_flight = Children(
            Gauge(*UPSTREAM_IN_FLIGHT, ("source",), registry=registry, multiprocess_mode="livesum")
        )
        self._cache = Children(Counter(*CACHE, ("source", "result"), registry=registry))

    def started(self) -> None:
        self._in_flight.inc()

    def finished(self, route: str, method: str, status: int, seconds: float) -> None:
        self._in_flight.dec()
        self._requests(route, method, str(status)).inc()
        self._durations(route).observe(seconds)

    def cache(self, source: str, result: str) -> None:
        self._cache(source, result).inc()

    def upstream(self, source: str, operation: str, outcome: str, seconds: float) -> None:
        self._upstream(source, operation, outcome).observe(seconds)

    def inflight(self, source: str, delta: int) -> None:
        self._upstream_in_flight(source).inc(delta)
