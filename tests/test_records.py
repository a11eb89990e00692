"""Compact records: the JSON a record carries is the canonical annotation's, byte for byte,
whichever way the record was built, and its fields are what the read path reads."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from annotation_gateway.cache.codec import decode as decode_value
from annotation_gateway.cache.codec import encode as encode_value
from annotation_gateway.model import (
    Annotation,
    Annotator,
    AnnotatorKind,
    ProviderKind,
    Queue,
    Subject,
    SubjectKind,
)
from annotation_gateway.records import (
    Record,
    RecordBuilder,
    decode,
    json_items,
    json_lines,
    micros,
    record_of,
    same_documents,
    sort_key,
)
from tests.cache.test_codec import records  # the value codec's record strategy
from tests.fakes import make_record

_JSON = TypeAdapter(Annotation).dump_json

text = st.text(min_size=0, max_size=12)
names = st.text(min_size=1, max_size=12)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
when = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)


@st.composite
def annotations(draw: st.DrawFn) -> Annotation:
    provider = draw(st.sampled_from(list(ProviderKind)))
    source = draw(names)
    queue = draw(st.none() | st.builds(Queue, id=names, name=st.none() | text))
    return Annotation(
        id=f"{source}:{draw(names)}",
        source=source,
        provider=provider,
        subject=Subject(
            kind=draw(st.sampled_from(list(SubjectKind))), id=draw(names), project=draw(st.none() | names)
        ),
        name=draw(names),
        label=draw(st.none() | text),
        score=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        explanation=draw(st.none() | text),
        annotator=Annotator(kind=draw(st.sampled_from(list(AnnotatorKind))), id=draw(st.none() | names)),
        identifier=draw(text),
        metadata=draw(st.dictionaries(text, json_value, max_size=3)),
        queue=queue,
        created_at=draw(when),
        updated_at=draw(when),
        extensions={provider.value: draw(st.dictionaries(text, json_value, max_size=3))},
        raw=draw(st.none() | st.dictionaries(text, json_value, max_size=3)),
    )


def _fields(a: Annotation, *, raw: bool) -> dict[str, Any]:
    return {
        "id": a.id,
        "source": a.source,
        "provider": a.provider.value,
        "subject_kind": a.subject.kind.value,
        "subject_id": a.subject.id,
        "project": a.subject.project,
        "name": a.name,
        "label": a.label,
        "score": a.score,
        "explanation": a.explanation,
        "annotator_kind": a.annotator.kind.value,
        "annotator_id": a.annotator.id,
        "identifier": a.identifier,
        "metadata": a.metadata,
        "queue_id": a.queue.id if a.queue else None,
        "queue_name": a.queue.name if a.queue else None,
        "created_at": a.created_at,
        "updated_at": a.updated_at,
        "extensions": a.extensions,
        "raw": a.raw if raw else None,
    }


def plain_record(**overrides: Any) -> Record:
    """A Phoenix-shaped record with every optional field empty, but for ``overrides``."""
    t = datetime(2026, 1, 2, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": "s:1",
        "source": "s",
        "provider": "phoenix",
        "subject_kind": "session",
        "subject_id": "x",
        "project": None,
        "name": "n",
        "label": None,
        "score": None,
        "explanation": None,
        "annotator_kind": "HUMAN",
        "annotator_id": None,
        "identifier": "",
        "metadata": {},
        "queue_id": None,
        "queue_name": None,
        "created_at": t,
        "updated_at": t,
        "extensions": {},
    }
    return make_record(**{**fields, **overrides})


@settings(max_examples=300, deadline=None)
@given(annotations(), st.booleans())
def test_a_record_built_from_fields_is_the_canonical_json_byte_for_byte(
    annotation: Annotation, include_raw: bool
) -> None:
    expected = record_of(annotation, include_raw=include_raw)
    built = make_record(**_fields(annotation, raw=include_raw))
    assert built.json == expected.json
    assert built.json == _JSON(annotation if include_raw else annotation.without_raw())
    for field in ("id", "updated_us", "created_us", "source", "provider", "subject_kind", "subject_id"):
        assert getattr(built, field) == getattr(expected, field), field
    for field in ("project", "name", "label", "score", "annotator_kind", "annotator_id", "identifier"):
        assert getattr(built, field) == getattr(expected, field), field
    assert (built.queue_id, built.queue_name) == (expected.queue_id, expected.queue_name)
    # And the JSON reads back as the same annotation.
    assert built.annotation() == (annotation if include_raw else annotation.without_raw())
    assert orjson.loads(built.json) == built.as_dict()


def test_order_and_time_fields() -> None:
    t = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    older = plain_record(id="s:b", created_at=t, updated_at=t)
    newer = plain_record(id="s:c", created_at=t, updated_at=t + timedelta(microseconds=1))
    tie = plain_record(id="s:a", created_at=t, updated_at=t)
    assert sorted([older, newer, tie], key=sort_key) == [newer, tie, older]
    assert older.updated_us == micros(t) == 1767323045678901
    assert b'"updated_at":"2026-01-02T03:04:05.678901Z"' in older.json
    # A vendor's integer score is the number 1.0, as the canonical model writes it.
    integral = plain_record(id="s:e", created_at=t, updated_at=t, score=1)
    assert b'"score":1.0,' in integral.json
    assert integral.score == 1.0
    assert isinstance(integral.score, float)
    plain = plain_record(id="s:d", created_at=t, updated_at=t.replace(microsecond=0))
    assert b'"updated_at":"2026-01-02T03:04:05Z"' in plain.json
    assert decode([older])[0].updated_at == t


def test_a_record_holds_its_json_at_its_size() -> None:
    """orjson's answer keeps its 4 KiB write buffer; a cached record must not (it did: ~8.5 KB
    per cached annotation instead of ~1 KB). Measured with tracemalloc over 200 records."""
    tracemalloc.start()
    try:
        records = [
            plain_record(
                id=f"s:{i}",
                subject_id=f"x{i}",
                label="good",
                score=0.5,
                explanation="fine",
                extensions={"phoenix": {"id": str(i)}},
            )
            for i in range(200)
        ]
        held = tracemalloc.get_traced_memory()[0] / len(records)
    finally:
        tracemalloc.stop()
    size = len(records[0].json)
    assert size < 400
    assert held < size + 600, f"{held:.0f} bytes held per record of {size} bytes of JSON"


def test_records_are_read_only_to_the_type_checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are immutable to mypy --strict (it refuses an assignment to a field) and at run
    time (a frozen msgspec Struct), and the garbage collector does not track them."""
    from mypy import api

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("MYPYPATH", str(root / "src"))
    snippet = tmp_path / "assigns.py"
    snippet.write_text(
        "from annotation_gateway.records import Record\n\n\n"
        "def spoil(record: Record) -> None:\n"
        "    record.score = 0.0\n"
    )
    config = str(root / "pyproject.toml")
    out, _, status = api.run(["--config-file", config, "--no-error-summary", str(snippet)])
    assert status == 1
    assert 'Property "score" defined in "Record" is read-only' in out
    record = plain_record(score=0.5)
    with pytest.raises(AttributeError):
        record.score = 0.0  # type: ignore[misc]
    assert record.score == 0.5
    assert not gc.is_tracked(record)


def test_records_of_one_subject_share_its_strings() -> None:
    """Vendors give every row its own copy of the subject id (Phoenix) and of names; a record
    keeps the one interned copy, so 50 annotations of a session hold its id once."""
    subject = "".join(["session-", "42"])  # built at run time: not a constant the compiler shares
    again = "".join(["session-", "42"])
    assert subject is not again
    one, two = plain_record(id="s:1", subject_id=subject), plain_record(id="s:2", subject_id=again)
    assert one.subject_id is two.subject_id
    assert one.name is two.name


@pytest.mark.parametrize("score", [1e16, -1e16, 1.5e300, 9999999999999998.0, 1e15, 1e-7, -0.0, 3])
def test_large_scores_are_written_as_the_canonical_model_writes_them(score: float) -> None:
    """msgspec writes a float from 1e16 up as ``1e16``; pydantic (and orjson) write ``1e+16``.
    A record writes what the model does, and still reads its score as the number."""
    t = datetime(2026, 1, 2, tzinfo=UTC)
    record = plain_record(score=score)
    annotation = record.annotation()
    assert record.json == _JSON(annotation)
    assert record.score == score
    assert isinstance(record.score, float)
    assert json_items([record, record]) == record.json + b"," + record.json
    assert plain_record(score=score, created_at=t, updated_at=t) == record


def test_pages_are_written_in_one_call_as_each_record_is() -> None:
    records = [
        plain_record(id=f"s:{i}", subject_id=f"x{i % 3}", score=i / 7, metadata={"n": i % 2})
        for i in range(9)
    ]
    assert json_items(records) == b",".join(r.json for r in records)
    assert json_items(records[:0]) == b""
    assert json_lines(records) == b"".join(r.json + b"\n" for r in records)
    assert json_lines([]) == b""
    assert orjson.loads(b"[" + json_items(records) + b"]") == [r.as_dict() for r in records]


def test_consecutive_records_share_their_subject_annotator_queue_and_short_metadata() -> None:
    """What records of one subject have in common is held once: their subject, annotator and
    queue objects (while consecutive) and short metadata (from a bounded table); a record's own
    values are its own."""
    one = plain_record(id="s:1", subject_id="x", annotator_id="u", queue_id="q", metadata={"run": 7})
    two = plain_record(id="s:2", subject_id="x", annotator_id="u", queue_id="q", metadata={"run": 7})
    assert one.subject is two.subject
    assert one.annotator is two.annotator
    assert one.queue is two.queue
    assert one.metadata is two.metadata
    other = plain_record(id="s:3", subject_id="y", annotator_id="v", queue_id="r", metadata={"run": 8})
    assert other.subject is not one.subject
    assert other.subject_id == "y"
    assert other.annotator_id == "v"
    assert other.queue_id == "r"
    assert other.metadata is not one.metadata
    long = {"text": "x" * 100}
    assert plain_record(metadata=long).metadata is not plain_record(metadata=long).metadata
    assert b'"metadata":{"run":8}' in other.json
    assert b'"queue":{"id":"r","name":null}' in other.json


def test_a_builder_makes_what_the_model_makes_and_holds_its_constants_once() -> None:
    """A provider's page builder: the same document as a record built one at a time, its source and
    provider one interned string, equal times one object, and times in another zone (or naive)
    written in UTC."""

    def fresh(*parts: str) -> str:  # an equal string that is not the same object
        return "".join(parts)

    t = datetime(2026, 1, 2, tzinfo=UTC)
    builder = RecordBuilder(fresh("px", "-1"), fresh("phoe", "nix"))
    assert builder.id_prefix == "px-1:"

    def build(id: str, created_at: datetime, updated_at: datetime) -> Record:
        return builder.record(
            id, "session", fresh("s", "1"), fresh("pro", "j"), fresh("n", "ame"), "yes", 0.5, "why",
            "HUMAN", fresh("u", "1"), "", {"k": 1}, "q", fresh("que", "ue"), created_at, updated_at,
            {"phoenix": {"id": id}}, None,
        )  # fmt: skip

    one = build("px-1:a", t, t + timedelta(seconds=1))
    two = build("px-1:b", t, datetime(2026, 1, 2, tzinfo=UTC))
    assert one.source is two.source is sys.intern("px-1")
    assert one.provider is two.provider is sys.intern("phoenix")
    assert one.subject is two.subject
    assert one.annotator is two.annotator
    assert one.queue is two.queue
    assert two.updated_at is two.created_at
    again = make_record(
        id="px-1:a", source="px-1", provider="phoenix", subject_kind="session", subject_id="s1",
        project="proj", name="name", label="yes", score=0.5, explanation="why", annotator_kind="HUMAN",
        annotator_id="u1", identifier="", metadata={"k": 1}, queue_id="q", queue_name="queue",
        created_at=t, updated_at=t + timedelta(seconds=1), extensions={"phoenix": {"id": "px-1:a"}},
    )  # fmt: skip
    assert one.json == again.json == _JSON(one.annotation())
    plus_one = timezone(timedelta(hours=1))
    zoned = build("px-1:c", datetime(2026, 1, 2, 1, tzinfo=plus_one), datetime(2026, 1, 2))
    assert zoned.created_at == zoned.updated_at == t
    assert zoned.created_at.tzinfo is UTC
    assert zoned.updated_at.tzinfo is UTC
    assert b'"created_at":"2026-01-02T00:00:00Z","updated_at":"2026-01-02T00:00:00Z"' in zoned.json


def test_equal_scores_are_held_once_and_zeros_keep_their_sign() -> None:
    """Scores repeat; a record holds the one float object of its value (a bounded table), but
    never trades -0.0 for 0.0 (equal as numbers, written differently)."""
    half = float("0.5")
    again = float("".join(["0.", "5"]))  # a float made at run time, not the compiler's constant
    assert half is not again
    one, two = plain_record(id="s:1", score=half), plain_record(id="s:2", score=again)
    assert one.score_field is two.score_field
    assert b'"score":0.5' in two.json
    positive, negative = plain_record(score=0.0), plain_record(score=-0.0)
    assert b'"score":0.0' in positive.json
    assert b'"score":-0.0' in negative.json
    assert negative.json == _JSON(negative.annotation())
    big = plain_record(score=1e16)  # held as orjson's JSON, not shared
    assert b'"score":1e+16' in big.json


# --- same_documents: what comparing the JSON would say, without writing it -------------------


def documents(items: list[Record]) -> list[bytes]:
    return [r.json for r in items]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_same_documents_says_what_their_json_says(data: st.DataObject) -> None:
    items = data.draw(st.lists(records(), min_size=1, max_size=6))
    copies = list(decode_value(encode_value(items, 1.0))[1])  # other objects, the same documents
    assert all(c is not r for c, r in zip(copies, items, strict=True))
    assert same_documents(items, copies)
    changed = list(copies)
    changed[data.draw(st.integers(0, len(changed) - 1))] = data.draw(records())
    assert same_documents(items, changed) == (documents(items) == documents(changed))
    assert not same_documents(items, copies[:-1])
    assert not same_documents(items, copies[::-1]) or documents(items) == documents(copies[::-1])


def test_same_documents_tells_a_minus_zero_score_from_zero() -> None:
    zero = make_record(
        id="dd:1", source="dd", provider="datadog", subject_kind="session", subject_id="s", project=None,
        name="quality", label=None, score=0.0, explanation=None, annotator_kind="HUMAN", annotator_id="u",
        identifier="", metadata={}, queue_id=None, queue_name=None, extensions={},
        created_at=datetime(2026, 1, 1, tzinfo=UTC), updated_at=datetime(2026, 1, 2, tzinfo=UTC),
    )  # fmt: skip
    minus = msgspec.structs.replace(zero, score_field=-0.0)
    assert zero.json != minus.json  # 0.0 == -0.0, but their documents differ
    assert not same_documents([zero], [minus])
    assert same_documents([zero], [msgspec.structs.replace(zero)])
