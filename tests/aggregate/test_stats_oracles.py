"""The statistics of SPEC §8 against the well-known implementations, on generated data:
numpy (mean, sample stdev, linear quantiles), scikit-learn (Cohen's kappa), statsmodels
(Fleiss' kappa) and the ``krippendorff`` package (alpha, nominal and interval)."""

from __future__ import annotations

import math
import warnings

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from annotation_gateway.aggregate.stats import (
    cohen_kappa,
    counts_table,
    fleiss_kappa,
    krippendorff_alpha,
    mean_stdev,
    quantile,
)

scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
LABELS = ["a", "b", "c", "d"]


@given(st.lists(scores, min_size=1, max_size=60), st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
def test_quantile_is_numpys_linear(values: list[float], q: float) -> None:
    ordered = sorted(values)
    assert quantile(ordered, q) == pytest.approx(float(np.quantile(values, q)), rel=1e-12, abs=1e-9)


@given(st.lists(scores, min_size=1, max_size=60))
def test_mean_and_sample_stdev_are_numpys(values: list[float]) -> None:
    mean, stdev = mean_stdev(values)
    assert mean == pytest.approx(float(np.mean(values)), rel=1e-9, abs=1e-9)
    if len(values) < 2:
        assert stdev is None
    else:
        assert stdev == pytest.approx(float(np.std(values, ddof=1)), rel=1e-7, abs=1e-6)


def test_empty_and_single_values() -> None:
    assert quantile([], 0.5) is None
    assert mean_stdev([]) == (None, None)
    assert mean_stdev([2.5]) == (2.5, None)


pairs = st.lists(st.tuples(st.sampled_from(LABELS), st.sampled_from(LABELS)), min_size=1, max_size=80)


@given(pairs)
def test_cohen_kappa_is_scikit_learns(rated: list[tuple[str, str]]) -> None:
    first, second = [a for a, _ in rated], [b for _, b in rated]
    ours = cohen_kappa(first, second)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns where kappa is undefined; checked below
        theirs = float(cohen_kappa_score(first, second))
    if math.isnan(theirs):
        assert ours is None  # both raters always gave one and the same label
    else:
        assert ours == pytest.approx(theirs, abs=1e-12)


@settings(max_examples=150)
@given(
    st.integers(min_value=2, max_value=5).flatmap(
        lambda raters: st.lists(
            st.lists(st.sampled_from(LABELS), min_size=raters, max_size=raters), min_size=1, max_size=40
        )
    )
)
def test_fleiss_kappa_is_statsmodels(subjects: list[list[str]]) -> None:
    ratings = [{f"r{i}": label for i, label in enumerate(row)} for row in subjects]
    table = counts_table(ratings, LABELS)
    ours = fleiss_kappa(table)
    with np.errstate(divide="ignore", invalid="ignore"):
        theirs = float(sm_fleiss_kappa(np.array(table), method="fleiss"))
    if math.isnan(theirs) or math.isinf(theirs):
        assert ours is None
    else:
        assert ours == pytest.approx(theirs, abs=1e-9)


def _units(draw_units: list[list[float | None]]) -> tuple[list[list[float]], np.ndarray]:
    """Our input (each unit's present values) and krippendorff's (raters x units, nan = missing)."""
    raters = max(len(u) for u in draw_units)
    matrix = np.full((raters, len(draw_units)), np.nan)
    ours: list[list[float]] = []
    for j, unit in enumerate(draw_units):
        present = []
        for i, value in enumerate(unit):
            if value is not None:
                matrix[i, j] = value
                present.append(value)
        ours.append(present)
    return ours, matrix


unit_values = st.lists(
    st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=4).map(float)), min_size=3, max_size=3),
    min_size=2,
    max_size=30,
)


@settings(max_examples=150)
@given(unit_values, st.sampled_from(["nominal", "interval"]))
def test_krippendorff_alpha_is_the_krippendorff_packages(
    draw_units: list[list[float | None]], level: str
) -> None:
    ours_input, matrix = _units(draw_units)
    pairable = sum(1 for unit in ours_input if len(unit) >= 2)
    ours = krippendorff_alpha(ours_input, level)  # type: ignore[arg-type]
    if pairable == 0 or len({v for unit in ours_input if len(unit) >= 2 for v in unit}) < 2:
        assert ours is None  # nothing pairable, or one value only: no expected disagreement
        return
    theirs = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_krippendorff_nominal_on_labels_equals_the_same_on_codes() -> None:
    units = [["a", "a", "b"], ["b", "b"], ["c", "a"], ["a", "a", "a"]]
    codes = {"a": 0.0, "b": 1.0, "c": 2.0}
    assert krippendorff_alpha(units, "nominal") == pytest.approx(
        krippendorff_alpha([[codes[v] for v in unit] for unit in units], "nominal")
    )
