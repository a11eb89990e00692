"""Bad input, by hand (issue 7, item 3): the cases a generator is unlikely to hit on purpose.

Over real HTTP against the gateway in front of the real Phoenix and the Datadog simulator:
oversized id lists (413 naming the limit), bodies over the size limit (413, declared or
streamed), unicode and control characters in ids and names (accepted and round-tripped exactly,
or a clear 422 — never a 5xx), project names with ``/ ? #`` (refused in the config, harmless as a
query filter), tampered cursors (422 ``invalid_cursor``), a body that is not UTF-8, a bare number
as a date-time, and the ``Allow`` header of a 405.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from annotation_gateway.api.limits import MAX_REQUEST_BODY_BYTES
from annotation_gateway.devservers.phoenix import PhoenixSeeder, new_span_id, new_trace_id
from annotation_gateway.federation import MAX_SUBJECT_IDS_GET, MAX_SUBJECT_IDS_SEARCH
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.settings import ConfigError, load_settings
from tests.api.conftest import DATADOG_SOURCE, PHOENIX_SOURCE, ApiData
from tests.api.test_contract_fake import assert_problem

ANNOTATIONS = "/v1/annotations"
SEARCH = "/v1/annotations/search"

UNICODE_IDS = [
    "sess-ünïcødé-日本語",
    "sess-emoji-😀🚀",
    "sess-rtl-\u202eevil",
    "sess-zero-width-\u200b\u200d",
    "sess-combining-e\u0301",
    "sess, with comma & ampersand = equals",
    "sess/with/slashes?and#hash",
    "sess%20percent+plus",
]
CONTROL_IDS = ["sess-nul-\x00", "sess-bell-\x07", "sess-newline-\r\n-x", "sess-del-\x7f", "\t"]
UNICODE_NAMES = ["qualité ✓", "名前", "emoji 😀", "a/b?c#d", "spaces  and\ttab", "x" * 300]


def _no_5xx(r: httpx.Response) -> httpx.Response:
    assert r.status_code < 500, (
        f"{r.request.method} {r.request.url.path} answered {r.status_code}: {r.text[:300]}"
    )
    return r


# --- size limits ------------------------------------------------------------------------------


def test_get_with_more_than_1000_ids_is_413_naming_the_limit(client: httpx.Client) -> None:
    ids = [str(uuid.uuid4()) for _ in range(MAX_SUBJECT_IDS_GET + 1)]
    problem = assert_problem(client.get(ANNOTATIONS, params={"subject_id": ids}), 413, "payload_too_large")
    assert str(MAX_SUBJECT_IDS_GET) in problem["detail"]
    assert "/v1/annotations/search" in problem["detail"]
    # Exactly the limit is fine (a ~48 KB URL), and repeats of one id do not count twice.
    ok = client.get(ANNOTATIONS, params={"subject_id": ids[:MAX_SUBJECT_IDS_GET]})
    assert ok.status_code == 200, ok.text[:300]
    assert client.get(ANNOTATIONS, params={"subject_id": [ids[0]] * 1200}).status_code == 200


def test_search_with_more_than_10000_ids_is_413(client: httpx.Client, api_data: ApiData) -> None:
    ids = [f"nope-{i:05d}" for i in range(MAX_SUBJECT_IDS_SEARCH + 1)]
    problem = assert_problem(client.post(SEARCH, json={"subject_ids": ids}), 413, "payload_too_large")
    assert str(MAX_SUBJECT_IDS_SEARCH) in problem["detail"]
    # 10,000 is the limit, not beyond it: answered in full, real sessions among the unknown ids.
    within = [*api_data.session_ids, *ids[: MAX_SUBJECT_IDS_SEARCH - len(api_data.session_ids)]]
    r = client.post(SEARCH, json={"subject_ids": within, "limit": 1000})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["partial"] is False
    assert {s["source"]: s["count"] for s in body["sources"]} == api_data.expected


def test_body_over_the_limit_is_413_declared_or_streamed(client: httpx.Client) -> None:
    big = b'{"subject_ids": ["' + b"x" * (MAX_REQUEST_BODY_BYTES + 10) + b'"]}'
    declared = client.post(SEARCH, content=big, headers={"Content-Type": "application/json"})
    problem = assert_problem(declared, 413, "payload_too_large")
    assert str(MAX_REQUEST_BODY_BYTES) in problem["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield b'{"subject_ids": ["'
        for _ in range(MAX_REQUEST_BODY_BYTES // (1 << 20) + 2):
            yield b"y" * (1 << 20)
        yield b'"]}'

    streamed = client.post(SEARCH, content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(streamed, 413, "payload_too_large")
    # The same for writes and compare, and the server is still fine afterwards.
    for path in (ANNOTATIONS, "/v1/compare"):
        assert_problem(
            client.post(path, content=big, headers={"Content-Type": "application/json"}),
            413,
            "payload_too_large",
        )
    assert client.get("/healthz").status_code == 200


def test_too_many_values_of_a_filter_is_413(client: httpx.Client, api_data: ApiData) -> None:
    names = [f"n{i}" for i in range(1001)]
    r = client.post(SEARCH, json={"subject_ids": api_data.session_ids[:1], "names": names})
    problem = assert_problem(r, 413, "payload_too_large")
    assert "1000" in problem["detail"]


# --- unicode and control characters -----------------------------------------------------------


@pytest.fixture(scope="module")
def unicode_sessions(api_data: ApiData) -> list[str]:
    """Sessions with unicode ids in the test project (Phoenix creates them from spans)."""
    ids = [f"{uid}-{uuid.uuid4().hex[:6]}" for uid in UNICODE_IDS]
    with PhoenixSeeder(api_data.phoenix.base_url) as seeder:
        spans = [
            seeder.span(
                trace_id=new_trace_id(), span_id=new_span_id(), session_id=sid, start_time=datetime.now(UTC)
            )
            for sid in ids
        ]
        seeder.add_spans(api_data.project, spans)
    return ids


def test_unicode_ids_and_names_round_trip(client: httpx.Client, unicode_sessions: list[str]) -> None:
    items = [
        {
            "subject_id": sid,
            "subject_kind": "session",
            "name": UNICODE_NAMES[i % len(UNICODE_NAMES)],
            "label": f"lábel-{i}-✓",
            "explanation": "multi\nline\twith\u200b zero width and 😀",
            "identifier": f"idént-{i}",
            "metadata": {"clé": "välue", "nested": ["😀", None, 1.5]},
        }
        for i, sid in enumerate(unicode_sessions)
    ]
    written = client.post(ANNOTATIONS, json={"source": PHOENIX_SOURCE, "annotations": items})
    assert written.status_code == 200, written.text[:500]
    assert written.json()["count"] == len(items)

    # Read each back by its own id and name, through the query string (percent-encoded).
    for item in items:
        r = _no_5xx(client.get(ANNOTATIONS, params={"subject_id": item["subject_id"], "name": item["name"]}))
        assert r.status_code == 200, r.text[:300]
        data = [a for a in r.json()["data"] if a["source"] == PHOENIX_SOURCE]
        assert len(data) == 1, (item["subject_id"], r.json())
        got = data[0]
        assert got["subject"]["id"] == item["subject_id"]
        assert (got["name"], got["label"], got["explanation"]) == (
            item["name"],
            item["label"],
            item["explanation"],
        )
        assert (got["identifier"], got["metadata"]) == (item["identifier"], item["metadata"])
    # And all at once through the JSON body.
    r = client.post(
        SEARCH, json={"subject_ids": unicode_sessions, "identifiers": [i["identifier"] for i in items]}
    )
    assert sorted(a["subject"]["id"] for a in r.json()["data"]) == sorted(unicode_sessions)


@pytest.mark.parametrize("bad", CONTROL_IDS + UNICODE_IDS + ["", " ", "a" * 5000])
def test_odd_ids_and_names_never_5xx(client: httpx.Client, bad: str) -> None:
    """Unknown odd ids are simply not found (200, empty), or a clear 422; both vendors are asked."""
    for params in ({"subject_id": bad}, {"subject_id": "s", "name": bad}, {"identifier": bad or "x"}):
        r = _no_5xx(client.get(ANNOTATIONS, params=params))
        if r.status_code == 200:
            body = r.json()
            assert body["data"] == []
            assert all(s["status"] in ("ok", "skipped") for s in body["sources"]), body["sources"]
        else:
            assert_problem(r, r.status_code, r.json()["code"])
            assert r.status_code in (413, 422)
    r = _no_5xx(client.post(SEARCH, json={"subject_ids": [bad, "other"], "names": [bad]}))
    assert r.status_code in (200, 413, 422)


def test_lone_surrogates_and_invalid_percent_encoding(client: httpx.Client) -> None:
    # A lone surrogate cannot be UTF-8: percent-encoded it decodes to U+FFFD, not a crash.
    for raw in (
        "subject_id=%ED%A0%80",
        "subject_id=%FF%FE",
        "subject_id=%",
        "subject_id=%zz",
        "subject_id=a&&&=",
    ):
        r = _no_5xx(client.get(f"{ANNOTATIONS}?{raw}"))
        assert r.status_code in (200, 422), (raw, r.text[:200])
    # A lone surrogate *escaped in JSON* reaches the app as a str that is not text: a clear 422.
    json_headers = {"Content-Type": "application/json"}
    bodies = [
        (SEARCH, rb'{"subject_ids": ["\ud800"]}'),
        (SEARCH, rb'{"subject_ids": ["a"], "names": ["x\udfff"]}'),
        (SEARCH, rb'{"identifiers": ["\ud800"]}'),
        ("/v1/compare", rb'{"subject_ids": ["\ud800"], "left": "phoenix-test", "right": "datadog-test"}'),
        (
            ANNOTATIONS,
            rb'{"source": "phoenix-test", "annotations": '
            rb'[{"subject_id": "s", "name": "\ud800", "label": "x"}]}',
        ),
    ]
    for path, body in bodies:
        r = _no_5xx(client.post(path, content=body, headers=json_headers))
        assert_problem(r, 422, "validation_error")


# --- project names ------------------------------------------------------------------------------


@pytest.mark.parametrize("project", ["a/b", "what?", "frag#ment", "../etc", "/"])
def test_project_names_with_url_syntax_are_refused_in_the_config(
    project: str, tmp_path: Any, api_data: ApiData
) -> None:
    with pytest.raises(ValidationError, match="may not contain"):
        PhoenixSourceConfig(name="p", base_url=api_data.phoenix.base_url, project=project)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[auth]\nenabled = false\n[[sources]]\nname = "p"\nprovider = "phoenix"\n'
        f'base_url = "{api_data.phoenix.base_url}"\nproject = "{project}"\n'
    )
    with pytest.raises(ConfigError, match=r"sources\[0\]\.project"):
        load_settings(config)


@pytest.mark.parametrize("project", ["a/b", "what?x=1", "frag#ment", "../../v1/projects", "%2F", ""])
def test_project_filter_with_url_syntax_is_harmless(
    client: httpx.Client, api_data: ApiData, project: str
) -> None:
    r = _no_5xx(client.get(ANNOTATIONS, params={"subject_id": api_data.session_ids, "project": project}))
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["data"] == []
    statuses = {s["source"]: s["status"] for s in body["sources"]}
    assert statuses == {PHOENIX_SOURCE: "ok", DATADOG_SOURCE: "skipped"}
    # The real project still matches: the filter is a value, not a path.
    r = client.get(ANNOTATIONS, params={"subject_id": api_data.session_ids, "project": api_data.project})
    counts = {s["source"]: s["count"] for s in r.json()["sources"]}
    assert counts[PHOENIX_SOURCE] == api_data.expected[PHOENIX_SOURCE]


# --- cursors ------------------------------------------------------------------------------------


def _first_cursor(client: httpx.Client, params: dict[str, Any]) -> str:
    r = client.get(ANNOTATIONS, params={**params, "limit": 5})
    cursor: str = r.json()["next_cursor"]
    assert cursor
    return cursor


def _flip(cursor: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_tampered_cursors_are_invalid_cursor(client: httpx.Client, api_data: ApiData) -> None:
    params: dict[str, Any] = {"subject_id": api_data.session_ids}
    cursor = _first_cursor(client, params)
    assert client.get(ANNOTATIONS, params={**params, "cursor": cursor, "limit": 5}).status_code == 200
    raw_len = len(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    tampered = {
        "flipped payload byte": _flip(cursor, 3),
        "flipped signature byte": _flip(cursor, raw_len - 1),
        "truncated": cursor[:-4],
        "one char": cursor[:1],
        "extended": cursor + "AAAA",
        "not base64": cursor[:10] + "!!" + cursor[12:],
        "unicode": cursor[:5] + "é" + cursor[6:],
        "huge": "A" * 5000,
    }
    for what, bad in tampered.items():
        r = client.get(ANNOTATIONS, params={**params, "cursor": bad})
        code = r.json().get("code")
        assert r.status_code == 422, (what, r.text[:300])
        # A cursor beyond the documented length is a plain validation error; the rest invalid_cursor.
        assert code == ("validation_error" if what == "huge" else "invalid_cursor"), (what, r.text[:300])
    # Replayed with other filters, in the body, or with another partial mode: bound to its query.
    for other in (
        {"subject_id": api_data.session_ids[:-1]},
        {**params, "name": "resolution"},
        {**params, "partial": "deny"},
        {**params, "source": PHOENIX_SOURCE},
    ):
        assert_problem(client.get(ANNOTATIONS, params={**other, "cursor": cursor}), 422, "invalid_cursor")
    r = client.post(SEARCH, json={"subject_ids": api_data.session_ids, "cursor": cursor, "names": ["tone"]})
    assert_problem(r, 422, "invalid_cursor")
    # limit may change between pages; the same query in the body is the same query.
    r = client.post(SEARCH, json={"subject_ids": api_data.session_ids, "cursor": cursor, "limit": 7})
    assert r.status_code == 200, r.text[:300]


# --- parsing corner cases (bugs the fuzzing found) -------------------------------------------------


def test_a_body_that_is_not_utf8_is_422(client: httpx.Client) -> None:
    for content in (b"\x80abc", b"\xc3\x28", b"\xff;\xfe+\xfa"):
        r = client.post(SEARCH, content=content, headers={"Content-Type": "application/json"})
        problem = assert_problem(r, 422, "validation_error")
        assert problem["errors"][0]["loc"][0] == "body"


def test_a_number_is_not_a_date_time(client: httpx.Client, api_data: ApiData) -> None:
    for value in ("2147483647", "1700000000000", "0", "-1.5"):
        r = client.get(ANNOTATIONS, params={"subject_id": api_data.session_ids[0], "updated_before": value})
        problem = assert_problem(r, 422, "validation_error")
        assert "RFC 3339" in problem["detail"]
    r = client.post(SEARCH, json={"subject_ids": api_data.session_ids[:1], "updated_after": 1700000000})
    assert_problem(r, 422, "validation_error")
    ok = client.get(
        ANNOTATIONS, params={"subject_id": api_data.session_ids[0], "updated_after": "2000-01-01T00:00:00Z"}
    )
    assert ok.status_code == 200


def test_405_lists_every_method_of_the_path(client: httpx.Client) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        r = client.request(method, ANNOTATIONS)
        assert_problem(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "GET, POST"
    r = client.delete("/v1/sources")
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"
