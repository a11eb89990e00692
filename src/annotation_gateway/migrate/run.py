"""The migration run.

Contract: :func:`migrate`, the run: the writer chosen from the target's capabilities,
subjects de-duplicated and cut into batches, at most ``concurrency`` in flight, the checkpoint
rewritten after each, the report summed; :func:`scope_subject_ids` for ``--scope all``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from annotation_gateway.concurrency import run_bounded
from annotation_gateway.errors import (
    UnsupportedError,
)
from annotation_gateway.federation.limits import MAX_SCOPE_SUBJECTS
from annotation_gateway.migrate.checkpoint import Checkpoint, load_checkpoint, subjects_digest
from annotation_gateway.migrate.queues import QueueTarget, QueueWriter
from annotation_gateway.migrate.report import MigrationProgress, MigrationReport, Outcome, Writer
from annotation_gateway.migrate.upsert import UpsertWriter
from annotation_gateway.provenance import copied_from
from annotation_gateway.providers.base import AnnotationProvider, ScopeRequest, SourceQuery

DEFAULT_BATCH_SIZE = 100
"""Subjects per batch: one source read and one target write each (Phoenix reads 100 ids in ~0.1 s)."""
DEFAULT_CONCURRENCY = 4
"""Batches in flight at once; each provider also caps its own requests."""


def _writer_for(
    source: AnnotationProvider,
    target: AnnotationProvider,
    name_map: Mapping[str, str],
    queue_project_id: str | None,
) -> Writer:
    if target.capabilities.writable_kinds:
        return UpsertWriter(source.name, target, name_map)
    if isinstance(target, QueueTarget):
        return QueueWriter(source.name, target, name_map, queue_project_id)
    raise UnsupportedError(
        f"{target.name}: cannot migrate into this source: it takes no writes and has no annotation queues"
    )


SCOPE_CHECKPOINT_KEY = "scope=all"
"""What a ``--scope all`` checkpoint is keyed by instead of its subject list: the scope may grow
between runs (new sessions), and the resumed run then copies those too."""


async def scope_subject_ids(source: AnnotationProvider) -> list[str]:
    """The id of every subject in ``source``'s scope (SPEC §7), sorted: what ``--scope all``
    migrates. A Datadog scope narrowed to some queues names content ids, and migrating reads
    every annotation of those ids (the README says so)."""
    kinds = source.capabilities.scope_kinds
    if not kinds:
        raise UnsupportedError(f"{source.name}: this source has no scope to enumerate; give subject ids")
    found = await source.discover(
        ScopeRequest(subject_kinds=tuple(sorted(kinds)), max_subjects=MAX_SCOPE_SUBJECTS)
    )
    return list(dict.fromkeys(subject_id for subject_id, _ in found.subjects))


async def migrate(
    source: AnnotationProvider,
    target: AnnotationProvider,
    subject_ids: Sequence[str],
    *,
    name_map: Mapping[str, str] | None = None,
    dry_run: bool = False,
    checkpoint: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Callable[[MigrationProgress], None] | None = None,
    queue_project_id: str | None = None,
    subjects_key: str | None = None,
) -> MigrationReport:
    """Copy ``source``'s annotations of ``subject_ids`` into ``target`` (see the module docstring).

    ``subjects_key`` keys the checkpoint instead of the subject list (``SCOPE_CHECKPOINT_KEY``
    for a scope, whose list may grow between runs).

    ``queue_project_id`` is the Datadog LLM Observability project a new migration queue is
    created in (only needed when the target is written through queues and the queue is new).
    """
    if batch_size < 1 or concurrency < 1:
        raise ValueError("batch_size and concurrency must be at least 1")
    if source.name == target.name:
        raise ValueError("source and target must be different sources")
    started = time.perf_counter()
    subjects = list(dict.fromkeys(s for s in subject_ids if s))
    names = dict(name_map or {})
    writer = _writer_for(source, target, names, queue_project_id)
    state = Checkpoint(
        source=source.name,
        target=target.name,
        name_map=names,
        subjects_total=len(subjects),
        subjects_sha256=subjects_digest(subjects if subjects_key is None else [subjects_key]),
    )
    use_checkpoint = checkpoint is not None and not dry_run
    if use_checkpoint and checkpoint is not None:
        state = load_checkpoint(checkpoint, state)
    done = set(state.completed_subjects)
    resumed = len(done)
    remaining = [s for s in subjects if s not in done]
    batches = [remaining[i : i + batch_size] for i in range(0, len(remaining), batch_size)]
    lock = asyncio.Lock()
    batches_done = 0

    async def run(batch: list[str]) -> None:
        nonlocal batches_done
        annotations = sorted(await source.fetch(SourceQuery(subject_ids=tuple(batch))), key=lambda a: a.id)
        # A copy of the target's own annotation is not copied back (see the module docstring).
        originals = [a for a in annotations if not copied_from(a, target.name)]
        outcome = await writer.apply(originals, dry_run=dry_run)
        async with lock:  # totals and the checkpoint file change one batch at a time
            state.annotations_read += outcome.read + len(annotations) - len(originals)
            state.skipped_copies += len(annotations) - len(originals)
            for key, n in outcome.counts.items():
                state.counts[key] += n
            state.failures.extend(outcome.failures)
            state.missing_subjects.extend(s for s in outcome.missing if s not in state.missing_subjects)
            state.completed_subjects.extend(batch)
            state.batches_done += 1
            batches_done += 1
            if use_checkpoint and checkpoint is not None:
                state.save(checkpoint)
            if progress is not None:
                progress(
                    MigrationProgress(
                        batches_done=batches_done,
                        batches_total=len(batches),
                        subjects_done=len(state.completed_subjects),
                        subjects_total=len(subjects),
                        written=state.counts[Outcome.WRITTEN],
                        updated=state.counts[Outcome.UPDATED],
                        unchanged=state.counts[Outcome.UNCHANGED],
                        failed=state.counts[Outcome.FAILED],
                        elapsed_s=round(time.perf_counter() - started, 3),
                        dry_run=dry_run,
                    )
                )

    await run_bounded([run(batch) for batch in batches], concurrency)
    if use_checkpoint and checkpoint is not None:
        state.finished = True
        state.save(checkpoint)
    return MigrationReport(
        source=source.name,
        target=target.name,
        method=writer.method,
        dry_run=dry_run,
        subjects_total=len(subjects),
        subjects_resumed=resumed,
        batches_total=len(batches),
        annotations_read=state.annotations_read,
        written=state.counts[Outcome.WRITTEN],
        updated=state.counts[Outcome.UPDATED],
        unchanged=state.counts[Outcome.UNCHANGED],
        failed=state.counts[Outcome.FAILED],
        skipped_copies=state.skipped_copies,
        failures=state.failures,
        missing_subjects=state.missing_subjects,
        queues=writer.queues(),
        elapsed_s=round(time.perf_counter() - started, 3),
    )
