"""The provider toolkit's outcomes: the status table, the one Retry-After reader, the one errors[] shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from pydantic import TypeAdapter, ValidationError
from tenacity import RetryCallState

from annotation_gateway.errors import (
    ProblemCode,
    RequestValidationError,
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceRequestError,
    SourceUnavailableError,
)
from annotation_gateway.model import AnnotationWrite, SubjectKind
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.providers.datadog import DatadogProvider, DatadogSourceConfig
from annotation_gateway.providers.http import (
    STATUS_ERRORS,
    ErrorItem,
    RetryPolicy,
    error_type,
    jsonapi_items,
    loc_text,
    retry_after_seconds,
    status_error,
)
from annotation_gateway.providers.http.outcomes import (
    EPOCH_THRESHOLD_S,
    MAX_RETRY_AFTER_S,
    pointer_loc,
    validation_items,
)
from annotation_gateway.providers.phoenix import PhoenixProvider, PhoenixSourceConfig

NOW = datetime(2026, 11, 23, 7, 0, 0, tzinfo=UTC)
ITEM_KEYS = {"loc", "msg", "type"}
"""Every errors[] item has these keys (and only declared extension members besides)."""
EXTENSION_KEYS = {"subject_kind", "subject_id"}
"""The declared extension members (of ``unknown_subject`` items)."""


def answer(status: int, *, headers: dict[str, str] | None = None, content: bytes = b"") -> httpx.Response:
    request = httpx.Request("GET", "https://vendor.example/v1/things?x=1")
    return httpx.Response(status, headers=headers or {}, content=content, request=request)


def assert_item_shape(items: list[dict[str, Any]] | None) -> None:
    assert items, "expected errors[] items"
    for item in items:
        assert ITEM_KEYS <= set(item) <= ITEM_KEYS | EXTENSION_KEYS, item
        assert isinstance(item["loc"], list)
        assert all(isinstance(part, str | int) for part in item["loc"])
        assert isinstance(item["msg"], str)
        assert item["msg"]
        assert isinstance(item["type"], str)
        assert item["type"]


# --- the status table -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "code", "gateway_status"),
    [
        (401, SourceAuthError, ProblemCode.SOURCE_UNAUTHORIZED, 403),
        (403, SourceAuthError, ProblemCode.SOURCE_UNAUTHORIZED, 403),
        (404, SourceNotFoundError, ProblemCode.NOT_FOUND, 404),
        (429, SourceRateLimitedError, ProblemCode.RATE_LIMITED, 429),
        (400, SourceRequestError, ProblemCode.SOURCE_REJECTED, 422),
        (405, SourceRequestError, ProblemCode.SOURCE_REJECTED, 422),
        (409, SourceRequestError, ProblemCode.SOURCE_REJECTED, 422),
        (413, SourceRequestError, ProblemCode.SOURCE_REJECTED, 422),
        (422, SourceRequestError, ProblemCode.SOURCE_REJECTED, 422),
        (499, SourceRequestError, ProblemCode.SOURCE_REJECTED, 422),
        (500, SourceUnavailableError, ProblemCode.SOURCE_UNAVAILABLE, 502),
        (502, SourceUnavailableError, ProblemCode.SOURCE_UNAVAILABLE, 502),
        (503, SourceUnavailableError, ProblemCode.SOURCE_UNAVAILABLE, 502),
        (504, SourceUnavailableError, ProblemCode.SOURCE_UNAVAILABLE, 502),
        (599, SourceUnavailableError, ProblemCode.SOURCE_UNAVAILABLE, 502),
        (100, SourceProtocolError, ProblemCode.SOURCE_ERROR, 502),
        (201, SourceProtocolError, ProblemCode.SOURCE_ERROR, 502),
        (301, SourceProtocolError, ProblemCode.SOURCE_ERROR, 502),
        (304, SourceProtocolError, ProblemCode.SOURCE_ERROR, 502),
        (600, SourceProtocolError, ProblemCode.SOURCE_ERROR, 502),
    ],
)
def test_every_status_class_maps_to_one_error_and_problem_code(
    status: int, error: type[SourceError], code: ProblemCode, gateway_status: int
) -> None:
    assert error_type(status) is error
    built = status_error(answer(status), source="src", vendor="Vendor", summary="what it said")
    assert type(built) is error
    problem = built.problem()
    assert problem["code"] == code.value
    assert problem["status"] == gateway_status
    assert problem["source"] == "src"
    assert problem["upstream_status"] == status
    assert built.retryable == (error in (SourceRateLimitedError, SourceUnavailableError))
    assert built.detail.startswith("src: ")
    assert "GET /v1/things" in built.detail
    assert "?x=1" not in built.detail  # the path, never the query (it may hold ids or secrets)
    if error is not SourceRateLimitedError:
        assert "what it said" in built.detail


def test_the_item_shape_declares_its_extension_members() -> None:
    assert set(ErrorItem.__annotations__) == ITEM_KEYS | EXTENSION_KEYS


def test_the_table_lists_exact_statuses_and_classes() -> None:
    assert {k for k in STATUS_ERRORS if isinstance(k, int)} == {401, 403, 404, 429}
    assert {(k.start, k.stop) for k in STATUS_ERRORS if isinstance(k, range)} == {(400, 500), (500, 600)}


def test_error_items_are_kept_on_a_4xx_rejection_only() -> None:
    items: list[ErrorItem] = [{"loc": ["query", "limit"], "msg": "too big", "type": "bad_request"}]
    for status in (400, 401, 404, 422):
        assert status_error(answer(status), source="s", vendor="V", summary="x", errors=items).errors == [
            {"loc": ["query", "limit"], "msg": "too big", "type": "bad_request"}
        ]
    for status in (429, 500, 302):
        assert status_error(answer(status), source="s", vendor="V", summary="x", errors=items).errors is None


def test_a_429_carries_the_wait_it_asks_for() -> None:
    limited = status_error(answer(429, headers={"Retry-After": "7"}), source="s", vendor="V", summary="x")
    assert isinstance(limited, SourceRateLimitedError)
    assert limited.retry_after == 7.0
    unstated = status_error(answer(429), source="s", vendor="V", summary="x")
    assert isinstance(unstated, SourceRateLimitedError)
    assert unstated.retry_after is None


# --- Retry-After / X-RateLimit-Reset --------------------------------------------------------------


def http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"Retry-After": " 12 "}, 12.0),
        ({"Retry-After": http_date(NOW + timedelta(seconds=90))}, 90.0),
        ({"Retry-After": "Mon, 23 Nov 2026 07:02:00 -0000"}, 120.0),  # no zone: UTC
        ({"Retry-After": http_date(NOW - timedelta(seconds=30))}, 0.0),  # a past date: now
        ({"X-RateLimit-Reset": "4"}, 4.0),
        ({"X-RateLimit-Reset": "0.2"}, 0.2),
        ({"X-RateLimit-Reset": str(int(NOW.timestamp()) + 45)}, 45.0),  # a Unix time
        ({"X-RateLimit-Reset": str(int(NOW.timestamp()) - 45)}, 0.0),  # a Unix time passed
        ({"Retry-After": "3", "X-RateLimit-Reset": "40"}, 3.0),  # both: Retry-After wins
        ({"X-RateLimit-Reset": "40", "Retry-After": http_date(NOW + timedelta(seconds=5))}, 5.0),
        ({"Retry-After": "soon", "X-RateLimit-Reset": "40"}, 40.0),  # unreadable: the other one
        ({"Retry-After": "", "X-RateLimit-Reset": "8"}, 8.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"X-RateLimit-Reset": "-inf"}, None),
        ({"X-RateLimit-Reset": "Mon, 23 Nov 2026 07:02:00 GMT"}, None),  # a reset is a number
        ({"Retry-After": "-5"}, 0.0),  # negative: now
        ({"X-RateLimit-Reset": "-2.5"}, 0.0),
        ({"Retry-After": "1000000"}, MAX_RETRY_AFTER_S),  # capped
        ({"X-RateLimit-Reset": str(EPOCH_THRESHOLD_S - 1)}, MAX_RETRY_AFTER_S),
        ({"Retry-After": http_date(NOW + timedelta(days=30))}, MAX_RETRY_AFTER_S),
        ({}, None),
        ({"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0"}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    got = retry_after_seconds(httpx.Headers(headers), now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_retry_after_seconds_reads_lower_case_mappings_and_the_clock() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    soon = datetime.now(UTC) + timedelta(seconds=60)
    got = retry_after_seconds({"retry-after": http_date(soon)})
    assert got is not None
    assert 55 <= got <= 60


def _state_after(exc: BaseException) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.set_exception((type(exc), exc, None))
    return state


def test_the_retry_wait_is_the_asked_wait_capped_by_the_policy() -> None:
    policy = RetryPolicy(max_retry_after_s=5.0)
    assert policy.wait_s(_state_after(SourceRateLimitedError("x", source="s", retry_after=2.0))) == 2.0
    assert policy.wait_s(_state_after(SourceRateLimitedError("x", source="s", retry_after=60.0))) == 5.0
    assert policy.wait_s(_state_after(SourceRateLimitedError("x", source="s", retry_after=0.0))) == 0.0
    backoff = policy.wait_s(_state_after(SourceRateLimitedError("x", source="s", retry_after=None)))
    assert 0.0 <= backoff <= policy.backoff_max_s


# --- the one errors[] item shape ------------------------------------------------------------------


def test_pointer_and_loc_text() -> None:
    assert pointer_loc("/data/attributes/annotations/0/label_values/12/value") == [
        "data",
        "attributes",
        "annotations",
        0,
        "label_values",
        12,
        "value",
    ]
    assert pointer_loc("/a~1b/c~0d") == ["a/b", "c~d"]
    assert pointer_loc("") == []
    assert loc_text(["data", 3, "created_at"]) == "data[3].created_at"
    assert loc_text([]) == "(body)"


def test_jsonapi_items_every_form() -> None:
    body = {
        "errors": [
            {
                "status": "400",
                "title": "Bad Request",
                "detail": "limit must be > 0",
                "source": {"parameter": "limit"},
            },
            {
                "title": "Unprocessable Entity",
                "detail": "bad value",
                "source": {"pointer": "/data/items/0/value"},
            },
            {"code": "missing_key", "detail": "no key", "source": {"header": "DD-API-KEY"}},
            {"title": "Conflict"},
            "Forbidden",
            17,
        ]
    }
    assert jsonapi_items(body, 400) == [
        {"loc": ["query", "limit"], "msg": "limit must be > 0", "type": "bad_request"},
        {"loc": ["body", "data", "items", 0, "value"], "msg": "bad value", "type": "unprocessable_entity"},
        {"loc": ["header", "DD-API-KEY"], "msg": "no key", "type": "missing_key"},
        {"loc": [], "msg": "Conflict", "type": "conflict"},
        {"loc": [], "msg": "Forbidden", "type": "bad_request"},
    ]
    assert jsonapi_items({"errors": ["x" * 1000]}, 403)[0]["msg"].endswith("…")
    assert jsonapi_items({"data": []}, 400) == []
    assert jsonapi_items(["not", "an", "object"], 400) == []


def test_validation_items_locate_the_field_in_the_answer() -> None:
    adapter = TypeAdapter(dict[str, list[int]])
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python({"data": [1, "x"]})
    items = validation_items(caught.value)
    assert items == [
        {
            "loc": ["response", "data", 1],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]


# --- the same shape from both providers ------------------------------------------------------------

PHOENIX = "http://127.0.0.1:6006"
DATADOG = "https://api.datadoghq.com"


def phoenix_provider() -> PhoenixProvider:
    config = PhoenixSourceConfig(name="px", base_url=PHOENIX, project="p", retry_attempts=1)
    return PhoenixProvider.from_config(config, environ={}, transport=httpx.AsyncHTTPTransport())


def datadog_provider() -> DatadogProvider:
    config = DatadogSourceConfig(
        name="dd", site="datadoghq.com", api_key_env="K", app_key_env="A", retry_attempts=1
    )
    return DatadogProvider.from_config(
        config, environ={"K": "key-1234567", "A": "app-1234567"}, transport=httpx.AsyncHTTPTransport()
    )


async def test_phoenix_errors_have_the_one_shape() -> None:
    provider = phoenix_provider()
    caught: list[GatewayErrors] = []
    with respx.mock(using="httpx", base_url=PHOENIX, assert_all_called=False) as router:
        route = router.get("/v1/projects/p/session_annotations")
        route.respond(
            422,
            json={"detail": [{"loc": ["query", "limit"], "msg": "too big", "type": "less_than_equal"}]},
        )
        caught.append(await _raises(provider.fetch(SourceQuery(subject_ids=("s",)))))
        route.respond(200, json={"data": [{"id": 1}], "next_cursor": None})
        caught.append(await _raises(provider.fetch(SourceQuery(subject_ids=("s",)))))
        router.get("/v1/projects/p/sessions").respond(200, json={"data": [], "next_cursor": None})
        caught.append(await _raises(provider.write([AnnotationWrite(subject_id="gone", name="q", score=1)])))
    caught.append(
        await _raises(
            provider.write(
                [
                    AnnotationWrite(
                        subject_id="s", subject_kind=SubjectKind.DISPLAY_BLOCK, name="note", score=1
                    )
                ]
            )
        )
    )
    await provider.aclose()
    rejected, garbage, unknown, refused = caught
    assert isinstance(rejected, SourceRequestError)
    assert rejected.errors == [{"loc": ["query", "limit"], "msg": "too big", "type": "less_than_equal"}]
    assert isinstance(garbage, SourceProtocolError)
    assert garbage.errors is not None
    assert garbage.errors[0]["loc"][:3] == ["response", "data", 0]
    assert isinstance(unknown, SourceNotFoundError)
    assert unknown.errors == [
        {
            "loc": ["annotations", 0, "subject_id"],
            "msg": "no such session in Phoenix project 'p'",
            "type": "unknown_subject",
            "subject_kind": "session",
            "subject_id": "gone",
        }
    ]
    assert isinstance(refused, RequestValidationError)
    assert refused.errors == [
        {
            "loc": ["annotations", 0, "subject_kind"],
            "msg": "Phoenix has no display_block annotations",
            "type": "value_error",
        }
    ]
    for error in caught:
        assert_item_shape(error.errors)


async def test_datadog_errors_have_the_one_shape() -> None:
    provider = datadog_provider()
    read = f"{DATADOG}/api/v2/llm-obs/v1/annotated-interactions"
    caught: list[GatewayErrors] = []
    with respx.mock(using="httpx", assert_all_called=False) as router:
        route = router.get(read)
        route.respond(
            400,
            json={
                "errors": [
                    {"title": "Bad Request", "detail": "bad id", "source": {"parameter": "contentIds"}}
                ]
            },
        )
        caught.append(await _raises(provider.fetch(SourceQuery(subject_ids=("t",)))))
        route.respond(404, json={"errors": ["Not found"]})
        caught.append(await _raises(provider.fetch(SourceQuery(subject_ids=("t",)))))
        route.respond(200, json={"data": {"id": "q", "type": "annotated_interactions_by_trace"}})
        caught.append(await _raises(provider.fetch(SourceQuery(subject_ids=("t",)))))
        route.respond(200, json={"errors": [{"title": "Internal", "detail": "boom"}]})
        caught.append(await _raises(provider.fetch(SourceQuery(subject_ids=("t",)))))
    await provider.aclose()
    rejected, missing, garbage, errors_in_200 = caught
    assert isinstance(rejected, SourceRequestError)
    assert rejected.errors == [{"loc": ["query", "contentIds"], "msg": "bad id", "type": "bad_request"}]
    assert isinstance(missing, SourceNotFoundError)
    assert missing.errors == [{"loc": [], "msg": "Not found", "type": "not_found"}]
    assert isinstance(garbage, SourceProtocolError)
    assert garbage.errors is not None
    assert garbage.errors[0]["loc"] == ["response", "data", "attributes"]
    assert isinstance(errors_in_200, SourceProtocolError)
    assert errors_in_200.errors == [{"loc": [], "msg": "boom", "type": "internal"}]
    for error in caught:
        assert_item_shape(error.errors)


GatewayErrors = SourceError | RequestValidationError


async def _raises(call: Any) -> GatewayErrors:
    try:
        await call
    except (SourceError, RequestValidationError) as exc:
        return exc
    raise AssertionError("expected an error")
