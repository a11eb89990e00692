"""The change feed's token state (federation/changes.py, cursor.py) without a server: which
versions count as delivered, what a full token weighs, and tokens of the previous layout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from annotation_gateway.federation import cursor as cursor_module
from annotation_gateway.federation import limits
from annotation_gateway.federation.changes import FeedState, Seen
from annotation_gateway.federation.cursor import CursorCodec
from annotation_gateway.records import Record, record_of
from tests.fakes import make_annotation

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def version(label: str, *, subject: str = "s1", native: str = "a1", at: datetime = NOW) -> Record:
    annotation = make_annotation("px", subject, name="verdict", label=label, updated_at=at, native_id=native)
    return record_of(annotation)


def test_a_value_that_comes_back_within_one_second_is_delivered_again() -> None:
    # Phoenix's updated_at has whole seconds: good, meh, good again in one second are three
    # versions, the third the same JSON as the first. Only the last delivered one is "seen".
    good, meh = version("good"), version("meh")
    assert good.json != meh.json
    assert good.updated_us == meh.updated_us
    state = FeedState().advance([good], ["px"])
    assert state.delivered(good)
    assert not state.delivered(meh)
    state = state.advance([meh], ["px"])
    assert state.delivered(meh)
    assert not state.delivered(version("good"))  # the value came back: a change, delivered


def test_each_annotation_keeps_its_own_last_version() -> None:
    a, b = version("good", native="a1"), version("bad", native="b1", subject="s2")
    state = FeedState().advance([a, b], ["px"])
    assert state.delivered(a)
    assert state.delivered(b)
    state = state.advance([version("meh", native="a1")], ["px"])
    assert state.delivered(b)  # another annotation's update leaves b's version known
    assert not state.delivered(a)


def test_the_state_survives_packing() -> None:
    records = [version(f"l{i}", native=f"a{i}", at=NOW + timedelta(seconds=i)) for i in range(5)]
    state = FeedState().advance(records, ["px"])
    again = FeedState.unpack(state.pack())
    assert all(again.delivered(r) for r in records)
    assert not again.delivered(version("other", native="a4", at=NOW + timedelta(seconds=4)))
    seen = again.per_source["px"]
    assert isinstance(seen, Seen)
    assert seen.watermark_us == records[-1].updated_us


def test_a_full_token_fits_the_since_limit() -> None:
    many = [
        version(f"l{i}", native=f"a{i}", at=NOW + timedelta(milliseconds=i))
        for i in range(limits.CHANGES_MAX_SEEN + 50)
    ]
    state = FeedState().advance(many, ["px"])
    packed = state.pack()
    assert len(packed["px"][1]) == limits.CHANGES_MAX_SEEN * 14
    token = CursorCodec(b"s" * 32).encode_since("b" * 32, packed)
    assert len(token) <= limits.MAX_SINCE_LENGTH


def test_a_token_of_the_previous_layout_keeps_its_watermark_only(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = CursorCodec(b"s" * 32)
    old = FeedState().advance([version("good")], ["px"]).pack()
    monkeypatch.setattr(cursor_module, "_SINCE_VERSION", 3)
    token = codec.encode_since("b" * 32, old)
    monkeypatch.undo()
    state = FeedState.unpack(codec.decode_since(token, "b" * 32))
    assert state.per_source["px"].watermark_us == old["px"][0]
    assert state.per_source["px"].entries == {}  # may deliver the overlap twice, never skip
    assert not state.delivered(version("good"))
