"""``api/schemas.py``: the GET query string's parse is remembered for the queries dashboards poll."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from annotation_gateway.api.schemas import PARSED_QUERY_MEMO_MAX_BYTES, list_query
from annotation_gateway.errors import RequestValidationError


def _raw(**params: str | list[str]) -> bytes:
    return urlencode(params, doseq=True).encode()


def test_a_polled_query_string_is_parsed_once() -> None:
    raw = _raw(subject_id=["s1", "s2"], name="resolution", limit="50")
    first = list_query(raw, use_cache=True)
    assert list_query(raw, use_cache=True) is first
    assert first.subject_ids == ("s1", "s2")
    assert list_query(raw, use_cache=False) is not first  # the cache option is part of the key
    assert list_query(raw, use_cache=False).use_cache is False


def test_a_cursor_page_and_a_long_query_string_are_parsed_every_time() -> None:
    page = _raw(subject_id="s1", cursor="opaque-cursor-of-page-two")
    assert list_query(page, use_cache=True) == list_query(page, use_cache=True)
    assert list_query(page, use_cache=True) is not list_query(page, use_cache=True)
    long = _raw(subject_id=[f"subject-{n:05d}" for n in range(400)])
    assert len(long) > PARSED_QUERY_MEMO_MAX_BYTES
    assert list_query(long, use_cache=True) is not list_query(long, use_cache=True)


def test_an_invalid_query_string_raises_every_time() -> None:
    for _ in range(2):
        with pytest.raises(RequestValidationError):
            list_query(_raw(name="x"), use_cache=True)
