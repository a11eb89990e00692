"""Agreement (SPEC §8) on records built in the test: reducing several annotations of one rater,
nominal vs interval names, and every statistic against scikit-learn, statsmodels and the
krippendorff package on generated ratings."""

from __future__ import annotations

import itertools
import math
import warnings

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from annotation_gateway.aggregate.agreement import AgreementAggregator
from annotation_gateway.model import AnnotatorKind
from annotation_gateway.records import Record, record_of
from tests.fakes import make_annotation

_ids = itertools.count()
KINDS = [AnnotatorKind.HUMAN, AnnotatorKind.LLM, AnnotatorKind.CODE]
LABELS = ["bad", "good", "meh"]


def rate(subject: str, kind: AnnotatorKind, *, label: str | None, score: float | None = None,
         name: str = "resolution", at: int = 0) -> Record:  # fmt: skip
    return record_of(
        make_annotation("px", subject, name=name, annotator=kind, label=label, score=score, updated_at=at)
    )


def test_one_rating_per_rater_and_subject_majority_then_newest() -> None:
    records = [
        rate("s1", AnnotatorKind.HUMAN, label="good", at=1),
        rate("s1", AnnotatorKind.HUMAN, label="bad", at=2),
        rate("s1", AnnotatorKind.HUMAN, label="bad", at=3),  # bad: 2 votes
        rate("s1", AnnotatorKind.LLM, label="good", at=1),
        rate("s2", AnnotatorKind.HUMAN, label="good", at=5),
        rate("s2", AnnotatorKind.HUMAN, label="bad", at=9),  # a tie: the newest wins → bad
        rate("s2", AnnotatorKind.LLM, label="bad", at=1),
        rate("s3", AnnotatorKind.LLM, label="good", at=1),  # one rater only: not a unit
    ]
    aggregator = AgreementAggregator("annotator_kind")
    aggregator.add(records)
    [result] = aggregator.results()
    assert result["raters"] == ["HUMAN", "LLM"]
    assert result["subjects"] == 2
    assert result["disagreements"] == ["s1"]
    assert result["percent_agreement"] == 0.5
    assert result["confusion"] == {
        "raters": ["HUMAN", "LLM"],
        "labels": ["bad", "good"],
        "matrix": [[1, 1], [0, 0]],
    }
    assert (result["kappa_kind"], result["alpha_level"]) == ("cohen", "nominal")


def test_a_score_only_name_is_interval_with_mean_ratings() -> None:
    records = [
        rate("s1", AnnotatorKind.HUMAN, label=None, score=1.0, name="tone"),
        rate("s1", AnnotatorKind.HUMAN, label=None, score=3.0, name="tone"),  # mean 2.0
        rate("s1", AnnotatorKind.LLM, label=None, score=2.0, name="tone"),
        rate("s2", AnnotatorKind.HUMAN, label=None, score=5.0, name="tone"),
        rate("s2", AnnotatorKind.LLM, label=None, score=1.0, name="tone"),
    ]
    aggregator = AgreementAggregator("annotator_kind")
    aggregator.add(records)
    [result] = aggregator.results()
    assert result["alpha_level"] == "interval"
    assert result["kappa"] is None
    assert result["confusion"] is None
    assert result["disagreements"] == ["s2"]
    theirs = krippendorff.alpha(reliability_data=[[2.0, 5.0], [2.0, 1.0]], level_of_measurement="interval")
    assert result["alpha"] == pytest.approx(float(theirs))


@settings(max_examples=80)
@given(
    st.integers(min_value=2, max_value=3),
    st.lists(st.lists(st.sampled_from(LABELS), min_size=3, max_size=3), min_size=2, max_size=40),
)
def test_statistics_match_the_reference_libraries(raters: int, subjects: list[list[str]]) -> None:
    kinds = KINDS[:raters]
    records = [
        rate(f"s{i:03d}", kind, label=labels[j])
        for i, labels in enumerate(subjects)
        for j, kind in enumerate(kinds)
    ]
    aggregator = AgreementAggregator("annotator_kind")
    aggregator.add(records)
    [result] = aggregator.results()
    names = sorted(k.value for k in kinds)
    by_kind = {k.value: [labels[j] for labels in subjects] for j, k in enumerate(kinds)}
    assert result["raters"] == names
    assert result["subjects"] == len(subjects)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if raters == 2:
            theirs = float(cohen_kappa_score(by_kind[names[0]], by_kind[names[1]]))
        else:
            table = [[labels.count(c) for c in LABELS] for labels in subjects]
            theirs = float(sm_fleiss_kappa(np.array(table), method="fleiss"))
    if math.isnan(theirs) or math.isinf(theirs):
        assert result["kappa"] is None
    else:
        assert result["kappa"] == pytest.approx(theirs, abs=1e-9)
    codes = {label: float(i) for i, label in enumerate(LABELS)}
    matrix = [[codes[v] for v in by_kind[name]] for name in names]
    if len({v for row in matrix for v in row}) > 1:
        alpha = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
        assert result["alpha"] == pytest.approx(alpha, abs=1e-9)
    else:
        assert result["alpha"] is None
    agreeing = [
        sum(a == b for a, b in itertools.combinations([by_kind[n][i] for n in names], 2))
        / math.comb(raters, 2)
        for i in range(len(subjects))
    ]
    assert result["percent_agreement"] == pytest.approx(sum(agreeing) / len(agreeing))
    first, second = names[0], names[1]
    matrix_counts = result["confusion"]["matrix"]
    labels = result["confusion"]["labels"]
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            expected = sum(
                1 for x, y in zip(by_kind[first], by_kind[second], strict=True) if (x, y) == (a, b)
            )
            assert matrix_counts[i][j] == expected


def test_raters_without_a_value_rate_nothing() -> None:
    aggregator = AgreementAggregator("annotator_id")
    # make_annotation gives every annotator the id "someone": one rater, so nothing is compared
    aggregator.add(
        [rate("s1", AnnotatorKind.HUMAN, label="good"), rate("s1", AnnotatorKind.LLM, label="bad")]
    )
    [result] = aggregator.results()
    assert result["raters"] == ["someone"]
    assert result["subjects"] == 0
    assert result["percent_agreement"] is None
