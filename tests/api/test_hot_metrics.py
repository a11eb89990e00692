"""The per-request metric families (:mod:`annotation_gateway.api.hot_metrics`): held as plain
numbers in one process, as prometheus-client's objects with several workers — and exposed the
same either way. prometheus-client's own metric objects are the reference: for any sequence of
requests, cache lookups and upstream calls, both stores give the same families, samples and
values."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from annotation_gateway.api.hot_metrics import LATENCY_BUCKETS, ClientHotMetrics, HotMetrics, OwnedHotMetrics
from annotation_gateway.api.routes.metrics import GatewayMetrics

# Durations on the bucket bounds themselves (a value equal to a bound counts in it), between
# them, zero, and past the last (+Inf).
_SECONDS = st.one_of(
    st.sampled_from([0.0, *LATENCY_BUCKETS, 10.5, 120.0]),
    st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
)
_ROUTES = st.sampled_from(["/v1/annotations", "/v1/annotations/search", "/healthz"])
_SOURCES = st.sampled_from(["phoenix-a", "datadog-b"])
_EVENTS = st.lists(
    st.one_of(
        st.tuples(
            st.just("request"),
            _ROUTES,
            st.sampled_from(["GET", "POST"]),
            st.sampled_from([200, 404, 502]),
            _SECONDS,
        ),
        st.tuples(st.just("cache"), _SOURCES, st.sampled_from(["hit", "miss", "stale"])),
        st.tuples(
            st.just("upstream"),
            _SOURCES,
            st.sampled_from(["fetch", "write"]),
            st.sampled_from(["ok", "error"]),
            _SECONDS,
        ),
        st.tuples(st.just("inflight"), _SOURCES, st.sampled_from([1, -1])),
        st.tuples(st.just("started")),
    ),
    max_size=60,
)


def _replay(hot: HotMetrics, events: list[tuple[Any, ...]]) -> None:
    for kind, *args in events:
        if kind == "request":
            hot.started()
            hot.finished(*args)
        elif kind == "cache":
            hot.cache(*args)
        elif kind == "upstream":
            hot.upstream(*args)
        elif kind == "inflight":
            hot.inflight(*args)
        else:
            hot.started()


def _exposed(
    registry: CollectorRegistry,
) -> dict[str, tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    """Each family's help, type and samples, as a scraper parses them."""
    text = generate_latest(registry).decode()
    return {
        family.name: (
            family.documentation,
            family.type,
            sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples),
        )
        for family in text_string_to_metric_families(text)
    }


@settings(max_examples=200, deadline=None)
@given(_EVENTS)
def test_owned_values_expose_what_prometheus_clients_objects_expose(events: list[tuple[Any, ...]]) -> None:
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as GatewayMetrics does
    owned, reference = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    _replay(OwnedHotMetrics(owned), events)
    _replay(ClientHotMetrics(reference), events)
    assert _exposed(owned) == _exposed(reference)


def test_a_scrape_reads_the_values_as_they_are_now() -> None:
    metrics = GatewayMetrics()
    metrics.request_started()
    metrics.request_finished("/v1/annotations", "GET", 200, 0.0004)
    metrics.on_cache("phoenix-a", "hit")
    metrics.request_started()  # still being answered
    first = _exposed(metrics.registry)
    metrics.on_cache("phoenix-a", "hit")
    metrics.on_upstream("phoenix-a", "fetch", 0.2, "source_timeout")
    second = _exposed(metrics.registry)

    def value(exposed: dict[str, Any], family: str, sample: str, **labels: str) -> float:
        wanted = tuple(sorted(labels.items()))
        return next(v for name, got, v in exposed[family][2] if name == sample and got == wanted)

    prefix = "annotation_gateway"
    assert (
        value(
            first,
            f"{prefix}_http_requests",
            f"{prefix}_http_requests_total",
            method="GET",
            route="/v1/annotations",
            status="200",
        )
        == 1
    )
    assert value(first, f"{prefix}_http_requests_in_flight", f"{prefix}_http_requests_in_flight") == 1
    assert (
        value(
            first,
            f"{prefix}_http_request_duration_seconds",
            f"{prefix}_http_request_duration_seconds_bucket",
            le="0.0005",
            route="/v1/annotations",
        )
        == 1
    )
    assert (
        value(
            first,
            f"{prefix}_cache_requests",
            f"{prefix}_cache_requests_total",
            result="hit",
            source="phoenix-a",
        )
        == 1
    )
    assert (
        value(
            second,
            f"{prefix}_cache_requests",
            f"{prefix}_cache_requests_total",
            result="hit",
            source="phoenix-a",
        )
        == 2
    )
    assert (
        value(
            second,
            f"{prefix}_upstream_request_duration_seconds",
            f"{prefix}_upstream_request_duration_seconds_count",
            operation="fetch",
            outcome="error",
            source="phoenix-a",
        )
        == 1
    )
    assert (
        value(
            second,
            f"{prefix}_upstream_errors",
            f"{prefix}_upstream_errors_total",
            code="source_timeout",
            source="phoenix-a",
        )
        == 1
    )
