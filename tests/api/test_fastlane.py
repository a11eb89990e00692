"""The fast lane answers exactly what the routed path answers (issue 10, item 5).

Two gateways over one stand-in federation, the same app but for ``fast_lane``: every request is
sent to both over real HTTP and the answers compared — status, the headers that matter, and the
body bytes — for successes and for every error class the hot route can produce.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from annotation_gateway.api.app import create_app
from annotation_gateway.api.fastlane import HOT_ROUTES
from annotation_gateway.api.routes.annotations import _head_values
from annotation_gateway.api.serving import ThreadedServer
from annotation_gateway.errors import SourceRateLimitedError, SourceUnavailableError
from annotation_gateway.model import Annotation, Annotator, AnnotatorKind, ProviderKind, Subject, SubjectKind
from tests.api.fake_federation import FakeFederation, FakeSource, fake_settings

ADMIN_KEY = "admin-key-for-fast-lane-parity"
PHX_ONLY_KEY = "phx-only-key-for-fast-lane-parity"
LIMITED_KEY = "rate-limited-key-for-fast-lane-parity"
HEADERS_THAT_MATTER = (
    "content-type",
    "content-length",
    "retry-after",
    "www-authenticate",
    "allow",
    "vary",
    "ratelimit-policy",
    "ratelimit",
)


def _annotation(source: str, provider: ProviderKind, n: int) -> Annotation:
    t = datetime(2026, 1, 1, 12, 0, n, tzinfo=UTC)
    return Annotation(
        id=f"{source}:{n}",
        source=source,
        provider=provider,
        subject=Subject(kind=SubjectKind.SESSION, id="s1", project="p" if provider == "phoenix" else None),
        name="resolution",
        label="resolved",
        score=0.5 + n,
        explanation="ünïcode ✓",
        annotator=Annotator(kind=AnnotatorKind.HUMAN, id="u1"),
        metadata={"k": [1, 2]},
        created_at=t,
        updated_at=t,
    )


@pytest.fixture(scope="module")
def fake() -> FakeFederation:
    return FakeFederation(
        [
            FakeSource(
                "phx", ProviderKind.PHOENIX, [_annotation("phx", ProviderKind.PHOENIX, i) for i in range(3)]
            ),
            FakeSource(
                "dd", ProviderKind.DATADOG, [_annotation("dd", ProviderKind.DATADOG, i) for i in range(2)]
            ),
        ]
    )


@pytest.fixture(scope="module")
def lanes(fake: FakeFederation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, str]]:
    settings = fake_settings(
        tmp_path_factory.mktemp("cfg"),
        admin_key=ADMIN_KEY,
        phx_only_key=PHX_ONLY_KEY,
        limited_key=LIMITED_KEY,
    )
    with (
        ThreadedServer(create_app(settings, federation=fake, fast_lane=True)) as fast,
        ThreadedServer(create_app(settings, federation=fake, fast_lane=False)) as routed,
    ):
        yield {True: fast.base_url, False: routed.base_url}


def _both(lanes: dict[bool, str], **request: Any) -> tuple[httpx.Response, httpx.Response]:
    answers = []
    for fast in (True, False):
        with httpx.Client(base_url=lanes[fast], timeout=10) as client:
            answers.append(client.request("GET", "/v1/annotations", **request))
    return answers[0], answers[1]


def _same(fast: httpx.Response, routed: httpx.Response) -> None:
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    for name in HEADERS_THAT_MATTER:
        assert fast.headers.get(name) == routed.headers.get(name), name
    assert fast.content == routed.content
    # Both carry Server-Timing with the gateway's own time (values differ, names do not).
    assert "gateway;dur=" in fast.headers["server-timing"]
    assert "gateway;dur=" in routed.headers["server-timing"]


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

CASES: dict[str, dict[str, Any]] = {
    "ok": {"params": {"subject_id": "s1"}, "headers": ADMIN},
    "ok, one source, limit": {"params": {"subject_id": "s1", "source": "phx", "limit": 2}, "headers": ADMIN},
    "no key": {"params": {"subject_id": "s1"}},
    "wrong key": {"params": {"subject_id": "s1"}, "headers": {"Authorization": "Bearer nope"}},
    "forbidden source": {
        "params": {"subject_id": "s1", "source": "dd"},
        "headers": {"Authorization": f"Bearer {PHX_ONLY_KEY}"},
    },
    "unknown source": {"params": {"subject_id": "s1", "source": "zz"}, "headers": ADMIN},
    "no subject": {"params": {"name": "x"}, "headers": ADMIN},
    "bad limit": {"params": {"subject_id": "s1", "limit": 0}, "headers": ADMIN},
    "bad enum": {"params": {"subject_id": "s1", "annotator_kind": "ROBOT"}, "headers": ADMIN},
    "unknown parameter": {"params": {"subject_id": "s1", "colour": "red"}, "headers": ADMIN},
    "number as time": {"params": {"subject_id": "s1", "updated_after": "1700000000"}, "headers": ADMIN},
    "bad cursor": {"params": {"subject_id": "s1", "cursor": "abc"}, "headers": ADMIN},
    "too many ids": {"params": {"subject_id": [f"s{i}" for i in range(1001)]}, "headers": ADMIN},
    "not acceptable": {"params": {"subject_id": "s1"}, "headers": {**ADMIN, "Accept": "text/csv"}},
    "bad max-stale": {"params": {"subject_id": "s1"}, "headers": {**ADMIN, "Cache-Control": "max-stale=x"}},
}


def test_the_registry_names_documented_routes() -> None:
    assert [(h.method, h.path) for h in HOT_ROUTES] == [("GET", "/v1/annotations")]


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fast_lane_and_routed_answers_are_identical(lanes: dict[bool, str], case: str) -> None:
    fast, routed = _both(lanes, **CASES[case])
    _same(fast, routed)
    if case.startswith("ok"):
        assert fast.status_code == 200
    else:
        assert fast.status_code >= 400
        assert fast.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "error",
    [
        SourceUnavailableError("phx: down", source="phx", upstream_status=503),
        SourceRateLimitedError("dd: slow down", source="dd", retry_after=7),
        RuntimeError("a bug in the federation"),
    ],
    ids=["source-unavailable", "rate-limited", "a-bug"],
)
def test_errors_from_the_federation_are_answered_alike(
    lanes: dict[bool, str], fake: FakeFederation, error: Exception
) -> None:
    fake.raise_on_query = error
    try:
        fast, routed = _both(lanes, params={"subject_id": "s1"}, headers=ADMIN)
    finally:
        fake.raise_on_query = None
    _same(fast, routed)
    expected = {SourceUnavailableError: 502, SourceRateLimitedError: 429, RuntimeError: 500}[type(error)]
    assert fast.status_code == expected
    if expected == 429:
        assert fast.headers["retry-after"] == "7"
    if expected == 500:
        assert "a bug" not in fast.text  # no internals in the body


def test_a_key_over_its_rate_limit_is_answered_alike(lanes: dict[bool, str]) -> None:
    # Each lane's app has its own (memory) windows: the same requests see the same limit.
    limited = {"params": {"subject_id": "s1"}, "headers": {"Authorization": f"Bearer {LIMITED_KEY}"}}
    for _ in range(2):  # the key's rate_limit: 2/hour
        fast, routed = _both(lanes, **limited)
        _same(fast, routed)
        assert fast.status_code == 200
        assert "ratelimit" not in fast.headers
    fast, routed = _both(lanes, **limited)
    _same(fast, routed)
    assert fast.status_code == 429
    assert fast.json()["code"] == "rate_limited"
    assert fast.headers["ratelimit-policy"] == '"default";q=2;w=3600'
    assert fast.headers["ratelimit"] == f'"default";r=0;t={fast.headers["retry-after"]}'


_HEAD_NAMES = st.sampled_from([b"authorization", b"accept", b"cache-control", b"host", b"x-other"])
_HEAD_VALUES = st.binary(min_size=0, max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_HEAD_NAMES, _HEAD_VALUES), max_size=8))
def test_the_hot_route_reads_the_head_as_starlette_does(raw: list[tuple[bytes, bytes]]) -> None:
    """The hot route reads its three headers in one pass (routes.annotations._head_values); each
    value is what ``request.headers.get`` gives the routed path: the first of repeated headers,
    latin-1 decoded, ``None`` when absent."""
    headers = Headers(scope={"type": "http", "headers": raw})
    expected = [headers.get(name) for name in ("authorization", "accept", "cache-control")]
    assert _head_values({"type": "http", "headers": raw}) == expected
