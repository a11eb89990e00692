"""API contract over real HTTP with a stand-in federation: auth, problems, headers, OpenAPI.

These pin the HTTP layer itself (what the API does with what the federation answers or raises);
the end-to-end behaviour against real Phoenix and the Datadog simulator is in the other modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from openapi_spec_validator import validate

from annotation_gateway.api.app import create_app
from annotation_gateway.api.limits import MAX_REQUEST_BODY_BYTES
from annotation_gateway.api.serving import ThreadedServer
from annotation_gateway.errors import (
    SourceAuthError,
    SourceRateLimitedError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from annotation_gateway.federation import MAX_PAGE_SIZE, MAX_SUBJECT_IDS_GET, MAX_SUBJECT_IDS_SEARCH
from annotation_gateway.federation.query import LIST_FIELDS
from annotation_gateway.model import Annotation, Annotator, AnnotatorKind, ProviderKind, Subject, SubjectKind
from tests.api.fake_federation import FakeFederation, FakeSource, fake_settings

ADMIN_KEY = "admin-key-for-contract-tests"
PHX_ONLY_KEY = "phoenix-only-key-for-contract-tests"
LIMITED_KEY = "rate-limited-key-for-contract-tests"


def _annotation(source: str, provider: ProviderKind, n: int, subject: str) -> Annotation:
    t = datetime(2026, 1, 1, 12, 0, n, tzinfo=UTC)
    return Annotation(
        id=f"{source}:{n}",
        source=source,
        provider=provider,
        subject=Subject(kind=SubjectKind.SESSION, id=subject, project="p" if provider == "phoenix" else None),
        name="resolution",
        label="resolved",
        score=1.0,
        annotator=Annotator(kind=AnnotatorKind.HUMAN, id="u1"),
        created_at=t,
        updated_at=t,
    )


@pytest.fixture(scope="module")
def fake() -> FakeFederation:
    return FakeFederation(
        [
            FakeSource(
                "phx",
                ProviderKind.PHOENIX,
                [_annotation("phx", ProviderKind.PHOENIX, i, "s1") for i in range(3)],
            ),
            FakeSource(
                "dd",
                ProviderKind.DATADOG,
                [_annotation("dd", ProviderKind.DATADOG, i, "s1") for i in range(2)],
            ),
        ]
    )


@pytest.fixture(scope="module")
def base_url(fake: FakeFederation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = fake_settings(
        tmp_path_factory.mktemp("cfg"),
        admin_key=ADMIN_KEY,
        phx_only_key=PHX_ONLY_KEY,
        limited_key=LIMITED_KEY,
    )
    app = create_app(settings, federation=fake)
    with ThreadedServer(app) as server:
        yield server.base_url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as c:
        yield c


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert "server-timing" in response.headers
    return body  # type: ignore[no-any-return]


def test_query_answers_the_page_shape(client: httpx.Client) -> None:
    r = client.get("/v1/annotations", params={"subject_id": "s1"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"data", "next_cursor", "partial", "sources"}
    assert len(body["data"]) == 5
    assert "raw" not in body["data"][0]
    assert body["data"][0]["updated_at"].endswith("Z")
    assert {s["source"] for s in body["sources"]} == {"phx", "dd"}
    assert set(body["sources"][0]) == {
        "source",
        "provider",
        "status",
        "count",
        "cached",
        "stale",
        "elapsed_ms",
        "error",
    }


def test_server_timing_has_one_entry_per_source_and_the_gateway(client: httpx.Client) -> None:
    r = client.get("/v1/annotations", params={"subject_id": "s1"})
    names = [part.strip().split(";")[0] for part in r.headers["server-timing"].split(",")]
    assert names == ["src-phx", "src-dd", "gateway"]
    assert client.get("/healthz").headers["server-timing"].startswith("gateway;dur=")


def test_list_params_are_repeated_keys_and_reach_the_federation(
    client: httpx.Client, fake: FakeFederation
) -> None:
    r = client.get(
        "/v1/annotations?subject_id=s1&subject_id=s2&name=a&name=b&exclude_name=c&provider=phoenix"
        "&annotator_kind=HUMAN&annotator_kind=LLM&subject_kind=session&project=p&identifier=x"
        "&updated_after=2026-01-01T00:00:00Z&limit=7&include=raw&partial=deny",
        headers={"Cache-Control": "no-cache"},
    )
    assert r.status_code == 200, r.text
    query, allowed = fake.queries[-1]
    assert query.subject_ids == ("s1", "s2")
    assert query.names == ("a", "b")
    assert query.exclude_names == ("c",)
    assert query.annotator_kinds == (AnnotatorKind.HUMAN, AnnotatorKind.LLM)
    assert query.providers == (ProviderKind.PHOENIX,)
    assert query.identifiers == ("x",)
    assert query.limit == 7
    assert query.include_raw is True
    assert query.partial == "deny"
    assert query.use_cache is False
    assert query.updated_after == datetime(2026, 1, 1, tzinfo=UTC)
    assert allowed is None
    client.get("/v1/annotations", params={"subject_id": "s1"})
    assert fake.queries[-1][0].use_cache is True


def test_search_body_is_the_same_query(client: httpx.Client, fake: FakeFederation) -> None:
    r = client.post(
        "/v1/annotations/search", json={"subject_ids": ["s1"], "names": ["resolution"], "limit": 2}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    assert fake.queries[-1][0].names == ("resolution",)


_EVERY_LIST_FILTER = {
    "subject_kinds": ["session", "trace"],
    "identifiers": ["x"],
    "names": ["a", "b"],
    "exclude_names": ["c"],
    "sources": ["phx"],
    "providers": ["phoenix"],
    "annotator_kinds": ["HUMAN", "LLM"],
    "projects": ["p"],
    "queues": ["q"],
}


def test_every_list_filter_is_one_query_from_get_and_from_the_body(
    client: httpx.Client, fake: FakeFederation
) -> None:
    """The GET query string (singular keys), the search body (plural names) and the body with the
    GET names as aliases all give the same query, every list filter included."""
    assert set(_EVERY_LIST_FILTER) == {f for f in LIST_FIELDS if f != "subject_ids"}
    singular = [
        (name.removesuffix("s"), value) for name, values in _EVERY_LIST_FILTER.items() for value in values
    ]
    answers = [
        client.get("/v1/annotations", params=[("subject_id", "s1"), *singular]),
        client.post("/v1/annotations/search", json={"subject_ids": ["s1"], **_EVERY_LIST_FILTER}),
        client.post(
            "/v1/annotations/search",
            json={"subject_id": ["s1"], **{k.removesuffix("s"): v for k, v in _EVERY_LIST_FILTER.items()}},
        ),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    get_query, body_query, alias_query = (query for query, _ in fake.queries[-3:])
    assert get_query == body_query == alias_query
    assert get_query.queues == ("q",)
    assert get_query.projects == ("p",)
    assert get_query.sources == ("phx",)
    assert get_query.subject_kinds == (SubjectKind.SESSION, SubjectKind.TRACE)


# --- one contract test per problem code ------------------------------------------------------


def test_validation_error_needs_subject_or_identifier(client: httpx.Client) -> None:
    body = assert_problem(client.get("/v1/annotations"), 422, "validation_error")
    assert body["errors"]
    assert set(body["errors"][0]) == {"loc", "msg", "type"}  # type: ignore[index]


def test_validation_error_names_the_bad_parameter(client: httpx.Client) -> None:
    body = assert_problem(
        client.get("/v1/annotations", params={"subject_id": "s1", "limit": MAX_PAGE_SIZE + 1}),
        422,
        "validation_error",
    )
    assert body["errors"][0]["loc"] == ["query", "limit"]  # type: ignore[index]
    assert_problem(
        client.get("/v1/annotations", params={"subject_id": "s1", "partial": "maybe"}),
        422,
        "validation_error",
    )
    assert_problem(
        client.get("/v1/annotations", params={"subject_id": "s1", "provider": "x"}), 422, "validation_error"
    )
    assert_problem(client.get("/v1/annotations", params={"subject_ids": "s1"}), 422, "validation_error")


def test_validation_error_for_a_body_that_is_not_json(client: httpx.Client) -> None:
    r = client.post(
        "/v1/annotations/search", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 422, "validation_error")


def test_unsupported_media_type(client: httpx.Client) -> None:
    r = client.post(
        "/v1/annotations/search", content=b"subject_ids=s1", headers={"Content-Type": "text/plain"}
    )
    assert_problem(r, 415, "unsupported_media_type")
    ok = client.post(
        "/v1/annotations/search",
        content=b'{"subject_ids": ["s1"]}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


def test_invalid_cursor(client: httpx.Client) -> None:
    assert_problem(
        client.get("/v1/annotations", params={"subject_id": "s1", "cursor": "abc"}), 422, "invalid_cursor"
    )


def test_unauthorized_without_or_with_a_wrong_key(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as anonymous:
        r = anonymous.get("/v1/annotations", params={"subject_id": "s1"})
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = anonymous.get(
            "/v1/annotations", params={"subject_id": "s1"}, headers={"Authorization": "Bearer nope"}
        )
        assert_problem(r, 401, "unauthorized")
        r = anonymous.get("/v1/sources", headers={"Authorization": f"Basic {ADMIN_KEY}"})
        assert_problem(r, 401, "unauthorized")


def test_forbidden_source_for_a_limited_key(base_url: str, fake: FakeFederation) -> None:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {PHX_ONLY_KEY}"}, timeout=10
    ) as c:
        assert_problem(
            c.get("/v1/annotations", params={"subject_id": "s1", "source": "dd"}), 403, "forbidden"
        )
        r = c.get("/v1/annotations", params={"subject_id": "s1"})
        assert r.status_code == 200
        assert {a["source"] for a in r.json()["data"]} == {"phx"}
        assert fake.queries[-1][1] == frozenset({"phx"})
        assert [s["name"] for s in c.get("/v1/sources").json()["data"]] == ["phx"]


def test_not_found_and_method_not_allowed(client: httpx.Client) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")
    r = client.delete("/v1/annotations")
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


def test_payload_too_large_for_ids_and_body(client: httpx.Client) -> None:
    ids = [f"s{i}" for i in range(MAX_SUBJECT_IDS_SEARCH + 1)]
    body = assert_problem(
        client.post("/v1/annotations/search", json={"subject_ids": ids}), 413, "payload_too_large"
    )
    assert str(MAX_SUBJECT_IDS_SEARCH) in str(body["detail"])
    get_ids = [str(i) for i in range(MAX_SUBJECT_IDS_GET + 1)]
    body = assert_problem(
        client.get("/v1/annotations", params={"subject_id": get_ids}), 413, "payload_too_large"
    )
    assert str(MAX_SUBJECT_IDS_GET) in str(body["detail"])
    r = client.post(
        "/v1/annotations/search",
        content=b'{"subject_ids": ["' + b"x" * (MAX_REQUEST_BODY_BYTES + 1) + b'"]}',
        headers={"Content-Type": "application/json"},
    )
    assert str(MAX_REQUEST_BODY_BYTES) in str(assert_problem(r, 413, "payload_too_large")["detail"])


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (SourceUnavailableError("down", source="dd", upstream_status=503), 502, "source_unavailable"),
        (SourceTimeoutError("slow", source="dd"), 504, "source_timeout"),
        (SourceRateLimitedError("throttled", source="dd", retry_after=3), 429, "rate_limited"),
        (SourceAuthError("key refused", source="dd", upstream_status=403), 403, "source_unauthorized"),
    ],
)
def test_source_errors_keep_their_class(
    client: httpx.Client, fake: FakeFederation, error: Exception, status: int, code: str
) -> None:
    fake.raise_on_query = error
    try:
        body = assert_problem(
            client.get("/v1/annotations", params={"subject_id": "s1", "partial": "deny"}), status, code
        )
        assert body["source"] == "dd"
    finally:
        fake.raise_on_query = None


def test_rate_limited_when_a_key_exceeds_its_own_limit(base_url: str, fake: FakeFederation) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {LIMITED_KEY}"}, timeout=10) as c:
        for _ in range(2):  # LIMITED_KEY_RATE: 2/hour
            assert c.get("/v1/sources").status_code == 200
        asked = len(fake.queries)
        r = c.get("/v1/annotations", params={"subject_id": "s1"})
        body = assert_problem(r, 429, "rate_limited")
        assert "source" not in body  # the key's own limit, not a vendor's
        assert len(fake.queries) == asked  # refused before the federation was asked
        retry_after = int(r.headers["retry-after"])
        assert 3590 <= retry_after <= 3600
        # draft-ietf-httpapi-ratelimit-headers-11 §3-§4: Structured Field items.
        assert r.headers["ratelimit-policy"] == '"default";q=2;w=3600'
        assert r.headers["ratelimit"] == f'"default";r=0;t={retry_after}'
        assert_problem(c.post("/v1/annotations/search", json={"subject_ids": ["s1"]}), 429, "rate_limited")
    # Other keys keep their own windows.
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as c:
        assert c.get("/v1/annotations", params={"subject_id": "s1"}).status_code == 200


def test_unexpected_error_is_a_bare_500(client: httpx.Client, fake: FakeFederation) -> None:
    fake.raise_on_query = RuntimeError("secret internals /etc/passwd")
    try:
        r = client.get("/v1/annotations", params={"subject_id": "s1"})
        body = assert_problem(r, 500, "internal_error")
        assert "internals" not in r.text
    finally:
        fake.raise_on_query = None
    assert body["detail"] == "internal error"


def test_write_goes_to_the_federation(client: httpx.Client, fake: FakeFederation) -> None:
    r = client.post(
        "/v1/annotations",
        json={"source": "phx", "annotations": [{"subject_id": "s1", "name": "n", "label": "ok"}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"source": "phx", "count": 1, "ids": ["phx:0"]}
    assert "src-phx;dur=" in r.headers["server-timing"]
    r = client.post(
        "/v1/annotations", json={"source": "phx", "annotations": [{"subject_id": "s1", "name": "n"}]}
    )
    assert_problem(r, 422, "validation_error")


def test_health_ready_sources_metrics(client: httpx.Client, base_url: str) -> None:
    # A read of its own first: the route's series must not depend on another test having run.
    assert client.get("/v1/annotations", params={"subject_id": "s1"}).status_code == 200
    with httpx.Client(base_url=base_url, timeout=10) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert set(ready.json()["sources"]) == {"phx", "dd"}
        metrics = anonymous.get("/metrics")
        assert metrics.status_code == 200
        assert "annotation_gateway_http_requests_total" in metrics.text
        assert 'route="/v1/annotations"' in metrics.text
    sources = client.get("/v1/sources").json()["data"]
    assert {s["name"] for s in sources} == {"phx", "dd"}
    assert sources[0]["health"]["circuit_state"] == "closed"


def test_openapi_documents_every_operation(base_url: str) -> None:
    doc = httpx.get(base_url + "/openapi.json").json()
    operation_ids = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("operationId"), (path, method)
            assert op.get("summary"), (path, method)
            operation_ids.add(op["operationId"])
            for param in op.get("parameters", []):
                assert param.get("description"), (path, method, param["name"])
    assert {"list_annotations", "search_annotations", "write_annotations", "list_sources"} <= operation_ids
    params = [p["name"] for p in doc["paths"]["/v1/annotations"]["get"]["parameters"]]
    assert params == [
        "subject_id",
        "subject_kind",
        "identifier",
        "name",
        "exclude_name",
        "source",
        "provider",
        "annotator_kind",
        "project",
        "queue",
        "scope",
        "updated_after",
        "updated_before",
        "limit",
        "cursor",
        "include",
        "partial",
    ]
    throttled = doc["paths"]["/v1/annotations"]["get"]["responses"]["429"]
    assert set(throttled["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}
    error = doc["paths"]["/v1/annotations"]["get"]["responses"]["422"]
    assert error["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert doc["components"]["securitySchemes"]["gatewayKey"]["scheme"] == "bearer"
    validate(doc)  # a valid OpenAPI 3.1 document
    assert httpx.get(base_url + "/docs").status_code == 200
