"""Tests for :mod:`annotation_gateway.compare`.

Every expected row and statistic below is worked out by hand from the hand-built data set (the
arithmetic is in the comments); the code under test is never used to compute an expectation.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from annotation_gateway.compare import (
    CompareRequest,
    CompareResult,
    RowStatus,
    cohen_kappa,
    compare,
    group_label,
    group_score,
)
from annotation_gateway.errors import PayloadTooLargeError
from annotation_gateway.model import Annotation, Annotator, AnnotatorKind, ProviderKind, Subject, SubjectKind

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
_ids = itertools.count()


def ann(
    source: str,
    subject: str,
    name: str,
    label: str | None = None,
    score: float | None = None,
    *,
    minute: int = 0,
    annotator: str = "alice",
    explanation: str | None = None,
) -> Annotation:
    return Annotation(
        id=f"{source}:{next(_ids)}",
        source=source,
        provider=ProviderKind.PHOENIX if source == "L" else ProviderKind.DATADOG,
        subject=Subject(kind=SubjectKind.SESSION, id=subject),
        name=name,
        label=label,
        score=score,
        explanation=explanation,
        annotator=Annotator(kind=AnnotatorKind.HUMAN, id=annotator),
        created_at=T0,
        updated_at=T0 + timedelta(minutes=minute),
    )


# ------------------------------------------------------------------------------ the hand-built set
# Left "L" calls it `quality`, right "R" calls it `answer_quality`; `toxicity` has the same name on
# both sides. The right knows subject s4 as r4. Score tolerance 0.05.

LEFT = [
    ann("L", "s1", "quality", "good", 0.9),
    ann("L", "s1", "toxicity", "clean", 0.0),
    # s2 quality: three reviewers -> majority "bad" (2 of 3); mean score (0.8+0.3+0.2)/3 = 1.3/3
    ann("L", "s2", "quality", "good", 0.8, minute=1, annotator="alice"),
    ann("L", "s2", "quality", "bad", 0.3, minute=5, annotator="bob"),
    ann("L", "s2", "quality", "bad", 0.2, minute=3, annotator="carol"),
    ann("L", "s2", "toxicity", "clean"),
    ann("L", "s3", "quality", "good", 0.7),
    ann("L", "s3", "toxicity", None, 0.2),
    ann("L", "s4", "quality", "good"),
    ann("L", "s5", "quality", "good", 1.0),
    # s5 toxicity: a 1-1 tie, broken by the newest member -> "toxic"
    ann("L", "s5", "toxicity", "clean", minute=10),
    ann("L", "s5", "toxicity", "toxic", minute=20),
    # s6 toxicity: a 1-1 tie at the same time, broken lexicographically -> "clean"
    ann("L", "s6", "toxicity", "toxic", minute=7),
    ann("L", "s6", "toxicity", "clean", minute=7),
    # not requested
    ann("L", "s99", "quality", "good"),
]
RIGHT = [
    ann("R", "s1", "answer_quality", "good", 0.92),  # |0.92-0.9| = 0.02 <= 0.05 -> agree
    ann("R", "s1", "quality", "meh"),  # the right's own `quality`: not the left's -> only_right
    ann("R", "s1", "toxicity", "clean", 0.0),
    ann("R", "s2", "answer_quality", "bad", 0.25),  # labels equal, |0.25-0.4333| > 0.05
    ann("R", "s2", "toxicity", None, 0.1),  # label on the left only -> label_differs
    ann("R", "s3", "answer_quality", "bad", 0.4),  # good vs bad -> label_differs
    ann("R", "s3", "toxicity", explanation="no verdict"),  # score on the left only -> score_differs
    ann("R", "r4", "answer_quality", "good"),  # s4 via subject_map -> agree (no scores)
    ann("R", "s4", "answer_quality", "good"),  # "s4" on the right is not requested (s4 -> r4)
    ann("R", "s5", "toxicity", "toxic"),
    ann("R", "s6", "answer_quality", "good", 0.5),  # only_right
    ann("R", "s6", "toxicity", "clean"),
]
REQUEST = CompareRequest(
    subject_ids=["s1", "s2", "s3", "s4", "s5", "s6"],
    left="L",
    right="R",
    name_map={"quality": "answer_quality"},
    subject_map={"s4": "r4"},
    score_tolerance=0.05,
)

# (subject, right subject, name, right name, status, left label, right label, left score, right score)
EXPECTED_ROWS = [
    ("s1", "s1", "quality", "answer_quality", "agree", "good", "good", 0.9, 0.92),
    ("s1", "s1", "quality", "quality", "only_right", None, "meh", None, None),
    ("s1", "s1", "toxicity", "toxicity", "agree", "clean", "clean", 0.0, 0.0),
    ("s2", "s2", "quality", "answer_quality", "score_differs", "bad", "bad", 1.3 / 3, 0.25),
    ("s2", "s2", "toxicity", "toxicity", "label_differs", "clean", None, None, 0.1),
    ("s3", "s3", "quality", "answer_quality", "label_differs", "good", "bad", 0.7, 0.4),
    ("s3", "s3", "toxicity", "toxicity", "score_differs", None, None, 0.2, None),
    ("s4", "r4", "quality", "answer_quality", "agree", "good", "good", None, None),
    ("s5", "s5", "quality", "answer_quality", "only_left", "good", None, 1.0, None),
    ("s5", "s5", "toxicity", "toxicity", "agree", "toxic", "toxic", None, None),
    ("s6", "s6", "quality", "answer_quality", "only_right", None, "good", None, 0.5),
    ("s6", "s6", "toxicity", "toxicity", "agree", "clean", "clean", None, None),
]


@pytest.fixture(scope="module")
def result() -> CompareResult:
    return compare(LEFT, RIGHT, REQUEST)


def test_rows_statuses_and_group_values(result: CompareResult) -> None:
    got = [
        (
            r.subject_id,
            r.right_subject_id,
            r.name,
            r.right_name,
            r.status.value,
            r.left.label if r.left else None,
            r.right.label if r.right else None,
            r.left.score if r.left else None,
            r.right.score if r.right else None,
        )
        for r in result.rows
    ]
    assert len(got) == len(EXPECTED_ROWS)
    for row, expected in zip(got, EXPECTED_ROWS, strict=True):
        assert row[:7] == expected[:7]
        for value, want in zip(row[7:], expected[7:], strict=True):
            if want is None:
                assert value is None, (row, expected)
            else:
                assert value == pytest.approx(want), (row, expected)


def test_score_diff_is_right_minus_left(result: CompareResult) -> None:
    diffs = {(r.subject_id, r.name, r.right_name): r.score_diff for r in result.rows}
    assert diffs[("s1", "quality", "answer_quality")] == pytest.approx(0.02)
    assert diffs[("s2", "quality", "answer_quality")] == pytest.approx(0.25 - 1.3 / 3)
    assert diffs[("s3", "quality", "answer_quality")] == pytest.approx(-0.3)
    assert diffs[("s1", "toxicity", "toxicity")] == 0.0
    assert diffs[("s3", "toxicity", "toxicity")] is None  # score on one side only
    assert diffs[("s5", "quality", "answer_quality")] is None  # only_left


def test_group_keeps_every_member_newest_first(result: CompareResult) -> None:
    row = next(r for r in result.rows if (r.subject_id, r.name) == ("s2", "quality"))
    assert row.left is not None
    assert row.right is not None
    assert row.left.count == 3
    assert [m.annotator.id for m in row.left.members] == ["bob", "carol", "alice"]  # minutes 5, 3, 1
    assert row.left.label_votes == {"bad": 2, "good": 1}
    assert row.right.count == 1
    assert row.right.name == "answer_quality"
    assert all(isinstance(m, Annotation) for m in row.left.members)
    # the sides keep their own vocabulary
    s4 = next(r for r in result.rows if r.subject_id == "s4")
    assert s4.right is not None
    assert s4.right.subject_id == "r4"


def test_summary_quality(result: CompareResult) -> None:
    s = next(x for x in result.summary if (x.name, x.right_name) == ("quality", "answer_quality"))
    # rows s1 agree, s2 score_differs, s3 label_differs, s4 agree, s5 only_left, s6 only_right
    assert (s.n_rows, s.agree, s.label_differs, s.score_differs, s.only_left, s.only_right) == (
        6,
        2,
        1,
        1,
        1,
        1,
    )
    assert s.n_paired == 4
    assert s.agreement_rate == pytest.approx(2 / 4)
    # labelled pairs (left, right): s1 (good, good), s2 (bad, bad), s3 (good, bad), s4 (good, good)
    # po = 3/4. left: good 3, bad 1; right: good 2, bad 2.
    # pe = (3/4)(2/4) + (1/4)(2/4) = 6/16 + 2/16 = 1/2. kappa = (3/4 - 1/2) / (1 - 1/2) = 0.5
    assert s.n_labelled == 4
    assert s.cohen_kappa == pytest.approx(0.5)
    # scored pairs: s1 |0.92-0.9| = 0.02, s2 |0.25-1.3/3| = 0.18333.., s3 |0.4-0.7| = 0.3
    assert s.n_scored == 3
    assert s.mean_abs_score_diff == pytest.approx((0.02 + (1.3 / 3 - 0.25) + 0.3) / 3)
    assert s.disagreeing_subjects == ["s2", "s3"]
    assert s.one_sided_subjects == ["s5", "s6"]


def test_summary_toxicity_and_unpaired_name(result: CompareResult) -> None:
    t = next(x for x in result.summary if x.name == "toxicity")
    # s1 agree, s2 label_differs, s3 score_differs, s5 agree, s6 agree
    assert (t.n_rows, t.agree, t.label_differs, t.score_differs, t.only_left, t.only_right) == (
        5,
        3,
        1,
        1,
        0,
        0,
    )
    assert t.agreement_rate == pytest.approx(3 / 5)
    # labelled pairs: s1 (clean, clean), s5 (toxic, toxic), s6 (clean, clean): po = 1,
    # pe = (2/3)^2 + (1/3)^2 = 5/9 < 1, kappa = (1 - 5/9) / (1 - 5/9) = 1
    assert t.n_labelled == 3
    assert t.cohen_kappa == pytest.approx(1.0)
    assert (t.n_scored, t.mean_abs_score_diff) == (1, 0.0)  # only s1 has a score on both sides
    assert t.disagreeing_subjects == ["s2", "s3"]
    assert t.one_sided_subjects == []

    q = next(x for x in result.summary if (x.name, x.right_name) == ("quality", "quality"))
    assert (q.n_rows, q.only_right, q.n_paired) == (1, 1, 0)
    assert q.agreement_rate is None
    assert q.cohen_kappa is None
    assert q.mean_abs_score_diff is None
    assert q.one_sided_subjects == ["s1"]

    assert [(x.name, x.right_name) for x in result.summary] == [
        ("quality", "answer_quality"),
        ("quality", "quality"),
        ("toxicity", "toxicity"),
    ]


def test_overall_and_ignored(result: CompareResult) -> None:
    o = result.overall
    # agree: s1/quality, s1/toxicity, s4/quality, s5/toxicity, s6/toxicity
    assert (o.n_rows, o.agree, o.label_differs, o.score_differs, o.only_left, o.only_right) == (
        12,
        5,
        2,
        2,
        1,
        2,
    )
    assert o.n_paired == 9
    assert o.agreement_rate == pytest.approx(5 / 9)
    assert o.n_scored == 4
    assert o.mean_abs_score_diff == pytest.approx((0.02 + (1.3 / 3 - 0.25) + 0.3 + 0.0) / 4)
    assert o.n_subjects == 6
    assert o.n_subjects_with_differences == 5  # every subject but s4
    assert result.ignored.model_dump() == {
        "left_subject_not_requested": 1,  # s99
        "left_name_not_requested": 0,
        "right_subject_not_requested": 1,  # the right's "s4" (s4 maps to r4)
        "right_name_not_requested": 0,
        "left_copied_from_right": 0,
        "right_copied_from_left": 0,
    }


def test_names_filter() -> None:
    request = REQUEST.model_copy(update={"names": ["quality"]})
    result = compare(LEFT, RIGHT, request)
    assert {(r.name, r.right_name) for r in result.rows} == {("quality", "answer_quality")}
    assert len(result.rows) == 6
    # left toxicity: s1, s2, s3, s5 x2, s6 x2 = 7; right: 5 toxicity + the right's own `quality`
    assert result.ignored.left_name_not_requested == 7
    assert result.ignored.right_name_not_requested == 6
    assert result.ignored.left_subject_not_requested == 1
    assert result.ignored.right_subject_not_requested == 1
    assert request.right_names() == ["answer_quality"]
    assert REQUEST.right_subject_ids() == ["s1", "s2", "s3", "r4", "s5", "s6"]


@pytest.mark.parametrize(
    ("tolerance", "status"),
    [
        (0.0, RowStatus.SCORE_DIFFERS),
        (0.125, RowStatus.SCORE_DIFFERS),
        (0.25, RowStatus.AGREE),  # |0.75 - 0.5| = 0.25 exactly (binary-exact): not > tolerance
        (1.0, RowStatus.AGREE),
    ],
)
def test_score_tolerance(tolerance: float, status: RowStatus) -> None:
    left = [ann("L", "a", "n", "x", 0.5)]
    right = [ann("R", "a", "n", "x", 0.75)]
    request = CompareRequest(subject_ids=["a"], left="L", right="R", score_tolerance=tolerance)
    assert compare(left, right, request).rows[0].status is status


def test_identical_scores_agree_at_zero_tolerance() -> None:
    request = CompareRequest(subject_ids=["a"], left="L", right="R", score_tolerance=0)
    result = compare([ann("L", "a", "n", None, 0.3)], [ann("R", "a", "n", None, 0.3)], request)
    assert result.rows[0].status is RowStatus.AGREE


def test_group_rule_directly() -> None:
    assert group_label([]) is None
    assert group_label([ann("L", "a", "n", None, 1.0)]) is None
    assert group_label([ann("L", "a", "n", "b"), ann("L", "a", "n", "a"), ann("L", "a", "n", "b")]) == "b"
    assert group_label([ann("L", "a", "n", "b", minute=2), ann("L", "a", "n", "a", minute=1)]) == "b"
    assert group_label([ann("L", "a", "n", "b", minute=1), ann("L", "a", "n", "a", minute=1)]) == "a"
    # (1.0 + 0.0 + 0.5) / 3 = 0.5; NaN and inf are treated as absent, as is None
    members = [
        ann("L", "a", "n", score=1.0),
        ann("L", "a", "n", score=0.0),
        ann("L", "a", "n", score=0.5),
        ann("L", "a", "n", score=math.nan),
        ann("L", "a", "n", score=math.inf),
        ann("L", "a", "n", "x"),
    ]
    assert group_score(members) == 0.5
    assert group_score([ann("L", "a", "n", "x")]) is None


# ---------------------------------------------------------------------------------- Cohen's kappa


def test_cohen_kappa_hand_worked_2x2() -> None:
    # 50 items, two raters, yes/no:          right yes  right no
    #                              left yes      20         5     (left yes = 25)
    #                              left no       10        15     (left no  = 25)
    #                                    (right yes = 30, right no = 20)
    # po = (20 + 15) / 50 = 0.7
    # pe = (25/50)(30/50) + (25/50)(20/50) = 0.5*0.6 + 0.5*0.4 = 0.3 + 0.2 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_hand_worked_3_categories() -> None:
    # 10 items: (a,a) x4, (b,b) x2, (c,c) x1, (a,b) x2, (c,a) x1
    # po = 7/10. left: a 6, b 2, c 2; right: a 5, b 4, c 1
    # pe = (6*5 + 2*4 + 2*1) / 100 = 40/100 = 0.4; kappa = (0.7 - 0.4) / 0.6 = 0.5
    pairs = [("a", "a")] * 4 + [("b", "b")] * 2 + [("c", "c")] + [("a", "b")] * 2 + [("c", "a")]
    assert cohen_kappa(pairs) == pytest.approx(0.5)


def test_cohen_kappa_degenerate_and_extremes() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "a")]) is None  # fewer than 2 items
    assert cohen_kappa([("a", "b")]) is None
    # both raters always say "a": pe = 1, kappa is 0/0
    assert cohen_kappa([("a", "a")] * 5) is None
    # constant but different raters: po = 0, pe = 0 -> 0
    assert cohen_kappa([("a", "b")] * 3) == 0.0
    # perfect swap: po = 0, pe = 0.5*0.5 + 0.5*0.5 = 0.5 -> (0 - 0.5) / 0.5 = -1
    assert cohen_kappa([("a", "b"), ("b", "a")]) == -1.0
    assert cohen_kappa([("a", "a"), ("b", "b")]) == 1.0


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "bad",
    [
        {"subject_ids": []},
        {"subject_ids": ["a", ""]},
        {"left": ""},
        {"names": []},
        {"score_tolerance": -0.1},
        {"score_tolerance": math.nan},
        {"score_tolerance": math.inf},
        {"name_map": {"a": "x", "b": "x"}},  # not one-to-one
        {"subject_map": {"s1": "s2"}},  # s2 is requested too: right s2 would belong to s1 and s2
        {"names": ["quality", "answer_quality"], "name_map": {"quality": "answer_quality"}},
        {"unknown": 1},
    ],
)
def test_request_validation(bad: dict[str, object]) -> None:
    base: dict[str, object] = {"subject_ids": ["s1", "s2"], "left": "L", "right": "R"}
    with pytest.raises(ValidationError):
        CompareRequest.model_validate(base | bad)


def test_more_subject_ids_than_the_limit_is_payload_too_large() -> None:
    """Over the limit is 413 (the API's answer for every id limit), not a 422 validation error."""
    base: dict[str, object] = {"left": "L", "right": "R"}
    with pytest.raises(PayloadTooLargeError, match=r"10001 distinct subject ids.*limit is 10000"):
        CompareRequest.model_validate(base | {"subject_ids": [f"s{i}" for i in range(10_001)]})
    # Duplicates do not count: 10,001 ids of which 10,000 distinct are accepted.
    ids = [f"s{i}" for i in range(10_000)] + ["s0"]
    assert len(CompareRequest.model_validate(base | {"subject_ids": ids}).subject_ids) == 10_000


def test_request_dedupes_and_accepts_the_maximum() -> None:
    request = CompareRequest(subject_ids=["b", "a", "b"], left="L", right="R", names=["n", "n"])
    assert request.subject_ids == ["b", "a"]
    assert request.names == ["n"]
    assert (
        len(CompareRequest(subject_ids=[str(i) for i in range(10_000)], left="L", right="R").subject_ids)
        == 10_000
    )


def test_wrong_source_is_a_caller_error() -> None:
    request = CompareRequest(subject_ids=["a"], left="L", right="R")
    with pytest.raises(ValueError, match="left annotation"):
        compare([ann("R", "a", "n", "x")], [], request)
    with pytest.raises(ValueError, match="right annotation"):
        compare([], [ann("L", "a", "n", "x")], request)


def test_nothing_to_compare() -> None:
    result = compare([], [], CompareRequest(subject_ids=["a"], left="L", right="R"))
    assert result.rows == []
    assert result.summary == []
    assert result.overall.n_rows == 0
    assert result.overall.agreement_rate is None


# -------------------------------------------------------------------------------------- properties

_SUBJECTS = ["a", "b", "c"]
_NAMES = ["x", "y"]


def _annotations(source: str) -> st.SearchStrategy[list[Annotation]]:
    one = st.builds(
        lambda subject, name, label, score, minute: ann(source, subject, name, label, score, minute=minute),
        st.sampled_from(_SUBJECTS),
        st.sampled_from(_NAMES),
        st.sampled_from([None, "p", "q", "r"]),
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        st.integers(0, 3),
    )
    return st.lists(one, max_size=12)


@settings(max_examples=150, deadline=None)
@given(_annotations("S"), st.floats(0, 1))
def test_compare_with_itself_agrees(annotations: list[Annotation], tolerance: float) -> None:
    request = CompareRequest(subject_ids=_SUBJECTS, left="S", right="S", score_tolerance=tolerance)
    result = compare(annotations, annotations, request)
    assert {(r.subject_id, r.name) for r in result.rows} == {(a.subject.id, a.name) for a in annotations}
    assert all(r.status is RowStatus.AGREE for r in result.rows)
    assert all(s.cohen_kappa in (1.0, None) for s in result.summary)
    assert all(s.mean_abs_score_diff in (0.0, None) for s in result.summary)


@settings(max_examples=150, deadline=None)
@given(_annotations("L"), _annotations("R"), st.floats(0, 1))
def test_swapping_sides_swaps_only_left_and_only_right(
    left: list[Annotation], right: list[Annotation], tolerance: float
) -> None:
    forward = compare(
        left, right, CompareRequest(subject_ids=_SUBJECTS, left="L", right="R", score_tolerance=tolerance)
    )
    backward = compare(
        right, left, CompareRequest(subject_ids=_SUBJECTS, left="R", right="L", score_tolerance=tolerance)
    )
    swap = {RowStatus.ONLY_LEFT: RowStatus.ONLY_RIGHT, RowStatus.ONLY_RIGHT: RowStatus.ONLY_LEFT}
    back = {(r.subject_id, r.name): r for r in backward.rows}
    assert len(back) == len(forward.rows)
    for row in forward.rows:
        other = back[(row.subject_id, row.name)]
        assert other.status is swap.get(row.status, row.status)
        assert (other.left, other.right) == (row.right, row.left)
        if row.score_diff is not None:
            assert other.score_diff == -row.score_diff
    for f, b in zip(forward.summary, backward.summary, strict=True):
        assert (f.agreement_rate, f.n_labelled, f.n_scored) == (b.agreement_rate, b.n_labelled, b.n_scored)
        if f.cohen_kappa is None:
            assert b.cohen_kappa is None
        else:
            assert b.cohen_kappa == pytest.approx(f.cohen_kappa)

    # Row counts from plain set arithmetic on the (subject, name) keys of each side.
    left_keys = {(a.subject.id, a.name) for a in left}
    right_keys = {(a.subject.id, a.name) for a in right}
    o = forward.overall
    assert o.n_rows == len(left_keys | right_keys)
    assert o.only_left == len(left_keys - right_keys)
    assert o.only_right == len(right_keys - left_keys)
    assert o.n_paired == len(left_keys & right_keys)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), max_size=30))
def test_kappa_is_symmetric_and_bounded(pairs: list[tuple[str, str]]) -> None:
    kappa = cohen_kappa(pairs)
    mirrored = cohen_kappa([(b, a) for a, b in pairs])
    if kappa is None:
        assert mirrored is None
    else:
        assert mirrored == pytest.approx(kappa)
        assert -1.0 - 1e-12 <= kappa <= 1.0 + 1e-12


# ------------------------------------------------------------------------- migrated copies (issue 15)
# After a migration one side holds copies of the other's annotations. A copy is not an independent
# judgement: compare leaves out a side's copies *of the other side* unless include_copies is set.


def _copy(original: Annotation, *, side: str, via: str) -> Annotation:
    """``original`` copied into ``side``, its provenance written as migrate writes it.

    ``via="metadata"``: Phoenix's ``metadata.migrated_from``; ``via="reasoning"``: the Datadog
    reasoning line ``migrated_from: {json}`` (the explanation, or a text label's reasoning).
    """
    copy = ann(side, original.subject.id, original.name, original.label, original.score, minute=30)
    line = f'migrated_from: {{"id":"{original.id}","source":"{original.source}"}}'
    if via == "metadata":
        update: dict[str, object] = {
            "metadata": {"migrated_from": {"source": original.source, "id": original.id}}
        }
    elif via == "reasoning":
        update = {"explanation": f"{original.explanation}\n\n{line}" if original.explanation else line}
    else:  # a Datadog text label: the value is the explanation, the line is in the reasoning
        update = {
            "explanation": original.explanation,
            "extensions": {"datadog": {"label_type": "text", "reasoning": line}},
        }
    return copy.model_copy(update=update)


def _copies_data() -> tuple[list[Annotation], list[Annotation]]:
    r1 = ann("R", "s1", "resolution", "escalated", minute=1)
    l3 = ann("L", "s3", "resolution", "resolved", explanation="customer confirmed")
    l4 = ann("L", "s4", "notes", explanation="asked twice")
    x5 = ann("X", "s5", "resolution", "resolved")  # a third source's annotation
    left = [
        # s1: the case. Left's own human label, plus (newer) the copy of the right's.
        ann("L", "s1", "resolution", "resolved", minute=0),
        _copy(r1, side="L", via="metadata"),
        l3,
        l4,
        # s5: a copy from a third source is an ordinary left annotation.
        _copy(x5, side="L", via="metadata"),
        # s99: not requested; out of scope comes before "copy".
        _copy(ann("R", "s99", "resolution", "resolved"), side="L", via="metadata"),
    ]
    right = [
        r1,
        _copy(l3, side="R", via="reasoning"),  # categorical: the line ends the explanation
        _copy(l4, side="R", via="text"),  # text label: the line is the reasoning
        ann("R", "s5", "resolution", "resolved"),
    ]
    return left, right


def _status_and_counts(result: CompareResult) -> dict[tuple[str, str], tuple[str, int | None, int | None]]:
    return {
        (r.subject_id, r.name): (r.status.value, r.left and r.left.count, r.right and r.right.count)
        for r in result.rows
    }


COPIES_REQUEST = CompareRequest(subject_ids=["s1", "s3", "s4", "s5"], left="L", right="R")


def test_copies_of_the_other_side_are_left_out_and_counted() -> None:
    left, right = _copies_data()
    result = compare(left, right, COPIES_REQUEST)
    assert COPIES_REQUEST.include_copies is False
    got = _status_and_counts(result)
    assert got == {
        # left: only its own "resolved" (the copy of the right's "escalated" is left out)
        ("s1", "resolution"): ("label_differs", 1, 1),
        # the right's only annotations of s3/s4 are copies of the left's: nothing to pair with
        ("s3", "resolution"): ("only_left", 1, None),
        ("s4", "notes"): ("only_left", 1, None),
        # the left's copy from X is compared like any annotation
        ("s5", "resolution"): ("agree", 1, 1),
    }
    assert result.ignored.model_dump() == {
        "left_subject_not_requested": 1,  # s99 (a copy, but out of scope first)
        "left_name_not_requested": 0,
        "right_subject_not_requested": 0,
        "right_name_not_requested": 0,
        "left_copied_from_right": 1,  # s1 (metadata)
        "right_copied_from_left": 2,  # s3 (reasoning line), s4 (text label's reasoning)
    }
    (resolution,) = [s for s in result.summary if s.name == "resolution"]
    # paired: s1 (differs), s5 (agree) -> 1/2
    assert (resolution.agree, resolution.n_paired, resolution.agreement_rate) == (1, 2, 0.5)

    # The same from the other side: the counts swap.
    backward = compare(right, left, CompareRequest(subject_ids=["s1", "s3", "s4", "s5"], left="R", right="L"))
    assert (backward.ignored.left_copied_from_right, backward.ignored.right_copied_from_left) == (2, 1)
    assert backward.ignored.right_subject_not_requested == 1


def test_include_copies_compares_them() -> None:
    left, right = _copies_data()
    result = compare(left, right, COPIES_REQUEST.model_copy(update={"include_copies": True}))
    got = _status_and_counts(result)
    assert got == {
        # 1 resolved vs 1 escalated on the left: the tie goes to the newest, the copy (minute 30)
        ("s1", "resolution"): ("agree", 2, 1),
        ("s3", "resolution"): ("agree", 1, 1),
        ("s4", "notes"): ("agree", 1, 1),
        ("s5", "resolution"): ("agree", 1, 1),
    }
    assert (result.ignored.left_copied_from_right, result.ignored.right_copied_from_left) == (0, 0)
    assert result.ignored.left_subject_not_requested == 1


def test_malformed_or_foreign_provenance_is_not_a_copy() -> None:
    own = ann("R", "s1", "resolution", "resolved")
    left = [
        # no id: not valid provenance, so an original
        ann("L", "s1", "resolution", "resolved").model_copy(
            update={"metadata": {"migrated_from": {"source": "R"}}}
        ),
        # the marker line is not the last line: free text that happens to quote it
        ann(
            "L",
            "s2",
            "resolution",
            "resolved",
            explanation='migrated_from: {"id":"R:1","source":"R"}\nthen edited',
        ),
        # provenance naming the left itself (a copy inside one source) is not the other side
        _copy(ann("L", "s3", "resolution", "resolved"), side="L", via="metadata"),
    ]
    right = [own, ann("R", "s2", "resolution", "resolved"), ann("R", "s3", "resolution", "resolved")]
    result = compare(left, right, CompareRequest(subject_ids=["s1", "s2", "s3"], left="L", right="R"))
    assert [r.status for r in result.rows] == [RowStatus.AGREE] * 3
    assert (result.ignored.left_copied_from_right, result.ignored.right_copied_from_left) == (0, 0)


def test_include_copies_is_a_documented_request_field() -> None:
    schema = CompareRequest.model_json_schema()["properties"]["include_copies"]
    assert schema["default"] is False
    assert "copied" in schema["description"]
    with pytest.raises(ValidationError):
        CompareRequest.model_validate(
            {"subject_ids": ["s1"], "left": "L", "right": "R", "include_copies": "sometimes"}
        )
