"""Agreement of SPEC §8: do raters (annotator kinds, annotators or sources) agree on the same
subjects? One pass over the records; per annotation name, the statistics of inter-rater
reliability.

Contract:
- a **rater** is the record's ``annotator_kind``, ``annotator_id`` or ``source`` (``by``);
  annotations without that value (a Phoenix annotation has no ``annotator_id``) rate nothing;
- a **subject** is the subject id (not its kind: the vendors call the same conversation a
  session or a trace differently, as compare does);
- a name is **nominal** when any of its annotations has a label (ratings are labels), else
  **interval** (ratings are scores; annotations without a finite score rate nothing);
- **several annotations of one rater on one subject become one rating**: for labels, the
  majority label, a tie going to the label given most recently (``updated_at``), then to the
  smallest label in code-point order (compare's rule); for scores, their mean;
- per name: ``raters`` (sorted), ``subjects`` (rated by at least two raters: the units every
  statistic below is computed over), ``percent_agreement`` (mean over those subjects of the share
  of rater pairs that gave the same rating), ``kappa`` — Cohen's for two raters (over the
  subjects both rated), Fleiss' for more (over the subjects *every* rater rated; ``None`` if
  none) — only for nominal names, ``alpha`` (Krippendorff's, nominal or interval as the name
  is, over every subject with two ratings or more), ``confusion`` (the first two raters' labels
  over the subjects both rated: ``labels`` sorted, ``matrix[i][j]`` = subjects the first rater
  gave ``labels[i]`` and the second ``labels[j]``; ``None`` for interval names or fewer than two
  raters), ``disagreements`` (the subjects whose ratings are not all equal, sorted);
- memory grows with (name, subject, rater) triples, never with whole annotations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from annotation_gateway.aggregate.stats import cohen_kappa, counts_table, fleiss_kappa, krippendorff_alpha
from annotation_gateway.records import Record

__all__ = ["RATER_FIELDS", "AgreementAggregator", "RaterField"]

RaterField = Literal["annotator_kind", "annotator_id", "source"]
RATER_FIELDS: tuple[RaterField, ...] = ("annotator_kind", "annotator_id", "source")


@dataclass(slots=True)
class _Rating:
    """One rater's annotations of one name on one subject, reduced as the docstring says."""

    labels: dict[str, tuple[int, int]] = field(default_factory=dict)
    """label → (count, newest updated_us)."""
    scores: list[float] = field(default_factory=list)

    def label(self) -> str | None:
        if not self.labels:
            return None
        # Most votes, then the newest, then the smallest label.
        return min(self.labels.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[0]

    def score(self) -> float | None:
        return math.fsum(self.scores) / len(self.scores) if self.scores else None


class AgreementAggregator:
    """Collects ratings chunk by chunk (:meth:`add`); :meth:`results` computes per name."""

    def __init__(self, by: RaterField) -> None:
        self.by = by
        self._ratings: dict[str, dict[str, dict[str, _Rating]]] = {}
        self._labelled: set[str] = set()

    def add(self, records: Iterable[Record]) -> None:
        by = self.by
        for record in records:
            rater = getattr(record, by)
            if rater is None:
                continue
            subjects = self._ratings.setdefault(record.name, {})
            raters = subjects.setdefault(record.subject_id, {})
            rating = raters.get(rater)
            if rating is None:
                rating = raters[rater] = _Rating()
            if record.label is not None:
                self._labelled.add(record.name)
                count, newest = rating.labels.get(record.label, (0, record.updated_us))
                rating.labels[record.label] = (count + 1, max(newest, record.updated_us))
            if record.score is not None and math.isfinite(record.score):
                rating.scores.append(record.score)

    def results(self) -> list[dict[str, Any]]:
        return [self._result(name) for name in sorted(self._ratings)]

    def _result(self, name: str) -> dict[str, Any]:
        nominal = name in self._labelled
        values: dict[str, dict[str, Any]] = {}
        for subject, by_rater in self._ratings[name].items():
            given = {}
            for rater, rating in by_rater.items():
                value = rating.label() if nominal else rating.score()
                if value is not None:
                    given[rater] = value
            if given:
                values[subject] = given
        raters = sorted({r for given in values.values() for r in given})
        units = {s: given for s, given in values.items() if len(given) >= 2}
        pairs_agreeing = [_share_agreeing(list(given.values())) for _, given in sorted(units.items())]
        result: dict[str, Any] = {
            "name": name,
            "raters": raters,
            "subjects": len(units),
            "percent_agreement": math.fsum(pairs_agreeing) / len(pairs_agreeing) if pairs_agreeing else None,
            "kappa": None,
            "kappa_kind": None,
            "alpha": krippendorff_alpha(
                [list(given.values()) for _, given in sorted(units.items())],
                "nominal" if nominal else "interval",
            ),
            "alpha_level": "nominal" if nominal else "interval",
            "confusion": None,
            "disagreements": sorted(s for s, given in units.items() if len(set(given.values())) > 1),
        }
        if nominal and len(raters) == 2:
            first, second = raters
            both = [given for _, given in sorted(units.items()) if first in given and second in given]
            result["kappa"] = cohen_kappa([g[first] for g in both], [g[second] for g in both])
            result["kappa_kind"] = "cohen"
        elif nominal and len(raters) > 2:
            complete = [given for _, given in sorted(units.items()) if len(given) == len(raters)]
            categories = sorted({label for given in complete for label in given.values()})
            result["kappa"] = fleiss_kappa(counts_table(complete, categories)) if complete else None
            result["kappa_kind"] = "fleiss"
        if nominal and len(raters) >= 2:
            first, second = raters[0], raters[1]
            both = [given for given in units.values() if first in given and second in given]
            labels = sorted({g[first] for g in both} | {g[second] for g in both})
            index = {label: i for i, label in enumerate(labels)}
            matrix = [[0] * len(labels) for _ in labels]
            for given in both:
                matrix[index[given[first]]][index[given[second]]] += 1
            result["confusion"] = {"raters": [first, second], "labels": labels, "matrix": matrix}
        return result


def _share_agreeing(ratings: list[Any]) -> float:
    pairs = list(itertools.combinations(ratings, 2))
    return sum(1 for a, b in pairs if a == b) / len(pairs)
