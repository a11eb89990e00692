"""Checking a migration's result.

Contract: :func:`verify` compares what was copied between source and target with
:func:`~annotation_gateway.compare.compare` (see the package docstring, "Checking the result").
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from annotation_gateway.compare import CompareRequest, CompareResult, compare
from annotation_gateway.migrate.derive import migration_queue_name
from annotation_gateway.migrate.queues import QUEUE_KINDS, SCORE_SUFFIX
from annotation_gateway.model import Annotation
from annotation_gateway.provenance import copied_from, origin
from annotation_gateway.providers.base import AnnotationProvider, SourceQuery


async def verify(
    source: AnnotationProvider,
    target: AnnotationProvider,
    subject_ids: Sequence[str],
    name_map: Mapping[str, str] | None = None,
    *,
    exclude_subjects: Collection[str] = (),
) -> CompareResult:
    """Compare what :func:`migrate` copied: zero differences means every copy landed intact.

    ``exclude_subjects`` leaves out subjects that could not be copied (a report's
    ``missing_subjects``), which would otherwise show as ``only_left``.
    """
    excluded = set(exclude_subjects)
    subjects = [s for s in dict.fromkeys(subject_ids) if s and s not in excluded]
    names = dict(name_map or {})
    query = SourceQuery(subject_ids=tuple(subjects))
    left, right = await asyncio.gather(source.fetch(query), target.fetch(query))
    if target.capabilities.writable_kinds:
        kinds = target.capabilities.writable_kinds
        right = [a for a in right if copied_from(a, source.name)]
    else:
        kinds = QUEUE_KINDS
        base = migration_queue_name(source.name)
        right = _fold_scores(
            [
                a
                for a in right
                if a.queue is not None
                and a.queue.name is not None
                and (a.queue.name == base or a.queue.name.startswith(f"{base}:"))
            ]
        )
    # What migrate skipped as copies of the target's own annotations is not expected there.
    left = [a for a in left if a.subject.kind in kinds and not copied_from(a, target.name)]
    right = _with_original_times(right, left)
    # The right side *is* copies of the left: compare must not leave them out.
    request = CompareRequest(
        subject_ids=subjects,
        left=source.name,
        right=target.name,
        name_map=names or None,
        include_copies=True,
    )
    return compare(left, right, request)


def _with_original_times(copies: list[Annotation], originals: list[Annotation]) -> list[Annotation]:
    """Copies carry their originals' timestamps: compare breaks label ties by recency."""
    by_id = {a.id: a for a in originals}
    out = []
    for copy in copies:
        found = origin(copy)
        original = by_id.get(found.id) if found is not None else None
        if original is not None:
            copy = copy.model_copy(
                update={"created_at": original.created_at, "updated_at": original.updated_at}
            )
        out.append(copy)
    return out


def _fold_scores(annotations: list[Annotation]) -> list[Annotation]:
    """Put ``{name}_score`` back into its categorical ``{name}`` of the same Datadog annotation."""
    by_key = {
        ((a.extensions.get("datadog") or {}).get("annotation_id"), a.name): a
        for a in annotations
        if (a.extensions.get("datadog") or {}).get("label_type") == "categorical"
    }
    out: list[Annotation] = []
    folded: dict[str, Annotation] = {}
    for annotation in annotations:
        datadog = annotation.extensions.get("datadog") or {}
        if datadog.get("label_type") == "score" and annotation.name.endswith(SCORE_SUFFIX):
            key = (datadog.get("annotation_id"), annotation.name[: -len(SCORE_SUFFIX)])
            partner = by_key.get(key)
            if partner is not None:
                base = folded.get(partner.id, partner)
                folded[partner.id] = base.model_copy(update={"score": annotation.score})
                continue
        out.append(annotation)
    return [folded.get(a.id, a) for a in out]
