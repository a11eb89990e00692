"""``POST /v1/compare`` over real HTTP against a real Phoenix and the Datadog simulator.

The seeded data (tests/api/conftest.py) overlap: sessions 04-16 are annotated in both vendors,
00-03 in Phoenix only, 17-19 in Datadog only; Phoenix has a second ``resolution`` opinion on
00-05 and Datadog a second reviewer on the even sessions 04-18. The expected rows and statistics
are computed here, from the annotations the plain query API returns, with the documented rules
written out again (majority label, newest then smallest on a tie; mean score; label first, then
score with the tolerance; kappa from po/pe) — never by calling the code under test.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

import httpx

from annotation_gateway.api.routes.compare import fetch_sides
from annotation_gateway.compare import CompareRequest
from annotation_gateway.federation import Federation
from annotation_gateway.model import ProviderKind
from annotation_gateway.settings import CacheConfig
from tests.api.conftest import (
    DATADOG_SOURCE,
    LABELS,
    PHOENIX_ONLY_KEY,
    PHOENIX_SOURCE,
    ApiData,
    ClientFactory,
    GatewayFactory,
    closed_port_url,
)
from tests.api.test_contract_fake import assert_problem
from tests.fakes import DATADOG_LIKE, FakeProvider, make_annotation

COMPARE = "/v1/compare"
TOLERANCE = 0.01


def _body(data: ApiData, **extra: Any) -> dict[str, Any]:
    return {
        "subject_ids": data.session_ids,
        "left": PHOENIX_SOURCE,
        "right": DATADOG_SOURCE,
        "score_tolerance": TOLERANCE,
        **extra,
    }


def _everything(client: httpx.Client, data: ApiData) -> list[dict[str, Any]]:
    r = client.post("/v1/annotations/search", json={"subject_ids": data.session_ids, "limit": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    assert body["partial"] is False
    return list(body["data"])


def _group_label(members: list[dict[str, Any]]) -> str | None:
    votes: Counter[str] = Counter()
    newest: dict[str, datetime] = {}
    for m in members:
        if m["label"] is None:
            continue
        votes[m["label"]] += 1
        when = datetime.fromisoformat(m["updated_at"])
        newest[m["label"]] = max(newest.get(m["label"], when), when)
    if not votes:
        return None
    top = max(votes.values())
    tied = [label for label, n in votes.items() if n == top]
    latest = max(newest[label] for label in tied)
    return sorted(label for label in tied if newest[label] == latest)[0]


def _group_score(members: list[dict[str, Any]]) -> float | None:
    scores = [m["score"] for m in members if m["score"] is not None]
    return sum(scores) / len(scores) if scores else None


def _expected(annotations: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    sides: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for a in annotations:
        sides[(a["subject"]["id"], a["name"])][a["source"]].append(a)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, by_source in sides.items():
        left, right = by_source.get(PHOENIX_SOURCE, []), by_source.get(DATADOG_SOURCE, [])
        ll, rl = _group_label(left), _group_label(right)
        ls, rs = _group_score(left), _group_score(right)
        if not right:
            status = "only_left"
        elif not left:
            status = "only_right"
        elif ll != rl:
            status = "label_differs"
        elif (ls is None) != (rs is None) or (ls is not None and rs is not None and abs(rs - ls) > TOLERANCE):
            status = "score_differs"
        else:
            status = "agree"
        out[key] = {
            "status": status,
            "left_label": ll if left else None,
            "right_label": rl if right else None,
            "left_score": ls,
            "right_score": rs,
            "counts": (len(left), len(right)),
        }
    return out


def _kappa(pairs: list[tuple[str, str]]) -> float | None:
    n = len(pairs)
    if n < 2:
        return None
    po = sum(1 for a, b in pairs if a == b) / n
    left, right = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    pe = sum(left[label] / n * right[label] / n for label in set(left) | set(right))
    return None if pe == 1 else (po - pe) / (1 - pe)


def test_compare_rows_and_statistics_match_an_independent_computation(
    client: httpx.Client, api_data: ApiData
) -> None:
    expected = _expected(_everything(client, api_data))
    r = client.post(COMPARE, json=_body(api_data))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "src-" in r.headers["server-timing"]
    result = r.json()
    assert (result["left"], result["right"]) == (PHOENIX_SOURCE, DATADOG_SOURCE)

    got = {(row["subject_id"], row["name"]): row for row in result["rows"]}
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        assert row["status"] == want["status"], key
        assert (row["left"] or {}).get("label") == want["left_label"], key
        assert (row["right"] or {}).get("label") == want["right_label"], key
        for side, score in (("left", want["left_score"]), ("right", want["right_score"])):
            if score is None:
                assert (row[side] or {}).get("score") is None, key
            else:
                assert math.isclose(row[side]["score"], score, abs_tol=1e-12), key
        counts = (len((row["left"] or {}).get("members", [])), len((row["right"] or {}).get("members", [])))
        assert counts == want["counts"], key

    # Hand-checked against the seed: session 7 agrees on resolution; session 8's Datadog
    # reviewers split (escalated / resolved) and its helpfulness mean 0.625 differs from 0.75.
    s7, s8 = api_data.session_ids[7], api_data.session_ids[8]
    assert got[(s7, "resolution")]["status"] == "agree"
    assert got[(s7, "resolution")]["left"]["label"] == LABELS[7 % 3]
    assert got[(s8, "helpfulness")]["status"] == "score_differs"
    assert math.isclose(got[(s8, "helpfulness")]["right"]["score"], (0.75 + 0.5) / 2)
    assert got[(s8, "resolution")]["right"]["label_votes"] == {"escalated": 1, "resolved": 1}
    assert got[(api_data.session_ids[0], "pii_check")]["status"] == "only_left"
    assert got[(api_data.session_ids[19], "tone")]["status"] == "only_right"

    summaries = {s["name"]: s for s in result["summary"]}
    assert set(summaries) == {"helpfulness", "pii_check", "resolution", "tone"}
    for name, summary in summaries.items():
        mine = {k: v for k, v in expected.items() if k[1] == name}
        statuses = Counter(v["status"] for v in mine.values())
        for status in ("agree", "label_differs", "score_differs", "only_left", "only_right"):
            assert summary[status] == statuses[status], (name, status)
        paired = statuses["agree"] + statuses["label_differs"] + statuses["score_differs"]
        assert summary["n_paired"] == paired
        if paired:
            assert math.isclose(summary["agreement_rate"], statuses["agree"] / paired)
        labelled = [
            (v["left_label"], v["right_label"])
            for v in mine.values()
            if v["left_label"] is not None and v["right_label"] is not None
        ]
        assert summary["n_labelled"] == len(labelled)
        kappa = _kappa(labelled)
        if kappa is None:
            assert summary["cohen_kappa"] is None, name
        else:
            assert math.isclose(summary["cohen_kappa"], kappa, abs_tol=1e-12), name
        diffs = [
            abs(v["right_score"] - v["left_score"])
            for v in mine.values()
            if v["left_score"] is not None and v["right_score"] is not None
        ]
        assert summary["n_scored"] == len(diffs)
        if diffs:
            assert math.isclose(summary["mean_abs_score_diff"], sum(diffs) / len(diffs), abs_tol=1e-12)
        assert summary["disagreeing_subjects"] == sorted(
            k[0] for k, v in mine.items() if v["status"] in ("label_differs", "score_differs")
        )
        assert summary["one_sided_subjects"] == sorted(
            k[0] for k, v in mine.items() if v["status"] in ("only_left", "only_right")
        )
    assert result["overall"]["n_rows"] == len(expected)
    assert result["overall"]["n_subjects"] == len(api_data.session_ids)
    # Resolution is labelled on both sides for sessions 04-16: kappa is defined there.
    assert summaries["resolution"]["n_labelled"] == 13
    assert summaries["resolution"]["cohen_kappa"] is not None


def test_names_and_name_map_narrow_and_rename(client: httpx.Client, api_data: ApiData) -> None:
    # pii_check (Phoenix) ↔ tone (Datadog): pairs two names that never meet otherwise.
    r = client.post(COMPARE, json=_body(api_data, names=["pii_check"], name_map={"pii_check": "tone"}))
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert {(row["name"], row["right_name"]) for row in rows} == {("pii_check", "tone")}
    statuses = Counter(row["status"] for row in rows)
    # Phoenix 00-16, Datadog 04-19: 13 paired (labels pass vs friendly/neutral...), 4 + 3 one-sided.
    assert statuses == {"label_differs": 13, "only_left": 4, "only_right": 3}


def test_csv_by_query_and_by_accept(client: httpx.Client, api_data: ApiData) -> None:
    as_json = client.post(COMPARE, json=_body(api_data)).json()
    for response in (
        client.post(COMPARE, params={"format": "csv"}, json=_body(api_data)),
        client.post(COMPARE, json=_body(api_data), headers={"Accept": "text/csv"}),
    ):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        records = list(csv.DictReader(io.StringIO(response.text)))
        assert len(records) == len(as_json["rows"])
        for record, row in zip(records, as_json["rows"], strict=True):
            assert (record["subject_id"], record["name"], record["status"]) == (
                row["subject_id"],
                row["name"],
                row["status"],
            )
            left_score = (row["left"] or {}).get("score")
            assert record["left_score"] == ("" if left_score is None else repr(float(left_score)))
            assert record["right_label"] == ((row["right"] or {}).get("label") or "")


def test_html_report_is_self_contained(client: httpx.Client, api_data: ApiData) -> None:
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r = client.post(COMPARE, json=_body(api_data), headers={"Accept": browser_accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert html.startswith("<!DOCTYPE html>")
    for external in ("<script", "src=", "href=", "@import", "url("):
        assert external not in html
    summary = client.post(COMPARE, params={"format": "html"}, json=_body(api_data)).text
    assert summary == html
    body = client.post(COMPARE, json=_body(api_data)).json()
    for name in body["summary"]:
        for subject in name["disagreeing_subjects"]:
            assert subject in html


def test_limited_key_unknown_source_and_bad_formats(
    client: httpx.Client, client_for: ClientFactory, gateway: Any, api_data: ApiData
) -> None:
    limited = client_for(gateway.base_url, PHOENIX_ONLY_KEY)
    assert_problem(limited.post(COMPARE, json=_body(api_data)), 403, "forbidden")
    reversed_sides = _body(api_data, left=DATADOG_SOURCE, right=PHOENIX_SOURCE)
    assert_problem(limited.post(COMPARE, json=reversed_sides), 403, "forbidden")
    unknown = assert_problem(
        client.post(COMPARE, json=_body(api_data, right="nope")), 422, "validation_error"
    )
    assert unknown["errors"][0]["loc"] == ["body", "right"]
    assert_problem(
        client.post(COMPARE, json=_body(api_data), headers={"Accept": "image/png"}), 406, "not_acceptable"
    )
    assert_problem(
        client.post(COMPARE, params={"format": "xml"}, json=_body(api_data)), 422, "validation_error"
    )
    assert_problem(client.post(COMPARE, json={"left": PHOENIX_SOURCE}), 422, "validation_error")
    ambiguous = _body(api_data, name_map={"a": "x", "b": "x"})
    assert_problem(client.post(COMPARE, json=ambiguous), 422, "validation_error")
    assert_problem(
        client_for(gateway.base_url, None).post(COMPARE, json=_body(api_data)), 401, "unauthorized"
    )


def test_a_failing_source_fails_the_comparison(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    gw = make_gateway([api_data.phoenix_config(), api_data.datadog_config(base_url=closed_port_url())])
    r = client_for(gw.base_url).post(COMPARE, json=_body(api_data))
    problem = assert_problem(r, 502, "source_unavailable")
    assert problem["source"] == DATADOG_SOURCE


async def test_fetch_sides_reads_every_page() -> None:
    """More annotations on a side than a page holds (1,000): every page of both sides is read."""
    left = FakeProvider(
        "left-src", [make_annotation("left-src", f"s{i % 50}", name=f"n{i}") for i in range(2_345)]
    )
    right = FakeProvider(
        "right-src",
        [make_annotation("right-src", f"s{i % 50}", name=f"n{i}") for i in range(1_001)],
        provider_kind=ProviderKind.DATADOG,
        caps=DATADOG_LIKE,
    )
    federation = Federation([left, right], CacheConfig(), cursor_secret=b"k" * 32)
    request = CompareRequest(subject_ids=[f"s{i}" for i in range(50)], left="left-src", right="right-src")
    got_left, got_right = await fetch_sides(federation, request)
    assert sorted(a.id for a in got_left) == sorted(a.id for a in left.annotations)
    assert sorted(a.id for a in got_right) == sorted(a.id for a in right.annotations)
    await federation.aclose()


def test_migrated_copies_are_left_out_unless_include_copies(
    make_gateway: GatewayFactory, client_for: ClientFactory
) -> None:
    """Issue 15 over HTTP: a Phoenix copy of a Datadog annotation (``metadata.migrated_from``)
    does not join Phoenix's own judgement unless the body says ``include_copies``."""
    original = make_annotation(
        DATADOG_SOURCE, "s1", name="resolution", label="escalated", score=None, provider=ProviderKind.DATADOG
    )
    own = make_annotation(PHOENIX_SOURCE, "s1", name="resolution", label="resolved", score=None, updated_at=0)
    copy = make_annotation(
        PHOENIX_SOURCE, "s1", name="resolution", label="escalated", score=None, updated_at=60
    ).model_copy(update={"metadata": {"migrated_from": {"source": DATADOG_SOURCE, "id": original.id}}})
    gateway = make_gateway(
        providers=[
            FakeProvider(PHOENIX_SOURCE, [own, copy]),
            FakeProvider(DATADOG_SOURCE, [original], provider_kind=ProviderKind.DATADOG, caps=DATADOG_LIKE),
        ]
    )
    client = client_for(gateway.base_url)
    body = {"subject_ids": ["s1"], "left": PHOENIX_SOURCE, "right": DATADOG_SOURCE}

    r = client.post(COMPARE, json=body)
    assert r.status_code == 200, r.text
    (row,) = r.json()["rows"]
    assert (row["status"], row["left"]["label"], row["left"]["count"]) == ("label_differs", "resolved", 1)
    assert r.json()["ignored"]["left_copied_from_right"] == 1
    assert r.json()["ignored"]["right_copied_from_left"] == 0

    r = client.post(COMPARE, json=body | {"include_copies": True})
    assert r.status_code == 200, r.text
    (row,) = r.json()["rows"]
    # one vote each: the newest (the copy) wins the tie, which is what hid the disagreement
    assert (row["status"], row["left"]["label"], row["left"]["count"]) == ("agree", "escalated", 2)
    assert r.json()["ignored"]["left_copied_from_right"] == 0

    html = client.post(COMPARE, params={"format": "html"}, json=body)
    assert html.status_code == 200, html.text
    assert f"{PHOENIX_SOURCE}: 1 copied from {DATADOG_SOURCE}" in html.text
    as_csv = client.post(COMPARE, params={"format": "csv"}, json=body)
    assert [r["status"] for r in csv.DictReader(io.StringIO(as_csv.text))] == ["label_differs"]

    assert_problem(client.post(COMPARE, json=body | {"include_copies": "maybe"}), 422, "validation_error")
    schema = client.get("/openapi.json").json()["components"]["schemas"]["CompareRequest"]
    assert schema["properties"]["include_copies"]["default"] is False
