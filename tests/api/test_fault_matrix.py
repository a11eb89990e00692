"""The fault matrix (issue 7, item 2): every fault, on each source, seen through the HTTP API.

For each source (Phoenix, Datadog) and each fault, the faulted source is reached through a
:class:`~tests.api._faults.FaultProxy` (a real loopback server in front of the real Phoenix / the
Datadog simulator), the other source directly. The Datadog faults the simulator can make itself
(latency, 5xx, its rate limit with ``X-RateLimit-*`` headers) are made by the simulator's own
switches; the rest by the proxy. Each case checks, over real HTTP:

1. the answer is 200 with the faulted source's ``sources[]`` status, problem ``code``/``status``
   (and ``upstream_status`` where the vendor sent one) and ``partial``, and the *other* source's
   annotations all present;
2. ``partial=deny`` answers the source's own problem (its status, never 500);
3. the circuit breaker (threshold 2, reset 0.4 s of a clock the test moves) opens after two
   retryable failures, and then
   fails fast without calling the source; permanent faults (garbage answers) never open it;
4. when the fault ends the gateway recovers by itself: the breaker half-opens, its trial closes
   it, and the full answer comes back with ``partial: false``.

No answer of the gateway is ever a 500 (checked on every response).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from annotation_gateway.providers.datadog import DatadogSourceConfig
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from tests.api._faults import Fault, FaultProxy, GatewayHandle, start_gateway
from tests.api.conftest import (
    DATADOG_SOURCE,
    PHOENIX_SOURCE,
    ApiData,
    ClientFactory,
    build_settings,
)
from tests.fakes import ManualClock

ANNOTATIONS = "/v1/annotations"
SOURCE_TIMEOUT_S = 1.0
"""Generous for a real Phoenix on a busy 2-core machine: only the faulted source waits this long."""
SLOW_S = 2.5
BREAKER_THRESHOLD = 2
BREAKER_RESET_S = 0.4
EXTRA = {"x_vendor_new": {"nested": [1, "two"]}}

HTML_PAGE = b"<!doctype html><html><head><title>Phoenix</title></head><body>app</body></html>"


@dataclass
class Ctx:
    source: str
    proxy: FaultProxy
    data: ApiData

    @property
    def sim(self) -> Any:
        return self.data.simulator


@dataclass(frozen=True)
class Case:
    """One fault: how to start and end it, and what the faulted source's status must be."""

    name: str
    start: Callable[[Ctx], None]
    stop: Callable[[Ctx], None]
    code: str | None
    """Expected problem code, or None for "status ok"."""
    status: int = 0
    upstream_status: int | None = None
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.code is None


def _proxy(fault: Fault) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.proxy.set(fault)


def _clear(ctx: Ctx) -> None:
    ctx.proxy.clear()


def _sim(**switches: Any) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.sim.configure(**switches)


def _sim_default(ctx: Ctx) -> None:
    ctx.sim.state.reset(data=False, switches=True)
    ctx.proxy.clear()


def _exhaust_rate_limit(ctx: Ctx) -> None:
    """A one-request window, used up by a direct call: the gateway's next read gets 429."""
    ctx.sim.configure(rate_limit="1/60")
    r = httpx.get(
        f"{ctx.sim.base_url}/api/v2/llm-obs/v1/annotated-interactions",
        params={"contentIds": "rate-limit-probe"},
        headers=ctx.sim.headers,
        trust_env=False,
    )
    assert r.status_code == 200, r.text


# --- body mutations, per vendor ---------------------------------------------------------------


def _phoenix_rows(doc: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = doc.get("data") or []
    return rows


def _dd_interactions(doc: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = doc["data"]["attributes"]["annotated_interactions"]
    return items


def phoenix_missing(doc: Any) -> None:
    for row in _phoenix_rows(doc):
        del row["name"]


def phoenix_extra(doc: Any) -> None:
    for row in _phoenix_rows(doc):
        row.update(EXTRA)
        if isinstance(row.get("result"), dict):
            row["result"]["confidence"] = 0.25


def phoenix_wrong_type(doc: Any) -> None:
    for row in _phoenix_rows(doc):
        row["name"] = {"not": "a string"}


def datadog_missing(doc: Any) -> None:
    for interaction in _dd_interactions(doc):
        del interaction["content_id"]


def datadog_extra(doc: Any) -> None:
    for interaction in _dd_interactions(doc):
        interaction.update(EXTRA)
        for annotation in interaction["annotations"]:
            annotation["x_review_round"] = 2
            for value in annotation["label_values"]:
                value["x_confidence"] = "high"


def datadog_wrong_type(doc: Any) -> None:
    doc["data"]["attributes"]["total_count"] = "sixteen"


# --- the matrix -------------------------------------------------------------------------------


def _common(source: str) -> list[Case]:
    """Faults made by the proxy the same way for both vendors."""
    return [
        Case(
            "connect_refused",
            lambda ctx: ctx.proxy.refuse(),
            lambda ctx: ctx.proxy.accept(),
            "source_unavailable",
            502,
            retryable=True,
        ),
        Case(
            "closed_without_answer", _proxy(Fault("close")), _clear, "source_unavailable", 502, retryable=True
        ),
        Case("reset_mid_body", _proxy(Fault("reset")), _clear, "source_unavailable", 502, retryable=True),
        Case("truncated_json", _proxy(Fault("truncate")), _clear, "source_error", 502, upstream_status=200),
        Case(
            "html_200",
            _proxy(Fault("answer", 200, {"Content-Type": "text/html; charset=utf-8"}, HTML_PAGE)),
            _clear,
            "source_error",
            502,
            upstream_status=200,
        ),
    ]


PHOENIX_CASES = [
    *_common(PHOENIX_SOURCE),
    Case(
        "timeout",
        _proxy(Fault("latency", latency_s=SLOW_S)),
        _clear,
        "source_timeout",
        504,
        retryable=True,
    ),
    *[
        Case(
            f"http_{status}",
            _proxy(Fault("answer", status, {"Content-Type": ctype}, body)),
            _clear,
            "source_unavailable",
            502,
            upstream_status=status,
            retryable=True,
        )
        for status, ctype, body in (
            (500, "text/plain; charset=utf-8", b"Internal Server Error"),
            (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
            (503, "text/plain", b"Service Unavailable"),
        )
    ],
    Case(
        "429_retry_after",
        _proxy(
            Fault("answer", 429, {"Content-Type": "text/plain", "Retry-After": "7"}, b"Too Many Requests")
        ),
        _clear,
        "rate_limited",
        429,
        upstream_status=429,
        retryable=True,
    ),
    Case(
        "429_x_ratelimit_reset",
        _proxy(Fault("answer", 429, {"Content-Type": "text/plain", "X-RateLimit-Reset": "7"}, b"slow down")),
        _clear,
        "rate_limited",
        429,
        upstream_status=429,
        retryable=True,
    ),
    Case("missing_field", _proxy(Fault("mutate", mutate=phoenix_missing)), _clear, "source_error", 502),
    Case("extra_field", _proxy(Fault("mutate", mutate=phoenix_extra)), _clear, None),
    Case("wrong_type", _proxy(Fault("mutate", mutate=phoenix_wrong_type)), _clear, "source_error", 502),
]

DATADOG_CASES = [
    *_common(DATADOG_SOURCE),
    Case(
        "timeout",
        _sim(latency_ms=SLOW_S * 1000),
        _sim_default,
        "source_timeout",
        504,
        retryable=True,
    ),
    *[
        Case(
            f"http_{status}",
            _sim(fail_rate=1.0, fail_status=status),
            _sim_default,
            "source_unavailable",
            502,
            upstream_status=status,
            retryable=True,
        )
        for status in (500, 502, 503)
    ],
    Case(
        "429_retry_after",
        _proxy(
            Fault(
                "answer",
                429,
                {"Content-Type": "application/vnd.api+json", "Retry-After": "7"},
                b'{"errors":["Too many requests"]}',
            )
        ),
        _clear,
        "rate_limited",
        429,
        upstream_status=429,
        retryable=True,
    ),
    Case(
        "429_x_ratelimit_reset",
        _exhaust_rate_limit,
        _sim_default,
        "rate_limited",
        429,
        upstream_status=429,
        retryable=True,
    ),
    Case("missing_field", _proxy(Fault("mutate", mutate=datadog_missing)), _clear, "source_error", 502),
    Case("extra_field", _proxy(Fault("mutate", mutate=datadog_extra)), _clear, None),
    Case("wrong_type", _proxy(Fault("mutate", mutate=datadog_wrong_type)), _clear, "source_error", 502),
]

MATRIX = [(PHOENIX_SOURCE, case) for case in PHOENIX_CASES] + [
    (DATADOG_SOURCE, case) for case in DATADOG_CASES
]


# --- harness ----------------------------------------------------------------------------------


@dataclass
class Rig:
    ctx: Ctx
    gateway: GatewayHandle
    client: httpx.Client
    clock: ManualClock

    @property
    def faulted(self) -> str:
        return self.ctx.source

    @property
    def other(self) -> str:
        return DATADOG_SOURCE if self.faulted == PHOENIX_SOURCE else PHOENIX_SOURCE

    def get(self, path: str = ANNOTATIONS, **kwargs: Any) -> httpx.Response:
        r = self.client.get(path, **kwargs)
        assert r.status_code != 500, f"the gateway answered 500: {r.text[:500]}"
        assert r.status_code < 500 or r.headers["content-type"] == "application/problem+json"
        return r

    def query(self, **params: Any) -> httpx.Response:
        return self.get(params={"subject_id": self.ctx.data.session_ids, "limit": 1000, **params})

    def circuit(self) -> str:
        sources = self.get("/v1/sources").json()["data"]
        state: str = next(s for s in sources if s["name"] == self.faulted)["health"]["circuit_state"]
        return state

    def circuit_open_refusals(self) -> float:
        metrics = self.get("/metrics").text
        pattern = (
            r'annotation_gateway_upstream_errors_total\{code="circuit_open",source="'
            + re.escape(self.faulted)
            + r'"\} ([0-9.]+)'
        )
        found = re.search(pattern, metrics)
        return float(found.group(1)) if found else 0.0


RigFactory = Callable[..., Rig]


@pytest.fixture
def rig(
    api_data: ApiData, _vendor_env: None, client_for: ClientFactory, datadog_switches: Any
) -> Iterator[RigFactory]:
    """``rig(source, **config)``: a gateway whose ``source`` goes through a fault proxy."""
    proxies: list[FaultProxy] = []
    gateways: list[GatewayHandle] = []

    def make(source: str, **overrides: Any) -> Rig:
        upstream = api_data.phoenix.base_url if source == PHOENIX_SOURCE else api_data.simulator.base_url
        proxy = FaultProxy(upstream).start()
        proxies.append(proxy)
        tuned: dict[str, Any] = {
            "base_url": proxy.base_url,
            "timeout_s": SOURCE_TIMEOUT_S,
            "retry_attempts": 1,
            "max_retry_after_s": 0,
        } | overrides
        phoenix = api_data.phoenix_config(**(tuned if source == PHOENIX_SOURCE else {}))
        datadog = api_data.simulator.source_config(
            DATADOG_SOURCE, **({"retry_attempts": 1} | (tuned if source == DATADOG_SOURCE else {}))
        )
        configs: list[PhoenixSourceConfig | DatadogSourceConfig] = [phoenix, datadog]
        clock = ManualClock()
        gateway = start_gateway(
            build_settings(configs),
            configs,
            failure_threshold=BREAKER_THRESHOLD,
            reset_timeout_s=BREAKER_RESET_S,
            clock=clock,
        )
        gateways.append(gateway)
        made = Rig(Ctx(source, proxy, api_data), gateway, client_for(gateway.base_url), clock)
        # The first GET /v1/sources probes every source; do it now, while all is well, so that
        # reading the circuit state later costs no probe (the proxy counts requests).
        assert made.circuit() == "closed"
        return made

    yield make
    for gateway in gateways:
        gateway.stop()
    for proxy in proxies:
        proxy.stop()
        assert proxy.errors == [], "the fault proxy itself failed"


def _status(body: dict[str, Any], source: str) -> dict[str, Any]:
    return next(s for s in body["sources"] if s["source"] == source)


def _ids_of(body: dict[str, Any], source: str) -> list[dict[str, Any]]:
    return [a for a in body["data"] if a["source"] == source]


def _assert_whole(rig: Rig, body: dict[str, Any]) -> None:
    expected = rig.ctx.data.expected
    for source in (PHOENIX_SOURCE, DATADOG_SOURCE):
        assert _status(body, source)["status"] == "ok", _status(body, source)["error"]
        assert len(_ids_of(body, source)) == expected[source]
    assert body["partial"] is False


def _assert_extensions_kept(rig: Rig, body: dict[str, Any]) -> None:
    items = _ids_of(body, rig.faulted)
    assert items
    for item in items:
        if rig.faulted == PHOENIX_SOURCE:
            phoenix = item["extensions"]["phoenix"]
            assert phoenix["x_vendor_new"] == EXTRA["x_vendor_new"]
            assert phoenix["result"] == {"confidence": 0.25}
        else:
            datadog = item["extensions"]["datadog"]
            assert datadog["interaction"] == EXTRA
            assert datadog["annotation"] == {"x_review_round": 2}
            assert datadog["label_value"] == {"x_confidence": "high"}


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "case"), MATRIX, ids=[f"{s}-{c.name}" for s, c in MATRIX])
def test_fault(rig: RigFactory, source: str, case: Case) -> None:
    r = rig(source)
    case.start(r.ctx)
    try:
        answer = r.query()
        assert answer.status_code == 200, answer.text[:500]
        body = answer.json()
        status = _status(body, r.faulted)
        # The other source's data is all there, whatever happened to this one.
        assert _status(body, r.other)["status"] == "ok"
        assert len(_ids_of(body, r.other)) == r.ctx.data.expected[r.other]
        if case.ok:
            _assert_whole(r, body)
            _assert_extensions_kept(r, body)
            assert r.circuit() == "closed"
            return
        assert status["status"] == "error", status
        assert body["partial"] is True
        assert _ids_of(body, r.faulted) == []
        problem = status["error"]
        assert (problem["code"], problem["status"], problem["source"]) == (case.code, case.status, source)
        assert problem.get("upstream_status") == case.upstream_status
        assert problem["type"].endswith("/" + case.code)
        assert problem["title"]
        assert problem["detail"]
        # The detail says what happened: "refused" only when the connection really was refused.
        assert ("connection refused" in problem["detail"]) == (case.name == "connect_refused")

        denied = r.query(partial="deny")
        assert denied.status_code == case.status, denied.text[:500]
        assert denied.headers["content-type"] == "application/problem+json"
        assert denied.json()["code"] == case.code
        documented = r.get("/openapi.json").json()["paths"][ANNOTATIONS]["get"]["responses"]
        assert str(case.status) in documented, f"{case.status} is answered but not in the OpenAPI document"
        if case.status == 429:
            assert int(denied.headers["retry-after"]) >= 1

        if case.retryable:
            # Two retryable failures in a row: open. The next query fails fast, upstream untouched.
            assert r.circuit() == "open"
            seen = r.ctx.proxy.requests
            fast = r.query().json()
            refused = _status(fast, r.faulted)["error"]
            assert (refused["code"], refused["status"]) == ("source_unavailable", 502)
            assert "circuit open" in refused["detail"]
            assert fast["partial"] is True
            assert len(_ids_of(fast, r.other)) == r.ctx.data.expected[r.other]
            assert r.ctx.proxy.requests == seen
            assert r.circuit_open_refusals() == 1
        else:
            # A garbage answer proves the source is up: the breaker stays closed and keeps asking.
            assert r.circuit() == "closed"
    finally:
        case.stop(r.ctx)

    if case.retryable:
        r.clock.advance(BREAKER_RESET_S + 0.001)  # the cool-down is over: the next call is the trial
    recovered = r.query()
    assert recovered.status_code == 200
    _assert_whole(r, recovered.json())
    assert r.circuit() == "closed"


@pytest.mark.parametrize("source", [PHOENIX_SOURCE, DATADOG_SOURCE])
@pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset"])
def test_a_single_429_is_retried_after_the_wait_it_asks_for(
    rig: RigFactory, source: str, header: str
) -> None:
    """Retries honour the vendor's requested wait (capped): one 429 asking for 1 s, then fine."""
    r = rig(source, retry_attempts=2, max_retry_after_s=5)
    body = b'{"errors":["Too many requests"]}' if source == DATADOG_SOURCE else b"Too Many Requests"
    r.ctx.proxy.set(Fault("answer", 429, {"Content-Type": "text/plain", header: "1"}, body, times=1))
    started = time.perf_counter()
    answer = r.query()
    elapsed = time.perf_counter() - started
    _assert_whole(r, answer.json())
    assert r.ctx.proxy.faulted == 1
    assert elapsed >= 0.95, f"retried after {elapsed:.2f} s, before the 1 s the vendor asked for"


@pytest.mark.parametrize("source", [PHOENIX_SOURCE, DATADOG_SOURCE])
@pytest.mark.parametrize("fault", ["reset", "http_503", "timeout"])
def test_a_transient_fault_is_retried_away(rig: RigFactory, source: str, fault: str) -> None:
    """An idempotent read retried once after a reset, a 503 or a timeout: status ok, no trace."""
    r = rig(source, retry_attempts=2)
    once = {
        "reset": Fault("reset", times=1),
        "http_503": Fault("answer", 503, {"Content-Type": "text/plain"}, b"busy", times=1),
        "timeout": Fault("latency", latency_s=SLOW_S, times=1),
    }
    r.ctx.proxy.set(once[fault])
    answer = r.query()
    _assert_whole(r, answer.json())
    assert r.ctx.proxy.faulted == 1
    assert r.circuit() == "closed"


def test_both_sources_faulted_is_a_gateway_error_never_500(rig: RigFactory) -> None:
    """Both sources broken in different ways: one problem naming both, status 502, not 500."""
    r = rig(PHOENIX_SOURCE)
    r.ctx.proxy.set(Fault("truncate"))
    r.ctx.sim.configure(fail_rate=1.0, fail_status=503)
    answer = r.query()
    assert answer.status_code == 502, answer.text[:500]
    problem = answer.json()
    assert problem["code"] == "source_error"
    assert {e["source"]: e["code"] for e in problem["errors"]} == {
        PHOENIX_SOURCE: "source_error",
        DATADOG_SOURCE: "source_unavailable",
    }
