"""The shared tier's value format (``cache/codec.py``): records round-trip exactly, garbage and
damaged values are refused, a subject's records decode sharing what they share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotation_gateway.cache.codec import MAGIC, decode, encode
from annotation_gateway.records import Record
from tests.fakes import make_record

_text = st.text(max_size=20)
_opt_text = st.none() | _text
_when = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@st.composite
def records(draw: st.DrawFn) -> Record:
    queue_id = draw(_opt_text)
    return make_record(
        id=draw(_text),
        source=draw(st.sampled_from(["dd", "phoenix-a"])),
        provider=draw(st.sampled_from(["datadog", "phoenix"])),
        subject_kind=draw(st.sampled_from(["session", "trace", "span"])),
        subject_id=draw(_text),
        project=draw(_opt_text),
        name=draw(_text),
        label=draw(_opt_text),
        score=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5)),
        explanation=draw(_opt_text),
        annotator_kind=draw(st.sampled_from(["HUMAN", "LLM", "CODE"])),
        annotator_id=draw(_opt_text),
        identifier=draw(_text),
        metadata=draw(st.dictionaries(_text, st.integers(-(2**53), 2**53) | _text, max_size=3)),
        queue_id=queue_id,
        queue_name=None if queue_id is None else draw(_opt_text),
        created_at=draw(_when),
        updated_at=draw(_when),
        extensions=draw(st.dictionaries(_text, st.dictionaries(_text, _text, max_size=2), max_size=2)),
        raw=draw(st.none() | st.dictionaries(_text, _text, max_size=2)),
    )


def every_field(record: Record) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in Record.__struct_fields__)


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=8), st.floats(min_value=0, max_value=4e9))
def test_values_round_trip_to_identical_records(items: list[Record], stored_at: float) -> None:
    at, decoded = decode(encode(items, stored_at))
    assert at == stored_at
    assert [every_field(r) for r in decoded] == [every_field(r) for r in items]
    assert all(type(r.json) is bytes for r in decoded)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_decodes_to_records(junk: bytes) -> None:
    for value in (junk, MAGIC + junk):
        try:
            decode(value)
        except ValueError:
            continue
        # Only a well-formed empty answer may decode (e.g. a header "[]" and nothing after it).
        assert decode(value)[1] == ()


def test_damaged_values_are_refused() -> None:
    one = make_record(
        id="dd:1", source="dd", provider="datadog", subject_kind="session", subject_id="s", project=None,
        name="quality", label=None, score=4.0, explanation=None, annotator_kind="HUMAN", annotator_id="u",
        identifier="", metadata={}, queue_id="q", queue_name="Q", created_at=datetime(2026, 1, 1, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, tzinfo=UTC), extensions={},
    )  # fmt: skip
    good = encode([one], 1.0e9)
    assert decode(good)[1] == (one,)
    for bad in (
        good[:-1],  # a body cut short
        good + b"x",  # trailing bytes
        b"AGW0" + good[4:],  # another format
        good.replace(b'"dd:1"', b"12345", 1),  # a number where the id's string belongs
        good[:4] + b"\x7f\xf0\x00\x00\x00\x00\x00\x00" + good[12:],  # stored_at = infinity
        b"",
    ):
        with pytest.raises(ValueError, match=r"cached answer|header|bodies"):
            decode(bad)


def test_a_subjects_records_decode_sharing_what_they_share() -> None:
    """A value is one subject's answer: its records decode with one subject object, the empty
    metadata as one object, and equal times as one object (a decoded answer costs about what
    a fetched one does)."""
    when = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        make_record(
            id=f"dd:{i}",
            source="dd",
            provider="datadog",
            subject_kind="session",
            subject_id="s",
            project=None,
            name="quality",
            label=None,
            score=float(i),
            explanation=None,
            annotator_kind="HUMAN",
            annotator_id=f"u{i % 2}",
            identifier="",
            metadata={},
            queue_id=None,
            queue_name=None,
            created_at=when,
            updated_at=when,
            extensions={"datadog": {"i": i}},
        )
        for i in range(3)
    ]
    _, decoded = decode(encode(records, 1.0))
    assert [every_field(r) for r in decoded] == [every_field(r) for r in records]
    assert decoded[0].subject is decoded[1].subject is decoded[2].subject
    assert decoded[0].metadata is decoded[2].metadata
    assert decoded[1].created_at is decoded[1].updated_at


def test_a_large_score_round_trips_as_the_model_writes_it() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    big = make_record(
        id="dd:big", source="dd", provider="datadog", subject_kind="session", subject_id="s", project=None,
        name="n", label=None, score=2e16, explanation=None, annotator_kind="HUMAN", annotator_id=None,
        identifier="", metadata={}, queue_id=None, queue_name=None, created_at=when, updated_at=when,
        extensions={},
    )  # fmt: skip
    ((decoded),) = decode(encode([big], 1.0))[1]
    assert decoded.score == 2e16
    assert b'"score":2e+16' in decoded.json
    assert decoded == big
