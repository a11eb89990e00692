"""Issue 15 over real HTTP: what a new user and an attacker ran into, each pinned by a test.

Real Phoenix and the Datadog simulator behind a real gateway (see ``conftest.py``). Each test
names the item of the issue it keeps fixed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from annotation_gateway.settings import CacheConfig
from tests.api.conftest import (
    ADMIN_KEY,
    DATADOG_SOURCE,
    PHOENIX_ONLY_KEY,
    PHOENIX_SOURCE,
    ApiData,
    ClientFactory,
    GatewayFactory,
)
from tests.api.test_contract_fake import assert_problem

ANNOTATIONS = "/v1/annotations"
SEARCH = "/v1/annotations/search"
COMPARE = "/v1/compare"

# Entries are never fresh (ttl 0) but kept 300 s for stale-on-error: every query reads the
# vendors, and what a failing vendor's stale answer does is decided by the request alone.
STALE_ONLY = CacheConfig(ttl_s=0.0, max_stale_s=300.0)


@pytest.fixture
def failing_datadog(
    api_data: ApiData, make_gateway: GatewayFactory, client_for: ClientFactory
) -> Iterator[httpx.Client]:
    """A gateway whose Datadog answer for ``session_ids[5]`` is cached, then Datadog fails."""
    client = client_for(make_gateway(cache=STALE_ONLY).base_url)
    warm = client.get(ANNOTATIONS, params={"subject_id": api_data.session_ids[5]})
    assert warm.status_code == 200
    assert {s["source"]: s["status"] for s in warm.json()["sources"]}[DATADOG_SOURCE] == "ok"
    api_data.simulator.configure(fail_rate=1.0, fail_status=503)
    try:
        yield client
    finally:
        api_data.simulator.configure(fail_rate=0.0)


def _datadog(answer: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in answer["sources"] if s["source"] == DATADOG_SOURCE)


def test_1_no_cache_and_partial_deny_refuse_a_stale_answer(
    failing_datadog: httpx.Client, api_data: ApiData
) -> None:
    subject = {"subject_id": api_data.session_ids[5]}
    # The request: no-cache + partial=deny answered 200 with Datadog "ok", stale.
    r = failing_datadog.get(
        ANNOTATIONS, params={**subject, "partial": "deny"}, headers={"Cache-Control": "no-cache"}
    )
    problem = assert_problem(r, 502, "source_unavailable")
    assert problem["source"] == DATADOG_SOURCE
    # partial=deny alone: a stale answer is a failed source too.
    assert_problem(
        failing_datadog.get(ANNOTATIONS, params={**subject, "partial": "deny"}), 502, "source_unavailable"
    )
    # no-cache alone: the failure is shown (partial), not papered over with the old answer.
    fresh = failing_datadog.get(ANNOTATIONS, params=subject, headers={"Cache-Control": "no-cache"}).json()
    assert fresh["partial"] is True
    assert _datadog(fresh)["status"] == "error"
    assert not any(a["source"] == DATADOG_SOURCE for a in fresh["data"])
    # An ordinary query keeps serving stale on error (SPEC §4), marked as such.
    ordinary = failing_datadog.get(ANNOTATIONS, params=subject).json()
    assert _datadog(ordinary) | {"elapsed_ms": 0} == _datadog(ordinary) | {
        "status": "ok",
        "stale": True,
        "elapsed_ms": 0,
    }
    assert any(a["source"] == DATADOG_SOURCE for a in ordinary["data"])


def test_1_max_stale_opts_into_stale_answers(failing_datadog: httpx.Client, api_data: ApiData) -> None:
    subject = {"subject_id": api_data.session_ids[5], "partial": "deny"}
    for header in ("max-stale=300", "no-cache, max-stale=60", "max-stale"):
        r = failing_datadog.get(ANNOTATIONS, params=subject, headers={"Cache-Control": header})
        assert r.status_code == 200, (header, r.text)
        assert _datadog(r.json())["stale"] is True, header
    # Older than what the client accepts: the failure stands (the entry is at least 0 s old).
    assert_problem(
        failing_datadog.get(ANNOTATIONS, params=subject, headers={"Cache-Control": "max-stale=0"}),
        502,
        "source_unavailable",
    )
    problem = assert_problem(
        failing_datadog.get(ANNOTATIONS, params=subject, headers={"Cache-Control": "max-stale=soon"}),
        422,
        "validation_error",
    )
    assert problem["errors"][0]["loc"] == ["header", "cache-control"]


def test_1_compare_fails_on_a_stale_side_unless_opted_in(
    failing_datadog: httpx.Client, api_data: ApiData
) -> None:
    body = {"subject_ids": [api_data.session_ids[5]], "left": PHOENIX_SOURCE, "right": DATADOG_SOURCE}
    assert_problem(failing_datadog.post(COMPARE, json=body), 502, "source_unavailable")
    assert_problem(
        failing_datadog.post(COMPARE, json=body, headers={"Cache-Control": "no-cache"}),
        502,
        "source_unavailable",
    )
    opted = failing_datadog.post(COMPARE, json=body, headers={"Cache-Control": "max-stale=300"})
    assert opted.status_code == 200, opted.text
    assert opted.json()["rows"], "the stale Datadog side was compared"


def test_2_an_id_too_long_for_a_datadog_url_is_413_not_502(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    for sources in ([DATADOG_SOURCE], [PHOENIX_SOURCE]):
        r = client.post(SEARCH, json={"subject_ids": ["a" * 70_000], "sources": sources})
        problem = assert_problem(r, 413, "payload_too_large")
        assert "70000 characters" in problem["detail"], problem
    both = client.post(SEARCH, json={"subject_ids": ["a" * 9_000]})
    assert_problem(both, 413, "payload_too_large")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], (
        "a traceback was logged"
    )


def test_4_a_cursor_is_refused_for_another_key_with_the_same_sources(
    gateway: Any, api_data: ApiData, client_for: ClientFactory
) -> None:
    limited = client_for(gateway.base_url, PHOENIX_ONLY_KEY)
    admin = client_for(gateway.base_url, ADMIN_KEY)
    params: dict[str, Any] = {"subject_id": api_data.session_ids, "limit": 3, "source": PHOENIX_SOURCE}
    cursor = limited.get(ANNOTATIONS, params=params).json()["next_cursor"]
    assert cursor
    assert limited.get(ANNOTATIONS, params={**params, "cursor": cursor}).status_code == 200
    # Same query, same source selection, another key: refused.
    problem = assert_problem(
        admin.get(ANNOTATIONS, params={**params, "cursor": cursor}), 422, "invalid_cursor"
    )
    assert "another gateway key" in problem["detail"]
    admin_cursor = admin.get(ANNOTATIONS, params=params).json()["next_cursor"]
    assert_problem(limited.get(ANNOTATIONS, params={**params, "cursor": admin_cursor}), 422, "invalid_cursor")
    # The search route binds its cursors the same way.
    body = {"subject_ids": api_data.session_ids, "limit": 3, "sources": [PHOENIX_SOURCE]}
    search_cursor = limited.post(SEARCH, json=body).json()["next_cursor"]
    assert_problem(admin.post(SEARCH, json={**body, "cursor": search_cursor}), 422, "invalid_cursor")
    assert limited.post(SEARCH, json={**body, "cursor": search_cursor}).status_code == 200


def test_10_accept_that_admits_no_json_is_406(client: httpx.Client, api_data: ApiData) -> None:
    params = {"subject_id": api_data.session_ids[0]}
    for accept in ("text/csv", "text/html, text/csv;q=0.5", "application/json;q=0"):
        problem = assert_problem(
            client.get(ANNOTATIONS, params=params, headers={"Accept": accept}), 406, "not_acceptable"
        )
        assert "application/json" in problem["detail"]
    assert_problem(
        client.post(SEARCH, json={"subject_ids": [api_data.session_ids[0]]}, headers={"Accept": "text/csv"}),
        406,
        "not_acceptable",
    )
    for accept in ("application/json", "*/*", "application/*", "text/csv;q=0.5, application/json", ""):
        assert client.get(ANNOTATIONS, params=params, headers={"Accept": accept}).status_code == 200, accept


def test_10_a_post_without_content_type_is_415(client: httpx.Client, api_data: ApiData) -> None:
    body = b'{"subject_ids": ["%s"]}' % api_data.session_ids[0].encode()
    for path in (SEARCH, COMPARE, ANNOTATIONS):
        request = client.build_request("POST", path, content=body)
        assert "content-type" not in request.headers  # httpx adds none for raw bytes
        problem = assert_problem(client.send(request), 415, "unsupported_media_type")
        assert "application/json" in problem["detail"]
    assert client.post(SEARCH, content=body, headers={"Content-Type": "application/json"}).status_code == 200


def test_10_compare_over_the_id_limit_is_413(client: httpx.Client) -> None:
    ids = [f"s-{i}" for i in range(10_001)]
    problem = assert_problem(
        client.post(COMPARE, json={"subject_ids": ids, "left": PHOENIX_SOURCE, "right": DATADOG_SOURCE}),
        413,
        "payload_too_large",
    )
    assert "10000" in problem["detail"]


def test_10_probes_may_send_head(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz"):
        r = client.head(path)
        assert r.status_code == 200, path
        assert r.content == b""
        assert r.headers["content-type"].startswith("application/json")


def test_10_a_trailing_slash_is_404_without_a_redirect(client_for: ClientFactory, gateway: Any) -> None:
    anonymous = client_for(gateway.base_url, None)
    for path in ("/v1/sources/", "/v1/annotations/", "/healthz/"):
        r = anonymous.get(path, headers={"Host": "evil.example"})
        assert_problem(r, 404, "not_found")
        assert "location" not in r.headers


def test_10_messages_read_as_sentences(client: httpx.Client, api_data: ApiData) -> None:
    unknown = client.post(
        ANNOTATIONS,
        json={
            "source": PHOENIX_SOURCE,
            "annotations": [{"subject_id": "no-such-session-x", "name": "n", "label": "l"}],
        },
    )
    problem = assert_problem(unknown, 404, "not_found")
    assert "1 session does not exist" in problem["detail"], problem["detail"]
    empty = client.post(
        ANNOTATIONS,
        json={
            "source": PHOENIX_SOURCE,
            "annotations": [{"subject_id": api_data.write_session_id, "name": "n"}],
        },
    )
    problem = assert_problem(empty, 422, "validation_error")
    assert "Value error" not in problem["detail"]
    assert all(not e["msg"].startswith("Value error") for e in problem["errors"])


def test_9_docs_work_without_internet(client_for: ClientFactory, gateway: Any) -> None:
    anonymous = client_for(gateway.base_url, None)
    page = anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    referenced = [a or b for a, b in urls]
    assert referenced, page.text[:500]
    assert not [u for u in referenced if "://" in u or u.startswith("//")], referenced
    for url in referenced:
        asset = anonymous.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    scripts = [u for u in referenced if u.endswith(".js")]
    assert scripts
    assert b"SwaggerUIBundle" in anonymous.get(scripts[0]).content
