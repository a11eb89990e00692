"""Metrics (SPEC §8) on records built in the test: buckets at hour/day/week/month boundaries in
UTC (ISO weeks from Monday), the window on either time field (``to`` exclusive), groups with
nulls, score-less and label-less groups, the row order, and each group's statistics against
numpy on generated data."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from annotation_gateway.aggregate.buckets import bucket_label, bucket_of
from annotation_gateway.aggregate.metrics import MetricsAggregator, MetricsSpec
from annotation_gateway.errors import RequestValidationError
from annotation_gateway.federation import FederatedQuery
from annotation_gateway.model import AnnotatorKind, ProviderKind, Queue
from annotation_gateway.records import Record, micros, record_of
from tests.fakes import make_annotation

_ids = itertools.count()


def rec(
    when: datetime,
    *,
    name: str = "resolution",
    source: str = "px",
    label: str | None = "good",
    score: float | None = 1.0,
    created: datetime | None = None,
    queue: bool = False,
) -> Record:
    annotation = make_annotation(
        source,
        f"s-{next(_ids) % 7}",
        name=name,
        updated_at=when,
        label=label,
        score=score,
        provider=ProviderKind.DATADOG if queue else ProviderKind.PHOENIX,
        annotator=AnnotatorKind.HUMAN,
    )
    if created is not None:
        annotation = annotation.model_copy(update={"created_at": created})
    if queue:
        annotation = annotation.model_copy(update={"queue": Queue(id="q1", name="support")})
    return record_of(annotation)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("moment", "interval", "start"),
    [
        ("2026-11-30T23:59:59.999999+00:00", "day", "2026-11-30T00:00:00Z"),
        ("2026-12-01T00:00:00+00:00", "day", "2026-12-01T00:00:00Z"),
        ("2026-12-01T00:30:00+01:00", "day", "2026-11-30T00:00:00Z"),  # 23:30 UTC the day before
        ("2026-12-06T23:59:59+00:00", "week", "2026-11-30T00:00:00Z"),  # Sunday → its Monday
        ("2026-12-07T00:00:00+00:00", "week", "2026-12-07T00:00:00Z"),  # Monday starts a week
        ("2027-01-01T00:00:00+00:00", "week", "2026-12-28T00:00:00Z"),  # ISO week 53 of 2026
        ("1969-12-31T12:00:00+00:00", "week", "1969-12-29T00:00:00Z"),  # before the epoch
        ("2026-12-31T23:59:59+00:00", "month", "2026-12-01T00:00:00Z"),
        ("2027-01-01T00:00:00+00:00", "month", "2027-01-01T00:00:00Z"),
        ("2028-02-29T12:00:00+00:00", "month", "2028-02-01T00:00:00Z"),
        ("2026-12-01T10:59:59+00:00", "hour", "2026-12-01T10:00:00Z"),
    ],
)
def test_bucket_boundaries(moment: str, interval: str, start: str) -> None:
    assert bucket_label(bucket_of(micros(at(moment)), interval)) == start  # type: ignore[arg-type]


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_week_buckets_start_on_the_iso_monday(moment: datetime) -> None:
    start = datetime.fromtimestamp(bucket_of(micros(moment), "week") / 1e6, tz=UTC)
    assert start.isoweekday() == 1
    assert start.isocalendar()[:2] == moment.isocalendar()[:2]
    assert start <= moment < start + timedelta(days=7)


def test_rows_order_nulls_and_statistics() -> None:
    day1, day2 = at("2026-12-01T08:00:00+00:00"), at("2026-12-02T08:00:00+00:00")
    records = [
        rec(day2, name="tone", label=None, score=0.5),
        rec(day1, name="tone", label=None, score=None),  # score-less and label-less
        rec(day1, name="resolution", label="good", score=None),
        rec(day1, name="resolution", label="bad", score=None, queue=True, source="dd"),
        rec(day1, name="resolution", label="good", score=1.0, queue=True, source="dd"),
        rec(day1, name="resolution", label="good", score=3.0, queue=True, source="dd"),
    ]
    aggregator = MetricsAggregator(MetricsSpec(group_by=("queue", "name"), interval="day"))
    aggregator.add(records[:3])
    aggregator.add(records[3:])  # chunks
    rows = aggregator.rows()
    assert [(r["bucket"], r["queue"], r["name"]) for r in rows] == [
        ("2026-12-01T00:00:00Z", None, "resolution"),  # null queue first
        ("2026-12-01T00:00:00Z", None, "tone"),
        ("2026-12-01T00:00:00Z", "support", "resolution"),
        ("2026-12-02T00:00:00Z", None, "tone"),
    ]
    no_queue, tone, support, later = rows
    assert no_queue["label_counts"] == {"good": 1}
    assert no_queue["score_count"] == 0
    assert all(no_queue[k] is None for k in ("score_mean", "score_stdev", "score_min", "score_p50"))
    assert tone == {**tone, "count": 1, "score_count": 0, "label_counts": {}, "score_mean": None}
    assert support["count"] == 3
    assert support["label_counts"] == {"bad": 1, "good": 2}
    assert (support["score_count"], support["score_mean"], support["score_min"], support["score_max"]) == (
        2,
        2.0,
        1.0,
        3.0,
    )
    assert support["score_stdev"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert support["score_p90"] == pytest.approx(np.quantile([1.0, 3.0], 0.9))
    assert later["score_stdev"] is None  # one score
    assert list(support) == [
        "bucket", "queue", "name", "count", "score_count", "score_mean", "score_stdev",
        "score_min", "score_max", "score_p50", "score_p90", "label_counts",
    ]  # fmt: skip


def test_without_interval_the_bucket_is_null() -> None:
    aggregator = MetricsAggregator(MetricsSpec())
    aggregator.add([rec(at("2026-12-01T08:00:00+00:00")), rec(at("2027-03-01T08:00:00+00:00"))])
    [row] = aggregator.rows()
    assert row["bucket"] is None
    assert row["count"] == 2


def test_window_on_either_time_field_with_to_exclusive() -> None:
    t0 = at("2026-12-01T00:00:00+00:00")
    records = [
        rec(t0 - timedelta(microseconds=1), created=t0 + timedelta(days=5)),
        rec(t0, created=t0 - timedelta(days=5)),
        rec(t0 + timedelta(hours=1), created=t0),
        rec(t0 + timedelta(days=1), created=t0 + timedelta(days=1)),  # == to: out
    ]
    by_updated = MetricsAggregator(MetricsSpec(start=t0, end=t0 + timedelta(days=1)))
    by_updated.add(records)
    assert by_updated.annotations == 2
    by_created = MetricsAggregator(MetricsSpec(time_field="created_at", start=t0, end=t0 + timedelta(days=1)))
    by_created.add(records)
    assert by_created.annotations == 1  # only the one created exactly at `from`


def test_spec_validation_and_narrowing() -> None:
    with pytest.raises(RequestValidationError, match="at most 4"):
        MetricsSpec(group_by=("name", "source", "provider", "label", "queue"))
    with pytest.raises(RequestValidationError, match="given twice"):
        MetricsSpec(group_by=("name", "name"))
    with pytest.raises(RequestValidationError, match="earlier than to"):
        MetricsSpec(start=at("2026-12-02T00:00:00+00:00"), end=at("2026-12-01T00:00:00+00:00"))
    q = FederatedQuery(scope="all", updated_after=at("2026-11-01T00:00:00+00:00"))
    spec = MetricsSpec(start=at("2026-12-01T00:00:00+00:00"), end=at("2026-12-08T00:00:00+00:00"))
    narrowed = spec.narrow(q)
    assert (narrowed.updated_after, narrowed.updated_before) == (spec.start, spec.end)
    created = MetricsSpec(time_field="created_at", start=spec.start).narrow(q)
    assert created is q  # a window on created_at is the aggregator's to apply


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.one_of(st.none(), st.floats(min_value=-100, max_value=100, allow_nan=False)),
            st.integers(min_value=0, max_value=24 * 40),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_every_groups_statistics_are_numpys(items: list[tuple[str, float | None, int]]) -> None:
    base = at("2026-12-01T00:00:00+00:00")
    records = [rec(base + timedelta(hours=h), name=n, score=s) for n, s, h in items]
    aggregator = MetricsAggregator(MetricsSpec(group_by=("name",), interval="week"))
    aggregator.add(records)
    expected: dict[tuple[str, str], list[float | None]] = {}
    for n, s, h in items:
        week = bucket_label(bucket_of(micros(base + timedelta(hours=h)), "week"))
        expected.setdefault((week, n), []).append(s)
    rows = aggregator.rows()
    assert [(r["bucket"], r["name"]) for r in rows] == sorted(expected)
    for row in rows:
        values = expected[(row["bucket"], row["name"])]
        got = [v for v in values if v is not None]
        assert row["count"] == len(values)
        assert row["score_count"] == len(got)
        if got:
            assert row["score_mean"] == pytest.approx(float(np.mean(got)), abs=1e-9)
            assert row["score_p50"] == pytest.approx(float(np.quantile(got, 0.5)), abs=1e-9)
            assert row["score_p90"] == pytest.approx(float(np.quantile(got, 0.9)), abs=1e-9)
            assert (row["score_min"], row["score_max"]) == (min(got), max(got))
            if len(got) > 1:
                assert row["score_stdev"] == pytest.approx(float(np.std(got, ddof=1)), abs=1e-7)


def test_non_finite_scores_are_counted_as_annotations_but_are_no_score() -> None:
    base = at("2026-12-01T12:00:00+00:00")
    scores = [float("nan"), 2.0, float("inf"), 4.0, float("-inf")]
    records = [replace(rec(base, label=None), score_field=s) for s in scores]
    aggregator = MetricsAggregator(MetricsSpec(interval="day"))
    # In two calls: labels are counted per call, scores kept across them.
    aggregator.add(records[:2])
    aggregator.add(records[2:])
    (row,) = aggregator.rows()
    assert (row["count"], row["score_count"]) == (5, 2)
    assert (row["score_mean"], row["score_min"], row["score_max"]) == (3.0, 2.0, 4.0)
    assert row["score_p50"] == pytest.approx(float(np.quantile([2.0, 4.0], 0.5)))
    assert row["label_counts"] == {}


def test_labels_are_counted_across_calls_and_nulls_left_out() -> None:
    base = at("2026-12-01T12:00:00+00:00")
    aggregator = MetricsAggregator(MetricsSpec())
    aggregator.add([rec(base, label="good"), rec(base, label=None), rec(base, label="bad")])
    aggregator.add([rec(base, label="good")])
    (row,) = aggregator.rows()
    assert row["label_counts"] == {"bad": 1, "good": 2}
    assert row["count"] == 4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["hour", "day", "week", "month"]),
    st.booleans(),
)
def test_records_fall_in_the_bucket_their_microseconds_give(
    moments: list[datetime], interval: str, created: bool
) -> None:
    """The aggregator buckets a record from its datetime (the day's ordinal), not its µs since
    the epoch: the same bucket as ``bucket_of`` gives for those µs, before 1970 too."""
    records = [rec(t, created=t) if created else rec(t) for t in moments]
    spec = MetricsSpec(interval=interval, time_field="created_at" if created else "updated_at")  # type: ignore[arg-type]
    aggregator = MetricsAggregator(spec)
    aggregator.add(records)
    expected: dict[str, int] = {}
    for t in moments:
        label = bucket_label(bucket_of(micros(t), interval))  # type: ignore[arg-type]
        expected[label] = expected.get(label, 0) + 1
    assert {row["bucket"]: row["count"] for row in aggregator.rows()} == expected
