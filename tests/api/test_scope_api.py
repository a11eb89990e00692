"""``scope=all`` and the ``queue`` filter over HTTP (SPEC §7), against the real Phoenix and the
Datadog simulator.

Expectations come from the id queries of the same subjects (``subject_kind=session`` keeps
Phoenix's traces out of it: the package's data names its sessions, not its traces).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from annotation_gateway.federation import limits
from tests.api.conftest import DATADOG_SOURCE, PHOENIX_SOURCE, ApiData, ClientFactory, GatewayFactory
from tests.api.test_contract_fake import assert_problem

pytestmark = pytest.mark.phoenix


def _expected(client: httpx.Client, data: ApiData, **extra: Any) -> dict[str, dict[str, Any]]:
    body = {"subject_ids": data.scope_sessions(), "subject_kinds": ["session"]}
    r = client.post("/v1/annotations/search", json={**body, **extra, "limit": 1000})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["next_cursor"] is None
    assert all("scanned_subjects" not in s for s in answer["sources"])  # id answers have none
    return {a["id"]: a for a in answer["data"]}


def _walk(client: httpx.Client, params: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        r = client.get("/v1/annotations", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages
    raise AssertionError("paging did not end")


def test_scope_all_pages_exactly_the_union_of_the_id_queries(client: httpx.Client, api_data: ApiData) -> None:
    expected = _expected(client, api_data)
    items, pages = _walk(client, {"scope": "all", "subject_kind": "session", "limit": 37})
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids))
    assert {item["id"]: item for item in items} == expected  # the very same canonical JSON
    subjects = [i["subject"]["id"] for i in items]
    assert subjects == sorted(subjects)  # subject order
    for page in pages:
        for status in page["sources"]:
            assert status["status"] == "ok"
            assert isinstance(status["scanned_subjects"], int)
    assert len(pages) > 2


def test_search_body_takes_scope_and_queue(client: httpx.Client, api_data: ApiData) -> None:
    queues = {i["queue"]["name"] for i in _expected(client, api_data).values() if i.get("queue")}
    [queue] = sorted(queues)
    expected = _expected(client, api_data, queues=[queue])
    assert expected
    assert {i["source"] for i in expected.values()} == {DATADOG_SOURCE}
    r = client.post(
        "/v1/annotations/search",
        json={"scope": "all", "subject_kind": ["session"], "queue": [queue], "limit": 1000},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert {a["id"]: a for a in body["data"]} == expected
    statuses = {s["source"]: s for s in body["sources"]}
    assert statuses[PHOENIX_SOURCE]["status"] == "skipped"
    assert "no queue" in statuses[PHOENIX_SOURCE]["error"]["reason"]


def test_scope_is_required_without_ids_and_refused_with_them(client: httpx.Client) -> None:
    body = assert_problem(client.get("/v1/annotations"), 422, "validation_error")
    assert "scope=all" in str(body["detail"])
    both = assert_problem(
        client.get("/v1/annotations", params={"scope": "all", "subject_id": "x"}), 422, "validation_error"
    )
    assert both["errors"][0]["loc"] == ["scope"]  # type: ignore[index]
    assert_problem(client.get("/v1/annotations", params={"scope": "some"}), 422, "validation_error")
    posted = client.post("/v1/annotations/search", json={"scope": "all", "subject_ids": ["x"]})
    assert_problem(posted, 422, "validation_error")


def test_a_scope_past_the_limit_is_413_naming_it(
    make_gateway: GatewayFactory, client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_SCOPE_SUBJECTS", 5)
    client = client_for(make_gateway().base_url)
    body = assert_problem(client.get("/v1/annotations", params={"scope": "all"}), 413, "payload_too_large")
    assert "more than 5" in str(body["detail"])
    assert "updated_before" in str(body["detail"])


def test_export_over_a_scope(client: httpx.Client, api_data: ApiData) -> None:
    expected = _expected(client, api_data)
    params = {"scope": "all", "subject_kind": "session", "format": "jsonl"}
    with client.stream("GET", "/v1/annotations/export", params=params) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    items = [json.loads(line) for line in lines]
    assert not any("_export" in item for item in items)
    assert {item["id"]: item for item in items} == expected
    assert len(items) == len(expected)


def test_compare_over_the_scopes_pairs_by_subject_id(client: httpx.Client, api_data: ApiData) -> None:
    sides = {"left": PHOENIX_SOURCE, "right": DATADOG_SOURCE}
    by_ids = client.post("/v1/compare", json={**sides, "subject_ids": api_data.scope_sessions()})
    scoped = client.post("/v1/compare", json={**sides, "scope": "all"})
    assert by_ids.status_code == 200, by_ids.text
    assert scoped.status_code == 200, scoped.text
    # The id list names every subject either side annotated, so the rows are the same ones.
    assert scoped.json()["rows"] == by_ids.json()["rows"]
    assert scoped.json()["summary"] == by_ids.json()["summary"]
    assert scoped.json()["overall"]["n_subjects"] == len({r["subject_id"] for r in scoped.json()["rows"]})
    both = client.post("/v1/compare", json={**sides, "scope": "all", "subject_ids": ["x"]})
    assert_problem(both, 422, "validation_error")
    neither = client.post("/v1/compare", json=sides)
    assert_problem(neither, 422, "validation_error")
