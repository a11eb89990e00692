"""The merged order and the one-record-per-id rule of ``federation/merge.py`` against the obvious
computation: the last record given for each id, sorted by ``records.sort_key``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.federation.merge import Outcome, merge
from annotation_gateway.records import Record, sort_key
from tests.fakes import make_record

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def record(source: str, native: int, second: int, score: float) -> Record:
    when = BASE + timedelta(seconds=second)
    return make_record(
        id=f"{source}:{native:03d}", source=source, provider="phoenix", subject_kind="session",
        subject_id=f"s{native % 4}", project=None, name="n", label=None, score=score,
        explanation=None, annotator_kind="HUMAN", annotator_id=None, identifier="", metadata={},
        queue_id=None, queue_name=None, created_at=when, updated_at=when, extensions={},
    )  # fmt: skip


# Few ids and few times: duplicate ids (within and across outcomes) and equal times are common.
_records = st.builds(
    record,
    st.sampled_from(["a", "b"]),
    st.integers(0, 30),
    st.integers(0, 5),
    st.floats(0, 1, allow_nan=False),
)


def outcome(records: list[Record] | None) -> Outcome:
    return Outcome(SourceStatus("x", "phoenix", "ok"), records=records)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.none() | st.lists(_records, max_size=40), max_size=4))
def test_merge_keeps_the_last_record_of_each_id_in_sort_key_order(answers: list[list[Record] | None]) -> None:
    last: dict[str, Record] = {}
    for records in answers:
        for item in records or ():
            last[item.id] = item
    expected = sorted(last.values(), key=sort_key)
    merged = merge([outcome(records) for records in answers], expires_at=0.0)
    assert [r.id for r in merged.records] == [r.id for r in expected]
    assert all(got is want for got, want in zip(merged.records, expected, strict=True))
