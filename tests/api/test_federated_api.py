"""The federated API end to end: real HTTP, a real Phoenix and the Datadog simulator.

Covers SPEC §3/§4 as a client sees them: one schema from both vendors, complete paging with
small pages, cursor binding, partial answers and ``partial=deny``, both sources down, stale
serving, single flight, auth and key limits, upstream 4xx kept 4xx, writes with read-your-write,
readiness, sources, metrics and ``Server-Timing``. Secrets are checked in every response (the
client fixture) and every log line (autouse fixture in conftest).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation_gateway.model import Annotation, AnnotationWrite, ProviderKind
from annotation_gateway.providers import AnnotationProvider, build_provider
from annotation_gateway.providers.base import Capabilities, HealthReport, SourceQuery, WriteResult
from annotation_gateway.records import Record, decode
from annotation_gateway.settings import CacheConfig
from tests.api.conftest import (
    DATADOG_SOURCE,
    PHOENIX_ONLY_KEY,
    PHOENIX_SOURCE,
    ApiData,
    ClientFactory,
    GatewayFactory,
    closed_port_url,
)
from tests.api.test_contract_fake import assert_problem

ANNOTATIONS = "/v1/annotations"
DOWN_CODES = ("source_unavailable",)
"""What a source with nothing listening (connection refused) is reported as."""


def _all(data: ApiData, **params: Any) -> dict[str, Any]:
    return {"subject_id": data.session_ids, **params}


def assert_spec_order(items: Sequence[dict[str, Any]]) -> None:
    """``updated_at`` descending, then ``id`` ascending."""
    for before, after in itertools.pairwise(items):
        t_before, t_after = (
            datetime.fromisoformat(before["updated_at"]),
            datetime.fromisoformat(after["updated_at"]),
        )
        assert t_before >= t_after
        if t_before == t_after:
            assert before["id"] < after["id"]


def _by_source(items: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item["source"]] = counts.get(item["source"], 0) + 1
    return counts


def _status(body: dict[str, Any], source: str) -> dict[str, Any]:
    return next(s for s in body["sources"] if s["source"] == source)


def test_both_vendors_in_one_schema(client: httpx.Client, api_data: ApiData) -> None:
    r = client.get(ANNOTATIONS, params=_all(api_data, limit=1000))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["partial"] is False
    assert body["next_cursor"] is None
    assert _by_source(body["data"]) == api_data.expected
    assert {a["id"] for a in body["data"] if a["source"] == PHOENIX_SOURCE} == api_data.phoenix_ids
    assert len({a["id"] for a in body["data"]}) == api_data.total
    assert_spec_order(body["data"])
    for status in body["sources"]:
        assert status["status"] == "ok"
        assert status["count"] == api_data.expected[status["source"]]
    shared = api_data.session_ids[8]
    on_shared = [a for a in body["data"] if a["subject"]["id"] == shared and a["name"] == "resolution"]
    assert {a["provider"] for a in on_shared} == {"phoenix", "datadog"}
    timing = [entry.split(";")[0].strip() for entry in r.headers["server-timing"].split(",")]
    assert timing == [f"src-{PHOENIX_SOURCE}", f"src-{DATADOG_SOURCE}", "gateway"]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(page_size=st.integers(min_value=1, max_value=60), use_search=st.booleans())
def test_paging_yields_every_annotation_once(
    client: httpx.Client, api_data: ApiData, page_size: int, use_search: bool
) -> None:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    max_pages = api_data.total // page_size + 2  # bounded: a cursor loop fails, never hangs
    for _ in range(max_pages):
        if use_search:
            r = client.post(
                f"{ANNOTATIONS}/search",
                json={"subject_ids": api_data.session_ids, "limit": page_size, "cursor": cursor},
            )
        else:
            r = client.get(
                ANNOTATIONS, params=_all(api_data, limit=page_size, **({"cursor": cursor} if cursor else {}))
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= page_size
        seen.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None, "paging did not end"
    ids = [a["id"] for a in seen]
    assert len(ids) == len(set(ids)) == api_data.total
    assert _by_source(seen) == api_data.expected
    assert_spec_order(seen)


def test_cursor_is_bound_to_the_query(client: httpx.Client, api_data: ApiData) -> None:
    first = client.get(ANNOTATIONS, params=_all(api_data, limit=5)).json()
    cursor = first["next_cursor"]
    assert cursor
    middle = len(cursor) // 2
    tampered = cursor[:middle] + ("A" if cursor[middle] != "A" else "B") + cursor[middle + 1 :]
    for bad in (tampered, cursor[:-2], "not-a-cursor", cursor + "x"):
        r = client.get(ANNOTATIONS, params=_all(api_data, limit=5, cursor=bad))
        assert_problem(r, 422, "invalid_cursor")
    replayed = client.get(ANNOTATIONS, params=_all(api_data, limit=5, cursor=cursor, name="resolution"))
    assert_problem(replayed, 422, "invalid_cursor")
    # The same query with another page size is the same query: the cursor stays valid.
    assert client.get(ANNOTATIONS, params=_all(api_data, limit=7, cursor=cursor)).status_code == 200


def test_filters_pushed_down_and_applied_here(client: httpx.Client, api_data: ApiData) -> None:
    body = client.get(
        ANNOTATIONS, params=_all(api_data, limit=1000, name="resolution", annotator_kind="HUMAN")
    ).json()
    assert body["data"]
    assert {a["name"] for a in body["data"]} == {"resolution"}
    assert {a["annotator"]["kind"] for a in body["data"]} == {"HUMAN"}
    only_phoenix = client.get(ANNOTATIONS, params=_all(api_data, limit=1000, provider="phoenix")).json()
    assert {a["source"] for a in only_phoenix["data"]} == {PHOENIX_SOURCE}
    assert [s["source"] for s in only_phoenix["sources"]] == [PHOENIX_SOURCE]


def test_identifier_only_skips_datadog_with_a_reason(client: httpx.Client) -> None:
    body = client.get(ANNOTATIONS, params={"identifier": "second-opinion", "limit": 1000}).json()
    assert body["partial"] is False
    assert len(body["data"]) == 6
    dd = _status(body, DATADOG_SOURCE)
    assert dd["status"] == "skipped"
    assert dd["error"]


def test_include_raw(client: httpx.Client, api_data: ApiData) -> None:
    body = client.get(ANNOTATIONS, params=_all(api_data, limit=1000, include="raw")).json()
    assert all(isinstance(a["raw"], dict) and a["raw"] for a in body["data"])
    plain = client.get(ANNOTATIONS, params=_all(api_data, limit=5)).json()
    assert all("raw" not in a for a in plain["data"])


# --- faults ---------------------------------------------------------------------------------


def test_a_source_down_gives_a_partial_answer(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    gw = make_gateway([api_data.phoenix_config(), api_data.datadog_config(base_url=closed_port_url())])
    c = client_for(gw.base_url)
    r = c.get(ANNOTATIONS, params=_all(api_data, limit=1000))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["partial"] is True
    assert _by_source(body["data"]) == {PHOENIX_SOURCE: api_data.expected[PHOENIX_SOURCE]}
    dd = _status(body, DATADOG_SOURCE)
    assert dd["status"] == "error"
    assert dd["error"]["code"] in DOWN_CODES
    assert dd["error"]["source"] == DATADOG_SOURCE
    denied = c.get(ANNOTATIONS, params=_all(api_data, partial="deny"))
    problem = assert_problem(denied, dd["error"]["status"], dd["error"]["code"])
    assert problem["source"] == DATADOG_SOURCE


def test_failing_simulator_partial_and_deny(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    c = client_for(make_gateway().base_url)
    api_data.simulator.configure(fail_rate=1.0)
    try:
        body = c.get(ANNOTATIONS, params=_all(api_data, limit=1000)).json()
        assert body["partial"] is True
        assert _status(body, DATADOG_SOURCE)["error"]["upstream_status"] == 500
        assert _by_source(body["data"]) == {PHOENIX_SOURCE: api_data.expected[PHOENIX_SOURCE]}
        denied = c.get(
            ANNOTATIONS, params=_all(api_data, partial="deny"), headers={"Cache-Control": "no-cache"}
        )
        assert denied.status_code == 502, denied.text[:500]
        assert denied.json()["source"] == DATADOG_SOURCE
    finally:
        api_data.simulator.configure(fail_rate=0.0)


def test_every_source_down_is_a_gateway_error(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    gw = make_gateway(
        [
            api_data.phoenix_config(base_url=closed_port_url()),
            api_data.datadog_config(base_url=closed_port_url()),
        ]
    )
    r = client_for(gw.base_url).get(ANNOTATIONS, params=_all(api_data))
    # SPEC §3: every source down → 502, naming both sources.
    assert r.status_code == 502, r.text[:500]
    body = r.json()
    assert body["code"] in ("source_error", *DOWN_CODES)
    assert {e["source"] for e in body["errors"]} == {PHOENIX_SOURCE, DATADOG_SOURCE}


def test_upstream_4xx_stays_4xx(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    wrong_keys = api_data.datadog_config(api_key_env="WRONG_DD_API_KEY", app_key_env="WRONG_DD_APP_KEY")
    os.environ["WRONG_DD_API_KEY"] = "wrong-api-key-for-tests"
    os.environ["WRONG_DD_APP_KEY"] = "wrong-app-key-for-tests"
    try:
        c = client_for(make_gateway([api_data.phoenix_config(), wrong_keys]).base_url)
        body = c.get(ANNOTATIONS, params=_all(api_data)).json()
        assert body["partial"] is True
        assert _status(body, DATADOG_SOURCE)["error"]["code"] == "source_unauthorized"
        denied = c.get(ANNOTATIONS, params=_all(api_data, partial="deny"))
        problem = assert_problem(denied, 403, "source_unauthorized")
        assert problem["upstream_status"] == 403
    finally:
        del os.environ["WRONG_DD_API_KEY"], os.environ["WRONG_DD_APP_KEY"]


def test_garbage_upstream_is_source_error(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    # Phoenix answers unknown paths with its HTML web UI: a "Datadog" there sends garbage.
    not_datadog = api_data.datadog_config(base_url=api_data.phoenix.base_url)
    c = client_for(make_gateway([api_data.phoenix_config(), not_datadog]).base_url)
    body = c.get(ANNOTATIONS, params=_all(api_data)).json()
    assert body["partial"] is True
    assert _status(body, DATADOG_SOURCE)["error"]["code"] == "source_error"
    assert_problem(c.get(ANNOTATIONS, params=_all(api_data, partial="deny")), 502, "source_error")


def test_unknown_phoenix_project_is_not_found(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    missing = api_data.phoenix_config(project=f"no-such-project-{uuid.uuid4().hex[:6]}")
    c = client_for(make_gateway([missing, api_data.datadog_config()]).base_url)
    body = c.get(ANNOTATIONS, params=_all(api_data, limit=1000)).json()
    assert body["partial"] is True
    assert _status(body, PHOENIX_SOURCE)["error"]["code"] == "not_found"
    assert _by_source(body["data"]) == {DATADOG_SOURCE: api_data.expected[DATADOG_SOURCE]}
    problem = assert_problem(c.get(ANNOTATIONS, params=_all(api_data, partial="deny")), 404, "not_found")
    assert problem["source"] == PHOENIX_SOURCE


def test_rate_limited_upstream_is_429(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    c = client_for(make_gateway().base_url)
    api_data.simulator.configure(rate_limit="1/60")
    try:
        first = c.get(
            ANNOTATIONS, params={"subject_id": api_data.session_ids[:10]}
        )  # the window's one request
        assert first.status_code == 200
        # Another subject: nothing cached to serve stale, so the 429 shows.
        r = c.get(
            ANNOTATIONS,
            params={"subject_id": api_data.session_ids[19], "partial": "deny", "source": DATADOG_SOURCE},
        )
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
    finally:
        api_data.simulator.configure(rate_limit=None)


def test_stale_answer_when_the_source_fails(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    c = client_for(make_gateway(cache=CacheConfig(ttl_s=30, max_stale_s=300)).base_url)
    warm = c.get(ANNOTATIONS, params=_all(api_data, limit=1000)).json()
    assert warm["partial"] is False
    api_data.simulator.configure(fail_rate=1.0)
    try:
        # no-cache skips the fresh entry; max-stale accepts it as a stand-in (issue 15: no-cache
        # alone no longer does, see test_first_hour.py).
        headers = {"Cache-Control": "no-cache, max-stale=300"}
        r = c.get(ANNOTATIONS, params=_all(api_data, limit=1000), headers=headers)
        body = r.json()
        dd = _status(body, DATADOG_SOURCE)
        assert dd["status"] == "ok"
        assert dd["stale"] is True
        assert body["partial"] is False
        assert _by_source(body["data"]) == api_data.expected
        assert "src-datadog-test;dur=" in r.headers["server-timing"]
    finally:
        api_data.simulator.configure(fail_rate=0.0)


class CountingProvider:
    """Delegates to a real provider, counting ``fetch`` calls; each call first waits, so
    concurrent requests surely overlap."""

    def __init__(self, inner: AnnotationProvider, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.fetches = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def kind(self) -> ProviderKind:
        return self.inner.kind

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        return decode(await self.fetch_records(query))

    async def fetch_records(self, query: SourceQuery) -> list[Record]:
        self.fetches += 1
        await asyncio.sleep(self.delay_s)
        return await self.inner.fetch_records(query)

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        return await self.inner.write(items)

    async def health(self) -> HealthReport:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_single_flight_for_identical_concurrent_misses(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    configs = [api_data.phoenix_config(), api_data.datadog_config()]
    counting = [CountingProvider(build_provider(config), delay_s=0.5) for config in configs]
    gw = make_gateway(configs, providers=counting)
    httpx.delete(f"{api_data.simulator.base_url}/_simulator/requests", trust_env=False)
    n = 8
    clients = [client_for(gw.base_url) for _ in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        answers = list(pool.map(lambda c: c.get(ANNOTATIONS, params=_all(api_data, limit=1000)), clients))
    assert [a.status_code for a in answers] == [200] * n
    assert all(_by_source(a.json()["data"]) == api_data.expected for a in answers)
    assert [p.fetches for p in counting] == [1, 1]
    reads = [r for r in api_data.simulator.requests if r.path.endswith("/annotated-interactions")]
    assert len(reads) == 1


# --- auth -----------------------------------------------------------------------------------


def test_auth_required(gateway: Any, client_for: ClientFactory, api_data: ApiData) -> None:
    anonymous = client_for(gateway.base_url, key=None)
    assert_problem(anonymous.get(ANNOTATIONS, params=_all(api_data)), 401, "unauthorized")
    assert_problem(anonymous.get("/v1/sources"), 401, "unauthorized")
    wrong = client_for(gateway.base_url, key="not-a-gateway-key")
    assert_problem(wrong.get(ANNOTATIONS, params=_all(api_data)), 401, "unauthorized")
    assert_problem(wrong.post(f"{ANNOTATIONS}/search", json={"subject_ids": ["x"]}), 401, "unauthorized")
    # Probes and metrics stay public.
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/metrics").status_code == 200


def test_key_limited_to_one_source(gateway: Any, client_for: ClientFactory, api_data: ApiData) -> None:
    limited = client_for(gateway.base_url, key=PHOENIX_ONLY_KEY)
    problem = assert_problem(
        limited.get(ANNOTATIONS, params=_all(api_data, source=DATADOG_SOURCE)), 403, "forbidden"
    )
    assert DATADOG_SOURCE in str(problem["detail"])
    body = limited.get(ANNOTATIONS, params=_all(api_data, limit=1000)).json()
    assert _by_source(body["data"]) == {PHOENIX_SOURCE: api_data.expected[PHOENIX_SOURCE]}
    assert [s["source"] for s in body["sources"]] == [PHOENIX_SOURCE]
    assert [s["name"] for s in limited.get("/v1/sources").json()["data"]] == [PHOENIX_SOURCE]
    write = limited.post(
        ANNOTATIONS,
        json={"source": DATADOG_SOURCE, "annotations": [{"subject_id": "x", "name": "n", "label": "l"}]},
    )
    assert_problem(write, 403, "forbidden")


# --- writes ---------------------------------------------------------------------------------


def test_write_then_read_your_write(client: httpx.Client, api_data: ApiData) -> None:
    subject = api_data.write_session_id
    before = client.get(ANNOTATIONS, params={"subject_id": subject, "limit": 1000}).json()  # warms the cache
    identifier = f"api-test-{uuid.uuid4().hex[:6]}"
    r = client.post(
        ANNOTATIONS,
        json={
            "source": PHOENIX_SOURCE,
            "annotations": [
                {
                    "subject_id": subject,
                    "name": "api_write",
                    "label": "good",
                    "score": 0.9,
                    "identifier": identifier,
                }
            ],
        },
    )
    assert r.status_code == 200, r.text
    written = r.json()
    assert written["count"] == 1
    assert f"src-{PHOENIX_SOURCE};dur=" in r.headers["server-timing"]
    after = client.get(ANNOTATIONS, params={"subject_id": subject, "limit": 1000}).json()
    assert len(after["data"]) == len(before["data"]) + 1
    mine = [a for a in after["data"] if a["id"] == written["ids"][0]]
    assert len(mine) == 1
    assert mine[0]["label"] == "good"
    assert mine[0]["identifier"] == identifier
    # The same (name, subject, identifier) again is an update, not a second row.
    again = client.post(
        ANNOTATIONS,
        json={
            "source": PHOENIX_SOURCE,
            "annotations": [
                {"subject_id": subject, "name": "api_write", "label": "bad", "identifier": identifier}
            ],
        },
    )
    assert again.json()["ids"] == written["ids"]
    latest = client.get(ANNOTATIONS, params={"subject_id": subject, "name": "api_write"}).json()["data"]
    assert [(a["id"], a["label"]) for a in latest if a["identifier"] == identifier] == [
        (written["ids"][0], "bad")
    ]


def test_write_errors(client: httpx.Client, api_data: ApiData) -> None:
    item = {"subject_id": api_data.write_session_id, "name": "api_write", "label": "x"}
    assert_problem(
        client.post(ANNOTATIONS, json={"source": DATADOG_SOURCE, "annotations": [item]}), 400, "not_supported"
    )
    unknown = {**item, "subject_id": f"no-such-session-{uuid.uuid4().hex}"}
    assert_problem(
        client.post(ANNOTATIONS, json={"source": PHOENIX_SOURCE, "annotations": [item, unknown]}),
        404,
        "not_found",
    )
    # All or nothing: the known subject's item was not written either.
    after = client.get(ANNOTATIONS, params={"subject_id": api_data.write_session_id, "name": "api_write"})
    assert [a for a in after.json()["data"] if a["label"] == "x"] == []
    assert_problem(
        client.post(ANNOTATIONS, json={"source": "nope", "annotations": [item]}), 422, "validation_error"
    )
    assert_problem(
        client.post(ANNOTATIONS, json={"source": PHOENIX_SOURCE, "annotations": []}), 422, "validation_error"
    )


# --- operations -----------------------------------------------------------------------------


def test_readyz(
    gateway: Any, make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    ok = client_for(gateway.base_url, key=None).get("/readyz")
    assert ok.status_code == 200
    assert set(ok.json()["sources"]) == {PHOENIX_SOURCE, DATADOG_SOURCE}
    assert f"src-{PHOENIX_SOURCE};dur=" in ok.headers["server-timing"]
    down = make_gateway([api_data.phoenix_config(), api_data.datadog_config(base_url=closed_port_url())])
    r = client_for(down.base_url, key=None).get("/readyz")
    problem = assert_problem(r, 503, "source_unavailable")
    assert [e["source"] for e in problem["errors"]] == [DATADOG_SOURCE]  # type: ignore[index]


def test_sources_show_capabilities_and_health(client: httpx.Client) -> None:
    answer = client.get("/v1/sources", params={"refresh": "true"})
    # Each source probed is in Server-Timing, marked as a probe.
    for name in (PHOENIX_SOURCE, DATADOG_SOURCE):
        assert f"src-{name};dur=" in answer.headers["server-timing"]
    assert answer.headers["server-timing"].count(';desc="probe"') == 2
    sources = {s["name"]: s for s in answer.json()["data"]}
    assert set(sources) == {PHOENIX_SOURCE, DATADOG_SOURCE}
    phoenix, datadog = sources[PHOENIX_SOURCE], sources[DATADOG_SOURCE]
    assert phoenix["capabilities"]["writable"] is True
    assert datadog["capabilities"]["writable"] is False
    assert datadog["capabilities"]["needs_subject_ids"] is True
    assert "subject_ids" in phoenix["capabilities"]["pushdown"]
    for source in (phoenix, datadog):
        assert source["health"]["circuit_state"] == "closed"
        assert source["health"]["ok"] is True
        assert source["health"]["last_checked_at"].endswith("Z")
        assert "base_url" not in source


def test_metrics_count_cache_and_upstream(client: httpx.Client, api_data: ApiData) -> None:
    params = {"subject_id": api_data.session_ids[:3], "name": "helpfulness"}
    client.get(ANNOTATIONS, params=params, headers={"Cache-Control": "no-cache"})
    client.get(ANNOTATIONS, params=params)
    text = client.get("/metrics").text
    for source in (PHOENIX_SOURCE, DATADOG_SOURCE):
        assert f'annotation_gateway_cache_requests_total{{result="hit",source="{source}"}}' in text
        assert f'annotation_gateway_cache_requests_total{{result="miss",source="{source}"}}' in text
        assert (
            f'annotation_gateway_upstream_request_duration_seconds_count{{operation="fetch",outcome="ok",source="{source}"}}'
            in text
        )
    assert 'annotation_gateway_http_requests_total{method="GET",route="/v1/annotations",status="200"}' in text
    assert "annotation_gateway_http_requests_in_flight" in text
