"""``/v1/annotations/metrics`` and ``/v1/annotations/agreement`` over HTTP (SPEC §8), against the
real Phoenix and the Datadog simulator.

Expectations are computed here from the annotations the id query returns (numpy for the
statistics; SPEC's reduction rule for agreement), not by the gateway's aggregation code.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.conftest import (
    DATADOG_SOURCE,
    PHOENIX_SOURCE,
    ApiData,
    ClientFactory,
    GatewayFactory,
    closed_port_url,
)
from tests.api.test_contract_fake import assert_problem

pytestmark = pytest.mark.phoenix

METRICS = "/v1/annotations/metrics"
AGREEMENT = "/v1/annotations/agreement"


def _ids(data: ApiData) -> list[str]:
    return data.scope_sessions()


def _annotations(client: httpx.Client, data: ApiData) -> list[dict[str, Any]]:
    r = client.post(
        "/v1/annotations/search",
        json={"subject_ids": _ids(data), "subject_kinds": ["session"], "limit": 1000},
    )
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return list(r.json()["data"])


def _day(text: str) -> str:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT00:00:00Z")


def _expected_rows(annotations: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for a in annotations:
        groups[(_day(a["updated_at"]), a["name"], a["source"])].append(a)
    out = {}
    for key, members in groups.items():
        scores = [a["score"] for a in members if a["score"] is not None]
        out[key] = {
            "count": len(members),
            "score_count": len(scores),
            "score_mean": float(np.mean(scores)) if scores else None,
            "score_stdev": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
            "score_p90": float(np.quantile(scores, 0.9)) if scores else None,
            "label_counts": dict(
                sorted(Counter(a["label"] for a in members if a["label"] is not None).items())
            ),
        }
    return out


def _check_rows(rows: list[dict[str, Any]], expected: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    got = {(r["bucket"], r["name"], r["source"]): r for r in rows}
    assert sorted(got) == sorted(expected)
    assert [(r["bucket"], r["name"], r["source"]) for r in rows] == sorted(got)  # the contract's order
    for key, want in expected.items():
        row = got[key]
        assert (row["count"], row["score_count"], row["label_counts"]) == (
            want["count"],
            want["score_count"],
            want["label_counts"],
        )
        for field in ("score_mean", "score_stdev", "score_p90"):
            if want[field] is None:
                assert row[field] is None
            else:
                assert row[field] == pytest.approx(want[field], abs=1e-12)


def test_metrics_over_ids_and_over_the_scope(client: httpx.Client, api_data: ApiData) -> None:
    expected = _expected_rows(_annotations(client, api_data))
    common = [("group_by", "name"), ("group_by", "source"), ("interval", "day"), ("subject_kind", "session")]
    by_ids = client.get(METRICS, params=[*common, *(("subject_id", s) for s in _ids(api_data))])
    assert by_ids.status_code == 200, by_ids.text
    body = by_ids.json()
    assert set(body) == {"rows", "partial", "sources"}
    assert body["partial"] is False
    _check_rows(body["rows"], expected)
    scoped = client.get(METRICS, params=[*common, ("scope", "all")])
    assert scoped.status_code == 200, scoped.text
    _check_rows(scoped.json()["rows"], expected)
    assert {s["source"]: s["status"] for s in scoped.json()["sources"]} == {
        PHOENIX_SOURCE: "ok",
        DATADOG_SOURCE: "ok",
    }
    posted = client.post(
        METRICS,
        json={"scope": "all", "subject_kind": ["session"], "group_by": ["name", "source"], "interval": "day"},
    )
    assert posted.status_code == 200, posted.text
    assert posted.json()["rows"] == scoped.json()["rows"]


def test_from_to_in_both_forms_and_to_exclusive(client: httpx.Client, api_data: ApiData) -> None:
    annotations = _annotations(client, api_data)
    times = sorted({datetime.fromisoformat(a["updated_at"].replace("Z", "+00:00")) for a in annotations})
    start = times[len(times) // 2]
    end = times[-1]  # exclusive: the newest ones are out
    inside = [
        a
        for a in annotations
        if start <= datetime.fromisoformat(a["updated_at"].replace("Z", "+00:00")) < end
    ]
    base = [("scope", "all"), ("subject_kind", "session")]
    rfc = client.get(METRICS, params=[*base, ("from", start.isoformat()), ("to", end.isoformat())])
    ms = lambda t: str(int(t.timestamp() * 1000))  # noqa: E731
    # Epoch milliseconds cut sub-millisecond parts: widen to whole milliseconds around the same bounds.
    epoch = client.get(
        METRICS, params=[*base, ("from", ms(start)), ("to", ms(end + timedelta(microseconds=999)))]
    )
    assert rfc.status_code == 200, rfc.text
    assert epoch.status_code == 200, epoch.text
    [row] = rfc.json()["rows"]
    assert row["bucket"] is None
    assert row["count"] == len(inside)
    if all(t.microsecond % 1000 == 0 for t in (start, end)):
        assert epoch.json()["rows"] == rfc.json()["rows"]
    else:
        assert epoch.json()["rows"][0]["count"] >= len(inside)


def test_csv_html_and_bad_parameters(client: httpx.Client, api_data: ApiData) -> None:
    params = [("scope", "all"), ("subject_kind", "session"), ("group_by", "label")]
    as_json = client.get(METRICS, params=params).json()["rows"]
    as_csv = client.get(METRICS, params=params, headers={"Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    records = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["label"] or None for r in records] == [r["label"] for r in as_json]
    assert [json.loads(r["label_counts"]) for r in records] == [r["label_counts"] for r in as_json]
    html = client.get(METRICS, params=[*params, ("format", "html")])
    assert html.headers["content-type"].startswith("text/html")
    assert "<svg" in html.text
    assert "<script" not in html.text
    for bad in (
        [("group_by", "colour")],
        [("group_by", "name")] * 2,
        [("group_by", g) for g in ("name", "source", "provider", "label", "queue")],
        [("interval", "fortnight")],
        [("from", "yesterday")],
        [("from", "1764633600000"), ("to", "1764547200000")],
        [("limit", "5")],
    ):
        assert_problem(client.get(METRICS, params=[("scope", "all"), *bad]), 422, "validation_error")
    assert_problem(client.get(METRICS), 422, "validation_error")  # neither ids nor scope
    assert_problem(client.get(METRICS, params=params, headers={"Accept": "image/png"}), 406, "not_acceptable")


def _reduce(labels: list[tuple[str, str]]) -> str:
    """SPEC/README: the majority label; a tie goes to the newest, then the smallest."""
    counts = Counter(label for label, _ in labels)
    newest = {label: max(t for l2, t in labels if l2 == label) for label in counts}
    return min(counts, key=lambda label: (-counts[label], _neg(newest[label]), label))


def _neg(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def test_agreement_by_source_on_resolution(client: httpx.Client, api_data: ApiData) -> None:
    ratings: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for a in _annotations(client, api_data):
        if a["name"] == "resolution" and a["label"] is not None:
            ratings[a["subject"]["id"]][a["source"]].append((a["label"], a["updated_at"]))
    both = {s: {src: _reduce(v) for src, v in by.items()} for s, by in ratings.items() if len(by) == 2}
    r = client.get(
        AGREEMENT, params={"scope": "all", "subject_kind": "session", "by": "source", "name": "resolution"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["by"] == "source"
    [result] = body["results"]
    assert result["raters"] == sorted([PHOENIX_SOURCE, DATADOG_SOURCE])
    assert result["subjects"] == len(both)
    assert result["disagreements"] == sorted(s for s, v in both.items() if len(set(v.values())) > 1)
    assert result["percent_agreement"] == pytest.approx(
        sum(len(set(v.values())) == 1 for v in both.values()) / len(both)
    )
    assert result["kappa_kind"] == "cohen"
    first, second = result["raters"]
    confusion = result["confusion"]
    assert sum(map(sum, confusion["matrix"])) == len(both)
    for i, a in enumerate(confusion["labels"]):
        for j, b in enumerate(confusion["labels"]):
            assert confusion["matrix"][i][j] == sum(
                1 for v in both.values() if (v[first], v[second]) == (a, b)
            )
    html = client.get(AGREEMENT, params={"scope": "all", "by": "source", "format": "html"})
    assert html.status_code == 200
    assert "<svg" in html.text
    assert_problem(client.get(AGREEMENT, params={"scope": "all", "by": "colour"}), 422, "validation_error")


def test_a_failing_source_is_partial_and_deny_is_its_problem(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    gateway = make_gateway([api_data.phoenix_config(), api_data.datadog_config(base_url=closed_port_url())])
    client = client_for(gateway.base_url)
    params = [("scope", "all"), ("subject_kind", "session"), ("group_by", "source")]
    r = client.get(METRICS, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["partial"] is True
    statuses = {s["source"]: s for s in body["sources"]}
    assert statuses[DATADOG_SOURCE]["status"] == "error"
    assert statuses[DATADOG_SOURCE]["error"]["source"] == DATADOG_SOURCE
    assert {row["source"] for row in body["rows"]} == {PHOENIX_SOURCE}
    denied = client.get(METRICS, params=[*params, ("partial", "deny")])
    problem = assert_problem(denied, 502, "source_unavailable")
    assert problem["source"] == DATADOG_SOURCE
    over_ids = client.get(AGREEMENT, params=[*(("subject_id", s) for s in _ids(api_data)), ("by", "source")])
    assert over_ids.status_code == 200
    assert over_ids.json()["partial"] is True
