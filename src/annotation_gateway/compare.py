"""Cross-source comparison of annotations (SPEC §3 ``POST /v1/compare``), as a pure library.

Contract
--------
:func:`compare` takes the canonical annotations already fetched from a *left* and a *right*
source plus a :class:`CompareRequest`, and returns a :class:`CompareResult`. It is synchronous,
does no I/O and knows nothing about any vendor: it sees only :class:`~annotation_gateway.model.Annotation`.

Pairing
    Annotations are paired by (subject, name) in the **left** source's vocabulary. A right
    annotation's subject id and name are first mapped back through the inverse of
    ``subject_map`` / ``name_map`` (both map *left → right* and must be one-to-one). A row is
    keyed by ``(subject_id, name, right_name)``: an explicit mapping wins over the identity, so
    with ``name_map={"quality": "answer_quality"}`` the left ``quality`` pairs with the right
    ``answer_quality``, while a right annotation that is itself called ``quality`` gets a row of
    its own (``name="quality", right_name="quality"``, ``only_right``) instead of being merged in.
    Subject kind and project are not part of the key (the vendors label the same conversation
    differently); they stay visible on every member annotation.

Scope
    With ``scope="all"`` (SPEC §7) there is no id list: each side reads its source's whole scope
    and every subject either side has is compared, paired by id (a right id mapped back through
    ``subject_map``). Otherwise only subjects in ``subject_ids`` are compared (on the right:
    their mapped ids); with
    ``names`` only those left names and their mapped right names. Anything else that was passed
    in is not compared but counted in :attr:`CompareResult.ignored`, so nothing is dropped
    silently. An annotation whose ``source`` is not the side's source name is a caller error
    (``ValueError``): it means the two sides were mixed up.

Copies (issue 15)
    A migrated copy is not an independent judgement. By default a **left** annotation whose
    provenance (:func:`annotation_gateway.provenance.origin`: ``metadata.migrated_from`` on
    Phoenix rows, the ``migrated_from: {json}`` reasoning line on Datadog annotations) names the
    request's **right** source, and a **right** annotation whose provenance names the **left**
    source, are not compared but counted in ``ignored.left_copied_from_right`` /
    ``ignored.right_copied_from_left``. Otherwise a copy would join its side's group next to
    that side's own judgement — and, being newer, win the tie-break — so the two sources would
    seem to agree more than they do. Copies from any other source, and annotations without
    (valid) provenance, are compared as usual. ``include_copies=True`` compares copies too
    (what :func:`annotation_gateway.migrate.verify` needs: it checks copies against their
    originals). Scope comes first: a copy outside the requested subjects/names is counted as
    out of scope, not as a copy.

Groups (several annotations per (subject, name) on one side, e.g. several reviewers)
    * group **label** = the majority label among members that have one; a tie goes to the label
      whose most recent member (``updated_at``) is newest, then to the lexicographically smallest
      label (code-point order); ``None`` if no member has a label;
    * group **score** = the arithmetic mean of the members' finite scores; NaN and ±inf are
      treated as absent; ``None`` if no member has one;
    * every member stays in the row (newest first, then by id) with its explanation and annotator.
    Explanations are shown, never compared (free text).

Row status (``score_diff`` = right score - left score, when both exist)
    1. only one side has members → ``only_left`` / ``only_right``;
    2. the group labels differ → ``label_differs``. **A label on one side only counts as
       differing** (one side made a categorical judgement the other did not). Labels are compared
       exactly (case- and whitespace-sensitive), as the vendors stored them;
    3. both scores exist and ``|score_diff| > score_tolerance`` → ``score_differs``; **a score on
       one side only also counts as** ``score_differs``;
    4. otherwise ``agree`` (including when neither side has a label or a score).
    Rows are sorted by subject id, then name, then right name (code-point order).

Computed numbers (group score, ``score_diff``, mean absolute difference) are computed in decimal
on each score's shortest ``repr`` - the number as the vendor stored it - and then rounded once to
the nearest float: ``1.0 - 0.95`` is ``0.05``, not the binary artefact ``0.050000000000000044``,
and the tolerance test uses that same difference. A stored score is never rounded (the mean of
one score is that score, bit for bit).

Statistics (per (name, right_name) in :attr:`CompareResult.summary`, and overall)
    * counts of each status; ``n_paired`` = rows with both sides (agree + label_differs +
      score_differs); ``agreement_rate`` = agree / n_paired (``None`` when nothing is paired);
    * Cohen's kappa over the group labels of paired rows where **both** sides have a label
      (:func:`cohen_kappa`); only per name, since pooling different label scales is meaningless;
    * mean absolute score difference over paired rows where both sides have a score;
    * ``disagreeing_subjects`` (label_differs or score_differs) and ``one_sided_subjects``
      (only_left or only_right), sorted, in the left vocabulary.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Context, Decimal
from enum import StrEnum
from functools import reduce
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from annotation_gateway.errors import PayloadTooLargeError
from annotation_gateway.model import Annotation
from annotation_gateway.provenance import copied_from

__all__ = [
    "MAX_COMPARE_SUBJECT_IDS",
    "CompareRequest",
    "CompareResult",
    "CompareRow",
    "GroupValue",
    "IgnoredCounts",
    "NameSummary",
    "OverallSummary",
    "RowStatus",
    "cohen_kappa",
    "compare",
    "group_label",
    "group_score",
    "score_difference",
]

MAX_COMPARE_SUBJECT_IDS = 10_000
"""Subject ids in one compare request (the same bound as ``POST /v1/annotations/search``)."""


class RowStatus(StrEnum):
    """How one (subject, name) row compares between the two sources."""

    AGREE = "agree"
    LABEL_DIFFERS = "label_differs"
    SCORE_DIFFERS = "score_differs"
    ONLY_LEFT = "only_left"
    ONLY_RIGHT = "only_right"


_PAIRED = (RowStatus.AGREE, RowStatus.LABEL_DIFFERS, RowStatus.SCORE_DIFFERS)
_DISAGREEING = (RowStatus.LABEL_DIFFERS, RowStatus.SCORE_DIFFERS)
_ONE_SIDED = (RowStatus.ONLY_LEFT, RowStatus.ONLY_RIGHT)


def _dedupe(values: list[str]) -> list[str]:
    # Repeated ids/names are harmless in a request; keep the first occurrence's order.
    return list(dict.fromkeys(values))


def _check_one_to_one(mapping: dict[str, str], what: str) -> None:
    seen: dict[str, str] = {}
    for left, right in mapping.items():
        if right in seen:
            raise ValueError(f"{what} must be one-to-one: {seen[right]!r} and {left!r} both map to {right!r}")
        seen[right] = left


class CompareRequest(BaseModel):
    """What to compare: which subjects, which two sources, and how their vocabularies map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_ids: list[str] = Field(
        default_factory=list,
        # Documented, and checked by _within_limit: more is a 413 naming the limit, not a 422.
        json_schema_extra={"maxItems": MAX_COMPARE_SUBJECT_IDS},
        description="Subject (session/trace) ids in the left source's vocabulary; duplicates are "
        f"ignored; more than {MAX_COMPARE_SUBJECT_IDS} distinct → 413. Required unless `scope` "
        "is `all`.",
    )
    scope: Literal["all"] | None = Field(
        default=None,
        description="`all`: compare every subject of both sources' scopes (Phoenix: the project's "
        "sessions and traces; Datadog: its queues), paired by id and `subject_map`, instead of "
        "`subject_ids`.",
    )
    left: str = Field(min_length=1, description="The left source name.")
    right: str = Field(min_length=1, description="The right source name.")
    names: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Only these annotation names (left vocabulary); all names when omitted.",
    )
    name_map: dict[str, str] | None = Field(
        default=None,
        description="Left name → right name, one-to-one (e.g. `quality` → `answer_quality`).",
    )
    subject_map: dict[str, str] | None = Field(
        default=None,
        description="Left subject id → right subject id, one-to-one, for subjects the sources "
        "know under different ids.",
    )
    score_tolerance: float = Field(
        default=1e-9,
        ge=0,
        allow_inf_nan=False,
        description="Scores whose absolute difference is at most this are equal.",
    )
    include_copies: bool = Field(
        default=False,
        description="Also compare annotations a migration copied from the other side "
        "(provenance `metadata.migrated_from` or the Datadog reasoning line `migrated_from: "
        "{...}` naming the other source). By default they are left out and counted in "
        "`ignored`: a copy is not an independent judgement, and it would make the sources "
        "seem to agree.",
    )

    @field_validator("subject_ids", mode="before")
    @classmethod
    def _within_limit(cls, values: Any) -> Any:
        # Raised as is (not a ValueError): the API answers 413 payload_too_large, like search.
        if isinstance(values, list) and len(values) > MAX_COMPARE_SUBJECT_IDS:
            distinct = len({v for v in values if isinstance(v, str)})
            if distinct > MAX_COMPARE_SUBJECT_IDS:
                raise PayloadTooLargeError(
                    f"{distinct} distinct subject ids in one compare; the limit is {MAX_COMPARE_SUBJECT_IDS}"
                )
        return values

    @field_validator("subject_ids", "names")
    @classmethod
    def _non_empty_unique(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if any(value == "" for value in values):
            raise ValueError("must not contain empty strings")
        return _dedupe(values)

    @model_validator(mode="after")
    def _unambiguous(self) -> CompareRequest:
        # Every right-side id/name must map back to exactly one left id/name; otherwise one
        # right annotation would belong to two rows and the statistics would count it twice.
        if self.name_map:
            _check_one_to_one(self.name_map, "name_map")
        if self.subject_map:
            _check_one_to_one(self.subject_map, "subject_map")
        if self.scope is None and not self.subject_ids:
            raise ValueError("give subject_ids, or scope=all to compare every subject of both sources")
        if self.scope is not None and self.subject_ids:
            raise ValueError("give subject_ids or scope=all, not both")
        self._right_to_left(self.subject_ids, self.subject_map, "subject")
        if self.names is not None:
            self._right_to_left(self.names, self.name_map, "name")
        return self

    @staticmethod
    def _right_to_left(values: list[str], mapping: dict[str, str] | None, what: str) -> dict[str, str]:
        mapping = mapping or {}
        back: dict[str, str] = {}
        for left in values:
            right = mapping.get(left, left)
            if right in back:
                raise ValueError(
                    f"{what}s {back[right]!r} and {left!r} would both be compared with the right "
                    f"{what} {right!r}; map one of them elsewhere or leave it out"
                )
            back[right] = left
        return back

    def right_subject_ids(self) -> list[str]:
        """The subject ids to fetch from the right source (``subject_map`` applied)."""
        mapping = self.subject_map or {}
        return [mapping.get(subject, subject) for subject in self.subject_ids]

    def right_names(self) -> list[str] | None:
        """The annotation names to fetch from the right source, or ``None`` for all."""
        if self.names is None:
            return None
        mapping = self.name_map or {}
        return [mapping.get(name, name) for name in self.names]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GroupValue(_Out):
    """One side of a row: the group's values and every member annotation."""

    subject_id: str = Field(description="The subject id in this side's vocabulary.")
    name: str = Field(description="The annotation name in this side's vocabulary.")
    label: str | None = Field(description="Majority label (see the group rule); null if none.")
    score: float | None = Field(description="Mean of the members' scores; null if none.")
    label_votes: dict[str, int] = Field(description="How many members gave each label.")
    count: int = Field(description="Number of member annotations.")
    members: list[Annotation] = Field(description="Every annotation of the group, newest first.")


class CompareRow(_Out):
    """One (subject, name) pair and how the two sources compare on it."""

    subject_id: str = Field(description="Subject id in the left vocabulary.")
    right_subject_id: str
    name: str = Field(description="Annotation name in the left vocabulary.")
    right_name: str
    status: RowStatus
    left: GroupValue | None
    right: GroupValue | None
    score_diff: float | None = Field(description="right score - left score, when both exist.")


class _Stats(_Out):
    n_rows: int
    agree: int
    label_differs: int
    score_differs: int
    only_left: int
    only_right: int
    n_paired: int = Field(description="Rows present on both sides.")
    agreement_rate: float | None = Field(description="agree / n_paired; null when nothing is paired.")
    n_scored: int = Field(description="Paired rows where both sides have a score.")
    mean_abs_score_diff: float | None = Field(description="Mean |right - left| over the scored rows.")


class _Named(_Out):
    name: str = Field(description="The annotation name in the left vocabulary.")
    right_name: str = Field(description="The name it is compared with on the right.")


class NameSummary(_Stats, _Named):
    """Statistics of one annotation name (left vocabulary, with its right-side name)."""

    # Base order (_Stats, _Named) puts name and right_name first in the JSON.
    n_labelled: int = Field(description="Paired rows where both sides have a label (kappa's n).")
    cohen_kappa: float | None = Field(
        description="Cohen's kappa over the labelled rows; null when undefined "
        "(fewer than 2 rows, or chance agreement 1)."
    )
    disagreeing_subjects: list[str] = Field(description="Subjects with label_differs or score_differs.")
    one_sided_subjects: list[str] = Field(description="Subjects with only_left or only_right.")


class OverallSummary(_Stats):
    """Statistics over every row (kappa is per name only)."""

    n_subjects: int = Field(description="Subjects requested.")
    n_subjects_with_differences: int = Field(description="Subjects with at least one non-agree row.")


class IgnoredCounts(_Out):
    """Annotations passed in but not compared: outside the request's scope, or copies of the other side."""

    left_subject_not_requested: int = 0
    left_name_not_requested: int = 0
    right_subject_not_requested: int = 0
    right_name_not_requested: int = 0
    left_copied_from_right: int = Field(
        default=0,
        description="Left annotations a migration copied from the right source (not compared "
        "unless `include_copies`).",
    )
    right_copied_from_left: int = Field(
        default=0,
        description="Right annotations a migration copied from the left source (not compared "
        "unless `include_copies`).",
    )


class CompareResult(_Out):
    """The comparison: rows, a summary per name, overall statistics."""

    left: str
    right: str
    score_tolerance: float
    rows: list[CompareRow]
    summary: list[NameSummary] = Field(description="One entry per (name, right_name), sorted.")
    overall: OverallSummary
    ignored: IgnoredCounts


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa for two raters over categorical labels, ``(left, right)`` per item.

    ``kappa = (po - pe) / (1 - pe)`` with ``po`` the observed agreement and ``pe`` the agreement
    expected by chance from each rater's label frequencies. Computed in integers as
    ``(n·a - S) / (n² - S)`` (``a`` = agreeing items, ``S`` = Σ over labels of left count * right
    count), which is the same formula multiplied through by ``n²`` and avoids rounding in ``pe``.

    Returns ``None`` when kappa is undefined or meaningless: fewer than 2 items, or ``pe == 1``
    (both raters used one and the same label throughout, so the formula is 0/0).
    """
    n = len(pairs)
    if n < 2:
        return None
    agreeing = sum(1 for left, right in pairs if left == right)
    left_counts = Counter(left for left, _ in pairs)
    right_counts = Counter(right for _, right in pairs)
    chance = sum(count * right_counts[label] for label, count in left_counts.items())
    denominator = n * n - chance
    if denominator == 0:
        return None
    return (n * agreeing - chance) / denominator


def _newest_first_key(annotation: Annotation) -> tuple[float, str]:
    return (-annotation.updated_at.timestamp(), annotation.id)


def group_label(members: Iterable[Annotation]) -> str | None:
    """The group label: majority, then newest ``updated_at``, then smallest label (see module doc)."""
    votes: Counter[str] = Counter()
    newest: dict[str, datetime] = {}
    for member in members:
        if member.label is None:
            continue
        votes[member.label] += 1
        if member.label not in newest or member.updated_at > newest[member.label]:
            newest[member.label] = member.updated_at
    if not votes:
        return None
    # min() over (-votes, -newest, label) picks most votes, then newest, then smallest label.
    return min(votes, key=lambda label: (-votes[label], -newest[label].timestamp(), label))


_DECIMAL = Context(prec=34)
"""Decimal arithmetic for computed numbers (34 digits: twice a float repr's 17, and then some)."""


def _stored(value: float) -> Decimal:
    # repr is the shortest text that reads back as this float: the number the vendor stored.
    return Decimal(repr(value))


def _decimal_mean(values: Sequence[float]) -> float:
    return float(_DECIMAL.divide(reduce(_DECIMAL.add, map(_stored, values)), len(values)))


def score_difference(left: float, right: float) -> float:
    """``right - left`` computed on the scores as stored (see the module docstring)."""
    return float(_DECIMAL.subtract(_stored(right), _stored(left)))


def group_score(members: Iterable[Annotation]) -> float | None:
    """The group score: mean of the members' finite scores, ``None`` if there are none."""
    scores = [m.score for m in members if m.score is not None and math.isfinite(m.score)]
    if not scores:
        return None
    return _decimal_mean(scores)


def _group(members: list[Annotation]) -> GroupValue:
    ordered = sorted(members, key=_newest_first_key)
    return GroupValue(
        subject_id=ordered[0].subject.id,
        name=ordered[0].name,
        label=group_label(ordered),
        score=group_score(ordered),
        label_votes=dict(sorted(Counter(m.label for m in ordered if m.label is not None).items())),
        count=len(ordered),
        members=ordered,
    )


def _status(left: GroupValue | None, right: GroupValue | None, tolerance: float) -> RowStatus:
    if left is None:
        return RowStatus.ONLY_RIGHT
    if right is None:
        return RowStatus.ONLY_LEFT
    # Compared first: a label is the categorical verdict; a label on one side only differs too.
    if left.label != right.label:
        return RowStatus.LABEL_DIFFERS
    if left.score is not None and right.score is not None:
        if abs(score_difference(left.score, right.score)) > tolerance:
            return RowStatus.SCORE_DIFFERS
    elif left.score is not None or right.score is not None:
        return RowStatus.SCORE_DIFFERS
    return RowStatus.AGREE


def _check_source(annotations: Sequence[Annotation], source: str, side: str) -> None:
    for annotation in annotations:
        if annotation.source != source:
            raise ValueError(
                f"{side} annotation {annotation.id!r} comes from source {annotation.source!r}, not {source!r}"
            )


_Key = tuple[str, str, str]  # (left subject id, left name, right name)


def _stats_fields(rows: Sequence[CompareRow]) -> dict[str, int | float | None]:
    counts = Counter(row.status for row in rows)
    n_paired = sum(counts[status] for status in _PAIRED)
    diffs = [abs(row.score_diff) for row in rows if row.score_diff is not None]
    return {
        "n_rows": len(rows),
        "agree": counts[RowStatus.AGREE],
        "label_differs": counts[RowStatus.LABEL_DIFFERS],
        "score_differs": counts[RowStatus.SCORE_DIFFERS],
        "only_left": counts[RowStatus.ONLY_LEFT],
        "only_right": counts[RowStatus.ONLY_RIGHT],
        "n_paired": n_paired,
        "agreement_rate": counts[RowStatus.AGREE] / n_paired if n_paired else None,
        "n_scored": len(diffs),
        "mean_abs_score_diff": _decimal_mean(diffs) if diffs else None,
    }


def _name_summary(name: str, right_name: str, rows: list[CompareRow]) -> NameSummary:
    labelled = [
        (row.left.label, row.right.label)
        for row in rows
        if row.left is not None
        and row.right is not None
        and row.left.label is not None
        and row.right.label is not None
    ]
    return NameSummary.model_validate(
        {
            "name": name,
            "right_name": right_name,
            **_stats_fields(rows),
            "n_labelled": len(labelled),
            "cohen_kappa": cohen_kappa(labelled),
            "disagreeing_subjects": sorted({r.subject_id for r in rows if r.status in _DISAGREEING}),
            "one_sided_subjects": sorted({r.subject_id for r in rows if r.status in _ONE_SIDED}),
        }
    )


def compare(
    left: Sequence[Annotation], right: Sequence[Annotation], request: CompareRequest
) -> CompareResult:
    """Compare the left and right sources' annotations as the module docstring describes.

    ``left`` and ``right`` are every annotation fetched for the request from each source (in any
    order); annotations outside the request's scope are counted in ``ignored``.
    """
    _check_source(left, request.left, "left")
    _check_source(right, request.right, "right")
    name_map = request.name_map or {}
    subject_map = request.subject_map or {}
    whole_scope = request.scope is not None
    requested = set(request.subject_ids)
    right_subject_to_left = {subject_map.get(s, s): s for s in request.subject_ids}
    if whole_scope:
        # Every subject either side has; a right id known under another left id maps back.
        inverse_subjects = {r: s for s, r in subject_map.items()}
        requested = {a.subject.id for a in left}
        right_subject_to_left = {
            a.subject.id: inverse_subjects.get(a.subject.id, a.subject.id) for a in right
        }
    inverse_names = {r: n for n, r in name_map.items()}
    wanted_names = None if request.names is None else set(request.names)

    ignored: Counter[str] = Counter()
    groups: dict[_Key, tuple[list[Annotation], list[Annotation]]] = defaultdict(lambda: ([], []))

    for annotation in left:
        if annotation.subject.id not in requested:
            ignored["left_subject_not_requested"] += 1
        elif wanted_names is not None and annotation.name not in wanted_names:
            ignored["left_name_not_requested"] += 1
        elif not request.include_copies and copied_from(annotation, request.right):
            ignored["left_copied_from_right"] += 1
        else:
            key = (annotation.subject.id, annotation.name, name_map.get(annotation.name, annotation.name))
            groups[key][0].append(annotation)

    for annotation in right:
        subject = right_subject_to_left.get(annotation.subject.id)
        left_name = inverse_names.get(annotation.name, annotation.name)
        if subject is None:
            ignored["right_subject_not_requested"] += 1
        elif wanted_names is not None and (
            left_name not in wanted_names or name_map.get(left_name, left_name) != annotation.name
        ):
            # The second test keeps out a right name that merely equals a left name which is
            # itself mapped elsewhere (names=["quality"], quality→answer_quality, right "quality").
            ignored["right_name_not_requested"] += 1
        elif not request.include_copies and copied_from(annotation, request.left):
            ignored["right_copied_from_left"] += 1
        else:
            groups[(subject, left_name, annotation.name)][1].append(annotation)

    rows: list[CompareRow] = []
    for key in sorted(groups):
        subject, name, right_name = key
        left_members, right_members = groups[key]
        left_group = _group(left_members) if left_members else None
        right_group = _group(right_members) if right_members else None
        score_diff = None
        if (
            left_group is not None
            and right_group is not None
            and left_group.score is not None
            and right_group.score is not None
        ):
            score_diff = score_difference(left_group.score, right_group.score)
        rows.append(
            CompareRow(
                subject_id=subject,
                right_subject_id=subject_map.get(subject, subject),
                name=name,
                right_name=right_name,
                status=_status(left_group, right_group, request.score_tolerance),
                left=left_group,
                right=right_group,
                score_diff=score_diff,
            )
        )

    by_name: dict[tuple[str, str], list[CompareRow]] = defaultdict(list)
    for row in rows:
        by_name[(row.name, row.right_name)].append(row)

    overall = OverallSummary.model_validate(
        {
            **_stats_fields(rows),
            "n_subjects": len(request.subject_ids if not whole_scope else {row.subject_id for row in rows}),
            "n_subjects_with_differences": len(
                {row.subject_id for row in rows if row.status is not RowStatus.AGREE}
            ),
        }
    )
    return CompareResult(
        left=request.left,
        right=request.right,
        score_tolerance=request.score_tolerance,
        rows=rows,
        summary=[_name_summary(n, r, by_name[(n, r)]) for n, r in sorted(by_name)],
        overall=overall,
        ignored=IgnoredCounts(**ignored),
    )
