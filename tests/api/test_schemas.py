"""``api/schemas.py``: the GET query string's parse is remembered for the queries dashboards poll,
and so is the answer written for a polled page."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

import orjson
import pytest

from annotation_gateway.api.schemas import PARSED_QUERY_MEMO_MAX_BYTES, list_query, page_json
from annotation_gateway.errors import RequestValidationError
from annotation_gateway.federation.answers import PageJson, QueryPage, SourceStatus
from annotation_gateway.model import ProviderKind
from annotation_gateway.records import json_items, record_of
from tests.fakes import make_annotation


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


def test_a_polled_page_is_answered_with_the_bytes_written_for_it_until_its_tail_changes() -> None:
    records = [record_of(make_annotation("px", f"s{n}", name="q", updated_at=n)) for n in range(5)]
    hit = SourceStatus("px", ProviderKind.PHOENIX, "ok", count=5, cached=True, elapsed_ms=0.0)
    page = QueryPage(records=records, next_cursor=None, partial=False, sources=[hit])
    written = page_json(page)  # no JSON kept with the page: written from the records
    assert orjson.loads(written)["data"] == [orjson.loads(r.json) for r in records]
    held = PageJson(json_items(records))
    polled = replace(page, records_json=held)
    first = page_json(polled)
    assert first == written
    assert page_json(replace(polled, sources=[replace(hit)])) is first  # the same tail: the same bytes
    assert bytes(held.items) == json_items(records)  # the records' JSON, now inside the answer
    slower = replace(polled, sources=[replace(hit, elapsed_ms=0.26)])
    again = page_json(slower)
    assert again == page_json(replace(slower, records_json=None))
    assert orjson.loads(again)["sources"][0]["elapsed_ms"] == 0.3
    assert page_json(replace(polled, next_cursor="c2")) == page_json(
        replace(polled, next_cursor="c2", records_json=None)
    )
