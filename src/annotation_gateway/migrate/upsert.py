"""Migrating into a target that takes upserts (Phoenix).

Contract: :class:`UpsertWriter` writes a batch to a target that takes ordinary upserts
(Phoenix): the target is read first, so unchanged rows are not sent; subjects the target does not
know are reported and the batch is written again without them (see the package docstring).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from annotation_gateway.errors import (
    RequestValidationError,
    SourceNotFoundError,
)
from annotation_gateway.migrate.derive import derive_identifier, provenance
from annotation_gateway.migrate.report import BatchResult, Outcome, first_line, kinds_text
from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind
from annotation_gateway.providers.base import AnnotationProvider, SourceQuery


class UpsertWriter:
    """Writes through ``target.write``: one upsert per annotation, identifier derived."""

    method = "upsert"

    def __init__(self, source: str, target: AnnotationProvider, name_map: Mapping[str, str]) -> None:
        self._source = source
        self._target = target
        self._names = name_map
        self._kinds = target.capabilities.writable_kinds

    def queues(self) -> list[str]:
        return []

    def _to_write(self, annotation: Annotation) -> AnnotationWrite | str:
        if annotation.subject.kind not in self._kinds:
            return (
                f"{self._target.name} cannot hold {annotation.subject.kind.value} annotations "
                f"(it takes {kinds_text(self._kinds)})"
            )
        kind = annotation.annotator.kind
        try:
            return AnnotationWrite(
                subject_id=annotation.subject.id,
                subject_kind=annotation.subject.kind,
                name=self._names.get(annotation.name, annotation.name),
                # Phoenix has no UNKNOWN; the original kind stays in the provenance metadata.
                annotator_kind=AnnotatorKind.HUMAN if kind is AnnotatorKind.UNKNOWN else kind,
                label=annotation.label,
                score=annotation.score,
                explanation=annotation.explanation,
                identifier=derive_identifier(annotation),
                metadata=provenance(annotation),
            )
        except ValueError as exc:  # pydantic: e.g. no label, score or explanation at all
            return f"not writable: {first_line(str(exc))}"

    async def apply(self, annotations: Sequence[Annotation], *, dry_run: bool) -> BatchResult:
        result = BatchResult(read=len(annotations))
        planned: list[tuple[Annotation, AnnotationWrite, Outcome]] = []
        candidates: list[tuple[Annotation, AnnotationWrite]] = []
        for annotation in annotations:
            item = self._to_write(annotation)
            if isinstance(item, str):
                result.fail(annotation, item)
            else:
                candidates.append((annotation, item))
        if not candidates:
            return result
        # Read what the target has first: an identical row is "unchanged" and is not sent.
        existing = await self._target.fetch(
            SourceQuery(
                subject_ids=tuple(dict.fromkeys(w.subject_id for _, w in candidates)),
                subject_kinds=tuple(sorted({w.subject_kind for _, w in candidates})),
            )
        )
        have = {(a.subject.kind, a.subject.id, a.name, a.identifier): a for a in existing}
        for annotation, item in candidates:
            old = have.get((item.subject_kind, item.subject_id, item.name, item.identifier))
            if old is None:
                planned.append((annotation, item, Outcome.WRITTEN))
            elif _same_row(old, item):
                result.ok(Outcome.UNCHANGED)
            else:
                planned.append((annotation, item, Outcome.UPDATED))
        if not dry_run:
            # Oldest original first: the target dates each copy when it writes it, so copies
            # written in this order keep their originals' order of recency as far as the
            # target's clock tells (Phoenix's has whole seconds). A group's tie between labels
            # goes to the most recent member (compare), and newest-first writes could turn it
            # on the copies' side: seen once, as a label_differs after a clean migration.
            planned.sort(key=lambda row: (row[0].updated_at, row[0].id))
            planned = await self._write(planned, result)
        for _, _, outcome in planned:
            result.ok(outcome)
        return result

    async def _write(
        self, planned: list[tuple[Annotation, AnnotationWrite, Outcome]], result: BatchResult
    ) -> list[tuple[Annotation, AnnotationWrite, Outcome]]:
        """Write all-or-nothing; drop items the target refuses by name and retry the rest."""
        pending = planned
        # Each retry removes at least one item, so this ends; the bound is a belt and braces.
        for _ in range(len(planned) + 1):
            if not pending:
                return pending
            try:
                await self._target.write([item for _, item, _ in pending])
                return pending
            except SourceNotFoundError as exc:
                unknown = {
                    (str(e.get("subject_kind")), str(e.get("subject_id")))
                    for e in exc.errors or []
                    if isinstance(e, dict) and "subject_id" in e
                }
                if not unknown:
                    raise  # the project itself is unknown: nothing in this run can succeed
                keep = []
                for annotation, item, outcome in pending:
                    if (item.subject_kind.value, item.subject_id) in unknown:
                        result.fail(annotation, f"subject not found in {self._target.name}")
                        if item.subject_id not in result.missing:
                            result.missing.append(item.subject_id)
                    else:
                        keep.append((annotation, item, outcome))
                pending = keep
            except RequestValidationError as exc:
                bad = _refused_items(exc)
                if not bad:
                    raise
                keep = []
                for index, (annotation, item, outcome) in enumerate(pending):
                    if index in bad:
                        result.fail(annotation, f"refused by {self._target.name}: {bad[index]}")
                    else:
                        keep.append((annotation, item, outcome))
                pending = keep
        return pending


def _refused_items(exc: RequestValidationError) -> dict[int, str]:
    """Item index → message from a provider's ``loc: ["annotations", i, field]`` errors."""
    bad: dict[int, str] = {}
    for error in exc.errors or []:
        loc = error.get("loc") if isinstance(error, dict) else None
        if isinstance(loc, list | tuple) and len(loc) >= 2 and isinstance(loc[1], int):
            bad.setdefault(loc[1], str(error.get("msg", "refused")))
    return bad


def _same_row(old: Annotation, new: AnnotationWrite) -> bool:
    return (
        old.label == new.label
        and _same_score(old.score, new.score)
        and old.explanation == new.explanation
        and old.annotator.kind == new.annotator_kind
        and old.metadata == new.metadata
    )


def _same_score(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or math.isclose(a, b, rel_tol=0.0, abs_tol=1e-12)
