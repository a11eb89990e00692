"""The Phoenix provider against recorded answers of a real Phoenix 20.26.1 (respx, no network).

Each test serves the transcripts in ``tests/fixtures/contracts/phoenix`` (or a response derived
from one, for faults a healthy server cannot be made to show) and checks the provider's outcome:
normalised annotations, the error class and message, and what went on the wire.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
import string
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import pytest
import respx

from annotation_gateway.errors import (
    PayloadTooLargeError,
    RequestValidationError,
    SourceAuthError,
    SourceNotFoundError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceRequestError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from annotation_gateway.model import AnnotationWrite, AnnotatorKind, SubjectKind
from annotation_gateway.providers import build_provider
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.providers.config import ConfigError
from annotation_gateway.providers.http import loc_text
from annotation_gateway.providers.phoenix import (
    MAX_IDS_PER_REQUEST,
    MAX_URL_BYTES,
    WRITE_BATCH_SIZE,
    PhoenixProvider,
    PhoenixSourceConfig,
)
from annotation_gateway.providers.phoenix import client as phoenix_client

CONTRACTS = Path(__file__).resolve().parents[1] / "fixtures" / "contracts" / "phoenix"
BASE = "http://127.0.0.1:6006"
PROJECT = "gw-test-na1"
SECRET = "px-test-key-0123456789abcdef"  # a made-up key, checked never to appear in errors


def transcript(name: str) -> dict[str, Any]:
    """``noauth/53`` → the parsed transcript ``noauth/53_*.json``."""
    folder, number = name.split("/")
    (path,) = sorted((CONTRACTS / folder).glob(f"{number}_*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def recorded(name: str) -> httpx.Response:
    """The recorded response of transcript ``name``."""
    return response_of(transcript(name)["response"])


def response_of(rec: dict[str, Any]) -> httpx.Response:
    headers = {"x-phoenix-server-version": "20.26.1"}
    if rec.get("content_type"):
        headers["content-type"] = rec["content_type"]
    if rec.get("body_json") is not None:
        content = orjson.dumps(rec["body_json"])
    else:
        content = (rec.get("body_text") or "").encode()
    return httpx.Response(rec["status"], headers=headers, content=content)


def json_response(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/json"}, content=orjson.dumps(body))


def text_response(text: str, status: int, ctype: str = "text/plain; charset=utf-8") -> httpx.Response:
    return httpx.Response(status, headers={"content-type": ctype}, content=text.encode())


def query_of(request: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(request.url.query.decode(), keep_blank_values=True)


def params(request: httpx.Request, key: str) -> list[str]:
    return [v for k, v in query_of(request) if k == key]


def rows(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = transcript(name)["response"]["body_json"]["data"]
    return data


class Replay:
    """Serve transcripts by (method, path, query without ``limit``); record every request."""

    def __init__(self, *names: str) -> None:
        self.table: dict[tuple[str, str, tuple[tuple[str, str], ...]], httpx.Response] = {}
        self.requests: list[httpx.Request] = []
        for name in names:
            req = transcript(name)["request"]
            url = urlsplit(req["url"])
            query = tuple(
                sorted((k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "limit")
            )
            self.table[(req["method"], url.path, query)] = recorded(name)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        query = tuple(sorted((k, v) for k, v in query_of(request) if k != "limit"))
        key = (request.method, request.url.raw_path.decode().split("?")[0], query)
        if key not in self.table:
            raise AssertionError(f"no transcript for {request.method} {request.url}")
        return self.table[key]


def make_config(**overrides: Any) -> PhoenixSourceConfig:
    fields: dict[str, Any] = {"name": "phoenix-test", "base_url": BASE, "project": PROJECT}
    fields.update(overrides)
    return PhoenixSourceConfig(**fields)


def make_provider(config: PhoenixSourceConfig | None = None, *, key: str | None = None) -> PhoenixProvider:
    config = config or make_config()
    environ = {}
    if key is not None:
        config = config.model_copy(update={"api_key_env": "PX_KEY"})
        environ["PX_KEY"] = key
    return PhoenixProvider.from_config(config, environ=environ, transport=httpx.AsyncHTTPTransport())


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(using="httpx", base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def provider() -> AsyncIterator[PhoenixProvider]:
    p = make_provider(key=SECRET)
    yield p
    await p.aclose()


def sessions(*ids: str, **kw: Any) -> SourceQuery:
    return SourceQuery(subject_ids=ids, subject_kinds=(SubjectKind.SESSION,), **kw)


# --- reading: normalisation -----------------------------------------------------------------


async def test_reads_and_normalises_session_annotations(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    # Transcript 36 was recorded with Phoenix's default limit (10): its next_cursor leads to
    # the last row, which transcript 51 (same ids, that cursor) holds.
    replay = Replay("noauth/36", "noauth/51")
    router.route().mock(side_effect=replay)

    got = await provider.fetch(sessions("na1-sess-A", "na1-sess-B"))

    source_rows = rows("noauth/36") + rows("noauth/51")
    assert [a.id for a in got] == [f"phoenix-test:{r['id']}" for r in source_rows]
    first, second = replay.requests
    assert first.url.path == f"/v1/projects/{PROJECT}/session_annotations"
    assert params(first, "session_ids") == ["na1-sess-A", "na1-sess-B"]
    assert params(first, "limit") == ["10000"]
    assert params(second, "cursor") == [transcript("noauth/36")["response"]["body_json"]["next_cursor"]]
    assert first.headers["authorization"] == f"Bearer {SECRET}"

    by_name = {a.name: a for a in got}
    empty = by_name["empty_result"]  # result with all-null fields
    assert (empty.label, empty.score, empty.explanation) == (None, None, None)
    asynced = by_name["async_mixed"]
    assert asynced.model_dump(mode="json", exclude={"raw"}) == {
        "id": "phoenix-test:UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOjM3",
        "source": "phoenix-test",
        "provider": "phoenix",
        "subject": {"kind": "session", "id": "na1-sess-B", "project": PROJECT},
        "name": "async_mixed",
        "label": None,
        "score": 1.0,
        "explanation": None,
        "annotator": {"kind": "HUMAN", "id": None},
        "identifier": "",
        "metadata": {},
        "queue": None,
        "created_at": "2026-11-23T05:24:16Z",
        "updated_at": "2026-11-23T05:24:16.384502Z",
        "extensions": {"phoenix": {"id": "UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOjM3", "source": "API"}},
    }
    assert "raw" not in asynced.model_dump(mode="json")


async def test_result_null_and_app_source_and_user_id(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    row = copy.deepcopy(rows("auth/61")[0])
    null_row = dict(copy.deepcopy(row), id="UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOjk5", result=None, metadata=None)
    router.route().mock(return_value=json_response({"data": [row, null_row], "next_cursor": None}))

    app, null = await provider.fetch(sessions("au3-auth-sess"))

    assert app.annotator.model_dump() == {"kind": AnnotatorKind.HUMAN, "id": "VXNlcjoy"}
    assert app.extensions["phoenix"] == {"id": row["id"], "source": "APP"}
    assert (app.label, app.score, app.identifier) == ("thumbs-up", 1.0, "px-app:VXNlcjoy")
    assert (null.label, null.score, null.explanation, null.metadata) == (None, None, None, {})


async def test_unknown_fields_are_kept_in_extensions_and_raw_on_request(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    row = copy.deepcopy(rows("noauth/88")[0])
    row["new_field"] = {"x": 1}
    row["result"]["confidence"] = 0.5
    row["annotator_kind"] = "AGENT"
    router.route().mock(return_value=json_response({"data": [row], "next_cursor": None}))

    (got,) = await provider.fetch(
        SourceQuery(subject_ids=(row["trace_id"],), subject_kinds=(SubjectKind.TRACE,), include_raw=True)
    )

    assert got.subject.kind is SubjectKind.TRACE
    assert got.annotator.kind is AnnotatorKind.UNKNOWN
    assert got.extensions["phoenix"] == {
        "id": row["id"],
        "source": "API",
        "new_field": {"x": 1},
        "result": {"confidence": 0.5},
        "annotator_kind": "AGENT",
    }
    assert got.raw == row


async def test_raw_on_request_is_the_row_as_received_on_the_strict_path(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    row = copy.deepcopy(rows("noauth/88")[0])  # Phoenix's own shape: decoded strictly
    router.route().mock(return_value=json_response({"data": [row], "next_cursor": None}))
    query = SourceQuery(subject_ids=(row["trace_id"],), subject_kinds=(SubjectKind.TRACE,))
    (plain,) = await provider.fetch(query)
    (with_raw,) = await provider.fetch(replace(query, include_raw=True))
    assert plain.raw is None
    assert with_raw.raw == row
    assert with_raw.without_raw() == plain


async def test_trace_and_span_annotations(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    replay = Replay("noauth/88", "noauth/87")
    router.route().mock(side_effect=replay)
    trace_ids = ("2646b4c55f1ab77bceb20abd0023e330", "e1f28b755bde2519a8696b2cd3c47630")
    span_ids = ("3545faf558aec728", "ef2499e22e6e82c0")

    traces = await provider.fetch(SourceQuery(subject_ids=trace_ids, subject_kinds=(SubjectKind.TRACE,)))
    spans = await provider.fetch(SourceQuery(subject_ids=span_ids, subject_kinds=(SubjectKind.SPAN,)))

    assert [(a.subject.kind, a.subject.id, a.name, a.label) for a in traces] == [
        (SubjectKind.TRACE, trace_ids[0], "resolved", "yes")
    ]
    assert [(a.subject.kind, a.identifier, a.annotator.kind) for a in spans] == [
        (SubjectKind.SPAN, "rev", AnnotatorKind.HUMAN),
        (SubjectKind.SPAN, "", AnnotatorKind.LLM),
    ]


async def test_no_kind_given_reads_sessions_traces_and_spans(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path.rsplit("/", 1)[-1])
        if request.url.path.endswith("/trace_annotations"):
            return recorded("noauth/88")
        return recorded("noauth/92")  # "None of the supplied ..._ids exist": no annotations

    router.route().mock(side_effect=answer)
    got = await provider.fetch(SourceQuery(subject_ids=("2646b4c55f1ab77bceb20abd0023e330",)))

    assert sorted(seen) == ["session_annotations", "span_annotations", "trace_annotations"]
    assert [a.subject.kind for a in got] == [SubjectKind.TRACE]


async def test_kinds_phoenix_lacks_read_nothing(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    route = router.route()
    got = await provider.fetch(SourceQuery(subject_ids=("x",), subject_kinds=(SubjectKind.DISPLAY_BLOCK,)))
    assert got == []
    assert route.call_count == 0


# --- reading: filters -------------------------------------------------------------------------


async def test_filters_are_pushed_down_and_ids_deduplicated(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    replay = Replay("noauth/39", "noauth/40", "noauth/37", "noauth/38")
    router.route().mock(side_effect=replay)

    included = await provider.fetch(sessions("na1-sess-A", "na1-sess-B", "na1-sess-A", names=("quality",)))
    excluded = await provider.fetch(
        sessions("na1-sess-A", "na1-sess-B", exclude_names=("quality", "note", "quality"))
    )
    by_identifier = await provider.fetch(
        SourceQuery(identifiers=("reviewer-1",), subject_kinds=(SubjectKind.SESSION,))
    )
    both = await provider.fetch(sessions("na1-sess-A", identifiers=("reviewer-1",)))

    assert params(replay.requests[0], "session_ids") == ["na1-sess-A", "na1-sess-B"]
    assert params(replay.requests[0], "include_annotation_names") == ["quality"]
    assert params(replay.requests[1], "exclude_annotation_names") == ["quality", "note"]
    assert params(replay.requests[2], "identifier") == ["reviewer-1"]
    assert params(replay.requests[2], "session_ids") == []
    assert {a.name for a in included} == {"quality"}
    assert {a.name for a in excluded}.isdisjoint({"quality", "note"})
    assert {a.identifier for a in by_identifier} == {"reviewer-1"}
    assert {(a.subject.id, a.identifier) for a in both} == {("na1-sess-A", "reviewer-1")}


async def test_empty_strings_are_never_sent(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    # Phoenix answers include_annotation_names= with nothing at all (transcript 67) and
    # identifier= with 422 (61): such filters are applied by the provider instead.
    base = rows("noauth/36")
    named_empty = dict(copy.deepcopy(base[1]), id="UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOjEwMA==", name="")
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        # Phoenix's filtering, as far as this test needs it
        requests.append(request)
        include, exclude = (
            params(request, "include_annotation_names"),
            params(request, "exclude_annotation_names"),
        )
        data = [
            r
            for r in [*base, named_empty]
            if (not include or r["name"] in include) and r["name"] not in exclude
        ]
        return json_response({"data": data, "next_cursor": None})

    router.route().mock(side_effect=answer)

    only_empty_name = await provider.fetch(sessions("na1-sess-A", "na1-sess-B", names=("", "flag")))
    no_identifier = await provider.fetch(sessions("na1-sess-A", "na1-sess-B", identifiers=("",)))
    not_empty_name = await provider.fetch(sessions("na1-sess-A", exclude_names=("", "dup")))

    for request in requests:
        assert all(value != "" for _, value in query_of(request)), request.url
    assert params(requests[0], "include_annotation_names") == []
    assert params(requests[2], "exclude_annotation_names") == ["dup"]
    assert sorted(a.name for a in only_empty_name) == ["", "flag"]
    assert {a.identifier for a in no_identifier} == {""}
    assert len(no_identifier) == sum(1 for r in [*base, named_empty] if r["identifier"] == "")
    assert {a.name for a in not_empty_name}.isdisjoint({"", "dup"})


async def test_empty_ids_match_nothing_and_empty_identifier_alone_is_refused(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    route = router.route()
    assert await provider.fetch(sessions("")) == []
    with pytest.raises(RequestValidationError):
        await provider.fetch(SourceQuery(identifiers=("",)))
    assert route.call_count == 0


# --- reading: outcomes ----------------------------------------------------------------------


async def test_unknown_sessions_are_an_empty_result(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    router.route().mock(side_effect=Replay("noauth/53"))
    assert await provider.fetch(sessions("nope")) == []


async def test_mixed_known_and_unknown_sessions(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    router.route().mock(side_effect=Replay("noauth/54"))
    got = await provider.fetch(sessions("na1-sess-A", "nope"))
    assert got
    assert {a.subject.id for a in got} == {"na1-sess-A"}


@pytest.mark.parametrize(
    ("name", "project", "message"),
    [
        ("noauth/56", "no-such-project", "Project with name no-such-project not found"),
        ("noauth/77", "UHJvamVjdDo5OTk5", "Project with ID UHJvamVjdDo5OTk5 not found"),
        ("noauth/109", "no such", "Project with name no such not found"),
    ],
)
async def test_unknown_project_is_not_found(
    router: respx.MockRouter, name: str, project: str, message: str
) -> None:
    replay = Replay(name)
    router.route().mock(side_effect=replay)
    provider = make_provider(make_config(project=project))
    with pytest.raises(SourceNotFoundError) as caught:
        await provider.fetch(sessions("na1-sess-A"))
    await provider.aclose()
    assert message in caught.value.detail
    assert caught.value.upstream_status == 404
    assert caught.value.problem()["code"] == "not_found"
    # the project is one URL-encoded path segment
    assert replay.requests[0].url.raw_path.startswith(f"/v1/projects/{project.replace(' ', '%20')}/".encode())


@pytest.mark.parametrize("name", ["auth/22", "auth/23", "auth/41"])
async def test_rejected_key_is_an_auth_error(router: respx.MockRouter, name: str) -> None:
    router.route().mock(return_value=recorded(name))
    provider = make_provider(make_config(project="gw-auth-au3"), key=SECRET)
    with pytest.raises(SourceAuthError) as caught:
        await provider.fetch(sessions("au3-auth-sess"))
    await provider.aclose()
    assert caught.value.upstream_status == 401
    assert transcript(name)["response"]["body_text"] in caught.value.detail
    assert SECRET not in str(caught.value)
    assert SECRET not in json.dumps(caught.value.problem())


async def test_forbidden_is_an_auth_error(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    router.route().mock(
        return_value=text_response("Only admin or system users can perform this action.", 403)
    )
    with pytest.raises(SourceAuthError) as caught:
        await provider.fetch(sessions("a"))
    assert caught.value.upstream_status == 403


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("noauth/70", "Too many session_ids supplied: 1001 (max 1000)"),
        ("noauth/57", "Invalid cursor value"),
    ],
)
async def test_422_text_is_a_request_error_with_phoenixs_message(
    router: respx.MockRouter, provider: PhoenixProvider, name: str, message: str
) -> None:
    router.route().mock(return_value=recorded(name))
    with pytest.raises(SourceRequestError) as caught:
        await provider.fetch(sessions("a"))
    assert type(caught.value) is SourceRequestError
    assert message in caught.value.detail
    assert caught.value.upstream_status == 422
    assert caught.value.status < 500


async def test_422_json_is_a_request_error_listing_detail(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    router.route().mock(return_value=recorded("noauth/71"))
    with pytest.raises(SourceRequestError) as caught:
        await provider.fetch(sessions("a"))
    assert "query.limit: Input should be a valid integer" in caught.value.detail
    assert caught.value.errors == [
        {
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]


@pytest.mark.parametrize("name", ["noauth/103", "noauth/112"])
async def test_html_page_is_a_protocol_error(
    router: respx.MockRouter, provider: PhoenixProvider, name: str
) -> None:
    router.route().mock(return_value=recorded(name))
    with pytest.raises(SourceProtocolError) as caught:
        await provider.fetch(sessions("na1-sess-A"))
    assert "text/html" in caught.value.detail
    assert "web UI" in caught.value.detail


async def test_5xx_is_retried_then_succeeds(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    route = router.route().mock(
        side_effect=[
            text_response("Internal Server Error", 500),
            text_response("bad gateway", 502),
            recorded("noauth/54"),
        ]
    )
    got = await provider.fetch(sessions("na1-sess-A", "nope"))
    assert route.call_count == 3
    assert {a.subject.id for a in got} == {"na1-sess-A"}


async def test_persistent_5xx_is_unavailable_after_the_configured_attempts(router: respx.MockRouter) -> None:
    route = router.route().mock(return_value=text_response("Internal Server Error", 500))
    provider = make_provider(make_config(retry_attempts=2))
    with pytest.raises(SourceUnavailableError) as caught:
        await provider.fetch(sessions("a"))
    await provider.aclose()
    assert route.call_count == 2
    assert caught.value.retryable
    assert caught.value.upstream_status == 500


async def test_connect_error_is_retried_then_unavailable(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    route = router.route().mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(SourceUnavailableError) as caught:
        await provider.fetch(sessions("a"))
    assert route.call_count == 3
    assert "ConnectError" in caught.value.detail
    assert SECRET not in str(caught.value)


async def test_connect_error_then_success(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    router.route().mock(side_effect=[httpx.RemoteProtocolError("Server disconnected"), recorded("noauth/54")])
    assert await provider.fetch(sessions("na1-sess-A", "nope"))


async def test_timeout_is_a_timeout_error(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    route = router.route().mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(SourceTimeoutError):
        await provider.fetch(sessions("a"))
    assert route.call_count == 3


async def test_429_honours_retry_after(router: respx.MockRouter) -> None:
    limited = httpx.Response(
        429, headers={"retry-after": "0.01", "content-type": "text/plain"}, content=b"slow down"
    )
    route = router.route().mock(side_effect=[limited, recorded("noauth/54")])
    provider = make_provider(make_config(max_retry_after_s=1))
    assert await provider.fetch(sessions("na1-sess-A", "nope"))
    assert route.call_count == 2

    route.mock(return_value=httpx.Response(429, headers={"retry-after": "0"}, content=b""))
    with pytest.raises(SourceRateLimitedError) as caught:
        await provider.fetch(sessions("a"))
    await provider.aclose()
    assert caught.value.retry_after == 0.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"data": [', "malformed JSON"),
        (b'{"data": []}', "field next_cursor: Field required"),
        (b'{"data": {}, "next_cursor": null}', "field data: Input should be a valid array"),  # JSON words
    ],
)
async def test_malformed_answers_are_protocol_errors(
    router: respx.MockRouter, provider: PhoenixProvider, body: bytes, field: str
) -> None:
    router.route().mock(
        return_value=httpx.Response(200, headers={"content-type": "application/json"}, content=body)
    )
    with pytest.raises(SourceProtocolError) as caught:
        await provider.fetch(sessions("a"))
    assert field in caught.value.detail


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("created_at"), "data[1].created_at: Field required"),
        (lambda r: r.pop("session_id"), "data[1].session_id: Field required"),
        (lambda r: r.update(updated_at="yesterday"), "data[1].updated_at"),
        (lambda r: r["result"].update(score="high"), "data[1].result.score"),
        (lambda r: r.update(id=17), "data[1].id: Input should be a valid string"),
        (lambda r: r.update(metadata=[1, 2]), "data[1].metadata"),
    ],
)
async def test_missing_or_wrong_typed_fields_name_the_field(
    router: respx.MockRouter, provider: PhoenixProvider, mutate: Callable[[dict[str, Any]], Any], field: str
) -> None:
    data = copy.deepcopy(rows("noauth/36"))
    mutate(data[1])
    router.route().mock(return_value=json_response({"data": data, "next_cursor": None}))
    with pytest.raises(SourceProtocolError) as caught:
        await provider.fetch(sessions("na1-sess-A", "na1-sess-B"))
    assert field in caught.value.detail
    assert caught.value.errors
    assert caught.value.errors[0]["loc"][0] == "response"
    assert loc_text(caught.value.errors[0]["loc"][1:]) == field.split(":")[0]


# --- reading: paging and chunking -----------------------------------------------------------


async def test_pages_through_next_cursor_to_the_end(router: respx.MockRouter) -> None:
    pages = [f"noauth/{n}" for n in range(41, 52)]
    replay = Replay(*pages)
    router.route().mock(side_effect=replay)
    provider = make_provider(make_config(page_size=1))

    got = await provider.fetch(sessions("na1-sess-A", "na1-sess-B"))
    await provider.aclose()

    expected = [row["id"] for page in pages for row in rows(page)]
    assert [a.extensions["phoenix"]["id"] for a in got] == expected
    assert len(set(expected)) == len(expected) == 11
    cursors = [params(r, "cursor") for r in replay.requests]
    assert cursors[0] == []
    for page, cursor in zip(pages, cursors[1:], strict=False):
        assert cursor == [transcript(page)["response"]["body_json"]["next_cursor"]]
    assert all(params(r, "limit") == ["1"] for r in replay.requests)


async def test_the_next_page_is_asked_for_before_this_one_is_mapped(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor is followed one page after another; the mapping of a page overlaps the wait
    for the next (each page is asked for once the one before it is decoded, not mapped)."""
    pages = [f"noauth/{n}" for n in range(41, 52)]
    replay = Replay(*pages)
    mapped = 0
    mapped_when_asked: list[int] = []
    real_to_records = phoenix_client.to_records

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal mapped
        records = real_to_records(*args, **kwargs)
        mapped += len(records)
        return records

    def answer(request: httpx.Request) -> httpx.Response:
        mapped_when_asked.append(mapped)
        return replay(request)

    monkeypatch.setattr(phoenix_client, "to_records", counting)
    router.route().mock(side_effect=answer)
    provider = make_provider(make_config(page_size=1))
    got = await provider.fetch(sessions("na1-sess-A", "na1-sess-B"))
    await provider.aclose()

    assert len(got) == len(pages) == 11
    # page 2 is asked for before page 1's row is mapped, page 3 before page 2's, ...
    assert mapped_when_asked == [0, *range(len(pages) - 1)]


async def test_a_broken_later_page_fails_the_read_after_the_pages_before_it(router: respx.MockRouter) -> None:
    first = {"data": rows("noauth/41"), "next_cursor": "UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOjk5"}
    answers = iter(
        [
            json_response(first),
            httpx.Response(200, headers={"content-type": "application/json"}, content=b'{"data": ['),
        ]
    )
    router.route().mock(side_effect=lambda request: next(answers))
    provider = make_provider(make_config(page_size=1))
    with pytest.raises(SourceProtocolError, match="malformed JSON"):
        await provider.fetch(sessions("na1-sess-A"))
    await provider.aclose()
    assert router.calls.call_count == 2


async def test_a_repeated_cursor_is_a_protocol_error(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    page = {"data": rows("noauth/41"), "next_cursor": "UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOjM5"}
    router.route().mock(return_value=json_response(page))
    with pytest.raises(SourceProtocolError, match="repeated the page cursor"):
        await provider.fetch(sessions("na1-sess-A"))


async def test_2500_ids_are_chunked_by_count_and_url_length_and_read_concurrently(
    router: respx.MockRouter,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(2500)]
    known = set(ids[::7])
    template = rows("noauth/36")[1]
    in_flight = 0
    peak = 0
    calls: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        calls.append(request)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        asked = params(request, "session_ids")
        data = [dict(template, id=f"gid-{s}", session_id=s) for s in asked if s in known]
        if not data:
            return text_response("None of the supplied session_ids exist in this project", 404)
        return json_response({"data": data, "next_cursor": None})

    router.route().mock(side_effect=answer)
    provider = make_provider(make_config(max_concurrency=4))
    got = await provider.fetch(sessions(*ids, *ids[:100]))  # duplicates are sent once
    await provider.aclose()

    sent = [s for r in calls for s in params(r, "session_ids")]
    assert sorted(sent) == sorted(ids)  # every id exactly once
    id_bytes = sum(len(f"&session_ids={s}") for s in ids)
    assert len(calls) >= math.ceil(id_bytes / MAX_URL_BYTES)  # 8 for 2,500 UUIDs
    for request in calls:
        assert len(str(request.url)) <= MAX_URL_BYTES
        assert len(params(request, "session_ids")) <= MAX_IDS_PER_REQUEST
    assert 1 < peak <= 4  # concurrent, under the cap
    assert sorted(a.subject.id for a in got) == sorted(known)


async def test_short_ids_are_chunked_at_1000(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return json_response({"data": [], "next_cursor": None})

    router.route().mock(side_effect=answer)
    # two-character span ids: 1,000 of them fit in one URL, so the id cap is what splits
    alphabet = string.ascii_letters + string.digits
    ids = ["".join(pair) for pair in itertools.islice(itertools.product(alphabet, repeat=2), 2500)]
    await provider.fetch(SourceQuery(subject_ids=tuple(ids), subject_kinds=(SubjectKind.SPAN,)))
    assert sorted(len(params(r, "span_ids")) for r in calls) == [500, 1000, 1000]


async def test_filters_too_long_for_a_url_are_applied_locally(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    names = (*(f"name-{i:04d}-{'x' * 40}" for i in range(400)), "quality")
    replay = Replay("noauth/36", "noauth/51")
    calls = replay.requests
    router.route().mock(side_effect=replay)
    got = await provider.fetch(sessions("na1-sess-A", "na1-sess-B", names=names))
    assert params(calls[0], "include_annotation_names") == []
    assert len(str(calls[0].url)) <= MAX_URL_BYTES
    assert {a.name for a in got} == {"quality"}


async def test_an_id_longer_than_a_url_is_refused(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    with pytest.raises(PayloadTooLargeError):
        await provider.fetch(sessions("x" * (MAX_URL_BYTES + 1)))


# --- writing ----------------------------------------------------------------------------------


def preflight_answer(existing: set[str]) -> Callable[[httpx.Request], httpx.Response]:
    """Phoenix's sessions list filtered by ``session_id in [...]``, over ``existing``."""

    def answer(request: httpx.Request) -> httpx.Response:
        (expression,) = params(request, "filter")
        assert expression.startswith("session_id in [")
        asked = eval(expression.removeprefix("session_id in "))  # noqa: S307 - our own repr() of a list
        data = [
            {"id": f"gid-{s}", "session_id": s, "project_id": "UHJvamVjdDo4"} for s in asked if s in existing
        ]
        return json_response({"data": data, "next_cursor": None})

    return answer


async def test_write_sends_sync_batches_and_returns_ids_in_request_order(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    pre = router.get(f"/v1/projects/{PROJECT}/sessions").mock(
        side_effect=preflight_answer({"na1-sess-A", "na1-sess-B"})
    )
    post = router.post("/v1/session_annotations").mock(return_value=recorded("noauth/09"))
    items = [
        AnnotationWrite(
            subject_id="na1-sess-A", name="quality", label="good", score=0.9, explanation="first"
        ),
        AnnotationWrite(
            subject_id="na1-sess-A",
            name="quality",
            identifier="reviewer-1",
            label="ok",
            score=0.5,
            metadata={"by": "r1"},
        ),
        AnnotationWrite(
            subject_id="na1-sess-A", name="tone", annotator_kind=AnnotatorKind.LLM, label="polite"
        ),
        AnnotationWrite(
            subject_id="na1-sess-B", name="quality", identifier="reviewer-1", label="bad", score=0.1
        ),
    ]

    result = await provider.write(items)

    assert result.ids == tuple(
        f"phoenix-test:{r['id']}" for r in transcript("noauth/09")["response"]["body_json"]["data"]
    )
    assert pre.call_count == 1
    assert post.call_count == 1
    request = post.calls.last.request
    assert params(request, "sync") == ["true"]
    body = json.loads(request.content)
    assert [d["session_id"] for d in body["data"]] == ["na1-sess-A", "na1-sess-A", "na1-sess-A", "na1-sess-B"]
    assert body["data"][0] == {
        "session_id": "na1-sess-A",
        "name": "quality",
        "annotator_kind": "HUMAN",
        "result": {"label": "good", "score": 0.9, "explanation": "first"},
        "metadata": {},
        "identifier": "",
    }
    assert all(isinstance(d["identifier"], str) for d in body["data"])


async def test_write_in_batches_of_500_keeps_order(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    router.get(f"/v1/projects/{PROJECT}/sessions").mock(
        side_effect=preflight_answer({f"s{i}" for i in range(1200)})
    )
    counter = iter(range(10_000))
    sizes: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        data = json.loads(request.content)["data"]
        sizes.append(len(data))
        return json_response({"data": [{"id": f"{d['session_id']}#{next(counter)}"} for d in data]})

    router.post("/v1/session_annotations").mock(side_effect=answer)
    items = [AnnotationWrite(subject_id=f"s{i}", name="q", score=i) for i in range(1200)]
    result = await provider.write(items)
    assert sizes == [WRITE_BATCH_SIZE, WRITE_BATCH_SIZE, 200]
    assert [i.split(":")[1].split("#")[0] for i in result.ids] == [f"s{i}" for i in range(1200)]


async def test_failure_in_a_later_batch_says_what_was_written(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    router.get(f"/v1/projects/{PROJECT}/sessions").mock(
        side_effect=preflight_answer({f"s{i}" for i in range(600)})
    )
    router.post("/v1/session_annotations").mock(
        side_effect=[
            json_response({"data": [{"id": f"g{i}"} for i in range(500)]}),
            text_response("boom", 500),
        ]
    )
    with pytest.raises(SourceUnavailableError) as caught:
        await provider.write([AnnotationWrite(subject_id=f"s{i}", name="q", score=1) for i in range(600)])
    assert "500 of 600 items were written" in caught.value.detail


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (AnnotationWrite(subject_id="na1-sess-A", name="note", explanation="x"), "name"),
        (
            AnnotationWrite(subject_id="na1-sess-A", name="q", annotator_kind=AnnotatorKind.UNKNOWN, score=1),
            "annotator_kind",
        ),
        (
            AnnotationWrite(subject_id="x", subject_kind=SubjectKind.DISPLAY_BLOCK, name="q", score=1),
            "subject_kind",
        ),
        (
            AnnotationWrite(subject_id="na1-sess-A", name="q", score=1, metadata={"when": object()}),
            "metadata",
        ),
    ],
)
async def test_write_refusals_happen_before_any_request(
    router: respx.MockRouter, provider: PhoenixProvider, item: AnnotationWrite, field: str
) -> None:
    route = router.route()
    ok = AnnotationWrite(subject_id="na1-sess-A", name="fine", score=1)
    with pytest.raises(RequestValidationError) as caught:
        await provider.write([ok, item])
    assert route.call_count == 0
    assert caught.value.errors == [
        {"loc": ["annotations", 1, field], "msg": caught.value.errors[0]["msg"], "type": "value_error"}
    ]


def test_a_write_item_needs_a_result() -> None:
    with pytest.raises(ValueError, match="at least one of label, score or explanation"):
        AnnotationWrite(subject_id="s", name="q")


async def test_write_to_unknown_sessions_is_refused_before_writing(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    router.get(f"/v1/projects/{PROJECT}/sessions").mock(side_effect=preflight_answer({"na1-sess-A"}))
    post = router.post("/v1/session_annotations")
    items = [
        AnnotationWrite(subject_id="na1-sess-A", name="mixed", score=1),
        AnnotationWrite(subject_id="does-not-exist", name="mixed", score=1),
        AnnotationWrite(subject_id="also-missing", name="mixed", score=1),
        AnnotationWrite(subject_id="does-not-exist", name="other", score=1),
    ]
    with pytest.raises(SourceNotFoundError) as caught:
        await provider.write(items)
    assert post.call_count == 0
    assert [e["subject_id"] for e in caught.value.errors or []] == ["does-not-exist", "also-missing"]
    assert "nothing was written" in caught.value.detail


@pytest.mark.parametrize("name", ["noauth/20", "noauth/21"])
async def test_upstream_unknown_sessions_list_the_ids(
    router: respx.MockRouter, provider: PhoenixProvider, name: str
) -> None:
    # The pre-flight saw the session, then it vanished before the write (or Phoenix disagreed).
    sent = transcript(name)["request"]["json"]["data"]
    router.get(f"/v1/projects/{PROJECT}/sessions").mock(
        side_effect=preflight_answer({d["session_id"] for d in sent})
    )
    router.post("/v1/session_annotations").mock(return_value=recorded(name))
    items = [
        AnnotationWrite(subject_id=d["session_id"], name=d["name"], score=d["result"]["score"]) for d in sent
    ]
    with pytest.raises(SourceNotFoundError) as caught:
        await provider.write(items)
    assert [e["subject_id"] for e in caught.value.errors or []] == ["does-not-exist"]


async def test_write_validation_error_from_phoenix(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    router.get(f"/v1/projects/{PROJECT}/sessions").mock(side_effect=preflight_answer({"na1-sess-A"}))
    router.post("/v1/session_annotations").mock(return_value=recorded("noauth/26"))
    with pytest.raises(SourceRequestError) as caught:
        await provider.write([AnnotationWrite(subject_id="na1-sess-A", name="q2", score=1)])
    assert caught.value.errors == [
        {
            "loc": ["body", "data", 0, "identifier"],
            "msg": "Input should be a valid string",
            "type": "string_type",
        }
    ]


async def test_write_preflight_for_traces_and_spans(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    trace_id = "2646b4c55f1ab77bceb20abd0023e330"
    span_id = "3545faf558aec728"
    traces = router.get(f"/v1/projects/{PROJECT}/traces").mock(
        return_value=json_response({"data": [{"trace_id": trace_id}], "next_cursor": None})
    )
    spans = router.get(f"/v1/projects/{PROJECT}/spans").mock(
        return_value=json_response(
            {"data": [{"context": {"trace_id": trace_id, "span_id": span_id}}], "next_cursor": None}
        )
    )
    router.post("/v1/trace_annotations").mock(return_value=recorded("noauth/86"))
    router.post("/v1/span_annotations").mock(
        return_value=json_response({"data": [{"id": "U3BhbkFubm90YXRpb246Nw=="}]})
    )

    result = await provider.write(
        [
            AnnotationWrite(
                subject_id=span_id, subject_kind=SubjectKind.SPAN, name="correctness", label="correct"
            ),
            AnnotationWrite(
                subject_id=trace_id, subject_kind=SubjectKind.TRACE, name="resolved", label="yes"
            ),
        ]
    )
    assert result.ids == ("phoenix-test:U3BhbkFubm90YXRpb246Nw==", "phoenix-test:VHJhY2VBbm5vdGF0aW9uOjQ=")
    assert params(traces.calls.last.request, "filter") == [f"trace_id in ['{trace_id}']"]
    assert params(spans.calls.last.request, "span_id") == [span_id]

    with pytest.raises(SourceNotFoundError) as caught:
        await provider.write(
            [AnnotationWrite(subject_id="f" * 32, subject_kind=SubjectKind.TRACE, name="x", score=1)]
        )
    assert caught.value.errors == [
        {
            "loc": ["annotations", 0, "subject_id"],
            "msg": f"no such trace in Phoenix project {PROJECT!r}",
            "type": "unknown_subject",
            "subject_kind": "trace",
            "subject_id": "f" * 32,
        }
    ]


async def test_writing_nothing_sends_nothing(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    route = router.route()
    assert (await provider.write([])).ids == ()
    assert route.call_count == 0


# --- health, configuration ------------------------------------------------------------------


async def test_health_reports_version_and_project(
    router: respx.MockRouter, provider: PhoenixProvider
) -> None:
    router.get("/arize_phoenix_version").mock(return_value=recorded("noauth/01"))
    router.get(f"/v1/projects/{PROJECT}").mock(
        return_value=json_response({"data": {"name": PROJECT, "description": None, "id": "UHJvamVjdDo4"}})
    )
    report = await provider.health()
    assert report.ok
    assert report.version == "20.26.1"
    assert report.extra == {"project": PROJECT, "project_id": "UHJvamVjdDo4"}
    assert report.latency_ms >= 0


@pytest.mark.parametrize(
    ("project_answer", "detail"),
    [
        (recorded("auth/23"), "Invalid token"),
        (text_response("Project with name gw-test-na1 not found", 404), "not found"),
        (httpx.ConnectError("refused"), "ConnectError"),
        (RuntimeError("bug"), "RuntimeError"),
    ],
)
async def test_health_never_raises(
    router: respx.MockRouter, provider: PhoenixProvider, project_answer: Any, detail: str
) -> None:
    router.get("/arize_phoenix_version").mock(return_value=recorded("auth/01"))
    router.get(f"/v1/projects/{PROJECT}").mock(side_effect=[project_answer])
    report = await provider.health()
    assert not report.ok
    assert report.version == "20.26.1"
    assert detail in (report.detail or "")
    assert SECRET not in (report.detail or "")


async def test_health_on_a_non_phoenix_server(router: respx.MockRouter, provider: PhoenixProvider) -> None:
    router.get("/arize_phoenix_version").mock(return_value=recorded("noauth/112"))
    report = await provider.health()
    assert not report.ok
    assert "text/html" in (report.detail or "")


def test_from_config_reads_the_key_from_the_environment() -> None:
    config = make_config(api_key_env="PX_KEY")
    with pytest.raises(ConfigError, match=r"sources\.phoenix-test\.api_key_env: environment variable PX_KEY"):
        PhoenixProvider.from_config(config, environ={})
    provider = build_provider(config, environ={"PX_KEY": SECRET}, transport=httpx.AsyncHTTPTransport())
    assert isinstance(provider, PhoenixProvider)
    assert SECRET not in repr(provider)
    assert provider.capabilities.needs_subject_ids is False
    assert provider.capabilities.writable_kinds == {SubjectKind.SESSION, SubjectKind.TRACE, SubjectKind.SPAN}


def test_project_names_with_path_characters_are_refused() -> None:
    for bad in ("a/b", "a?b", "a#b"):
        with pytest.raises(ValueError, match="project may not contain"):
            make_config(project=bad)
