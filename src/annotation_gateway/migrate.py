"""Copy annotations from one vendor to the other, safely and repeatably (issue 6, item 3).

Contract
--------
:func:`migrate` reads the *source*'s canonical annotations for ``subject_ids`` in batches of
``batch_size`` subjects (at most ``concurrency`` batches in flight), renames them through
``name_map`` (source name → target name) and makes the *target* hold the same judgements. It
returns a :class:`MigrationReport`; it never deletes anything in the target. A whole scope
(``--scope all``, SPEC §7) is migrated by discovering its subject ids first
(:func:`scope_subject_ids`) and keying the checkpoint by ``SCOPE_CHECKPOINT_KEY`` rather than the
id list, so a resumed run also takes subjects that appeared meanwhile.

How the target is written is chosen from what the target can do, not from its class:

* a target whose ``capabilities.writable_kinds`` is non-empty (Phoenix) gets ordinary upserts
  through :meth:`AnnotationProvider.write` (:class:`_UpsertWriter`);
* a read-only target that offers annotation-queue operations (:class:`QueueTarget`: Datadog)
  is written through annotation queues (:class:`_QueueWriter`);
* anything else raises :class:`~annotation_gateway.errors.UnsupportedError` before any I/O.

Each source annotation gets exactly one outcome, counted in the report:

``written``    the target did not have it;
``updated``    the target had it (same upsert key) with other values;
``unchanged``  the target already had exactly these values: nothing is sent. The target is read
               *before* writing, so a second run over the same data writes nothing;
``failed``     with a reason (a kind the target cannot hold, a subject the target does not know,
               a value the target refuses, a Datadog label of another type...);
``skipped``    counted in ``skipped_copies``: the annotation is itself a copy an earlier
               migration made *from the target* (see below). Not written, not a failure.

So ``annotations_read`` = written + updated + unchanged + failed + skipped_copies.

Copies never go back where they came from
    When migrating S → T, a source annotation whose provenance
    (:func:`annotation_gateway.provenance.origin`: ``metadata.migrated_from`` in Phoenix, the
    ``migrated_from: {json}`` reasoning line in Datadog) names T as its source is skipped and
    counted in ``skipped_copies`` — in a dry run too. A copy is not an independent judgement:
    migrating S → T and later T → S would otherwise write T's annotations into T a second time
    (new ``migrated-from-S`` queues in Datadog, new identifiers in Phoenix), where they would
    count as T agreeing with itself. Only copies of the target are skipped: a copy that came
    from a third source is migrated like any other annotation.

Upsert into Phoenix (Datadog → Phoenix)
    Every canonical annotation becomes a Phoenix session or trace annotation of the same subject
    (other kinds fail, with why). ``identifier`` is derived from the source annotation, so a
    re-run updates the same Phoenix row instead of adding one (Phoenix upserts by (name,
    subject, identifier)): ``dd:{annotation_id}:{label_schema_id}`` for a Datadog annotation —
    one Datadog annotation is one user's review of one interaction (queue + content id), and
    one label of it is one canonical annotation — otherwise ``{provider}:{native id}``
    (:func:`derive_identifier`). ``annotator_kind`` is kept (``UNKNOWN``, which Phoenix refuses,
    becomes ``HUMAN``); everything else Phoenix has no field for goes into
    ``metadata["migrated_from"]``: source, provider, canonical id, annotator id (the Datadog
    user), annotator kind, queue, and the Datadog label type/assessment/values
    (:func:`provenance`; :mod:`annotation_gateway.provenance` reads it back). Subjects Phoenix
    does not know are **reported** in ``missing_subjects`` and their annotations fail; the
    batch is retried without them so the rest still lands (Phoenix writes are all-or-nothing).

Annotation queues (Phoenix → Datadog)
    Datadog keeps one annotation per (interaction, user), an interaction being a content id in a
    queue, and each annotation holds one value per label of the queue's label schema. Phoenix
    keeps one annotation per (name, subject, identifier). So:

    * queue ↔ identifier: annotations with identifier ``""`` go to the queue
      ``migrated-from-{source}``, identifier ``x`` to ``migrated-from-{source}:x`` (created on
      first use in ``queue_project_id``, reused after). Datadog's cross-queue read returns every
      queue, so several reviewers of one (subject, name) stay several annotations;
    * subject ↔ interaction: the subject id is the content id, type ``session`` or ``trace``
      (spans fail: Datadog queues take no spans);
    * name ↔ label: the label schema is derived from the data and extended as new values appear:
      a name with labels becomes a ``categorical`` label (its observed values; a score of the
      same annotation goes to a ``score`` label ``{name}_score``), a name with only scores a
      ``score`` label, a name with only explanations a ``text`` label. Every migrated label has
      ``has_reasoning``. A name whose type conflicts with the existing label fails, with why;
      names Datadog refuses (``^[a-zA-Z0-9_-]+$``) fail too — map them with ``name_map``.

    **What Datadog cannot keep**: annotations belong to the owner of the API/application key
    that writes them, so the original annotator, the Phoenix identifier and the Phoenix id are
    written into ``reasoning`` after the explanation, as one line
    ``migrated_from: {json}`` (:data:`PROVENANCE_MARKER`, formatted and read by
    :mod:`annotation_gateway.provenance`); annotator kind, metadata and
    timestamps have no place in Datadog except that line. The migrating key's user is learnt
    from the queue's creator and from upsert answers; only that user's annotations count as
    "already there". Values of that user's annotation that this run does not touch are sent
    back unchanged (an upsert replaces the whole annotation), so nothing is deleted.

Batches, concurrency and the checkpoint
    Subjects are de-duplicated (first occurrence kept) and cut into batches. With
    ``checkpoint``, a JSON file is rewritten atomically (temporary file + ``os.replace``) after
    every completed batch: the subjects done so far and the running totals. A later run with the
    same file, source, target, name map and subject list skips those subjects and reports totals
    over the whole migration; because every write is an upsert keyed deterministically, a batch
    that was in flight when the run died is simply written again, and the resumed run ends in
    the same state as one clean run. A checkpoint of a finished run starts a fresh run; one made
    for another source/target/name map/subject list raises :class:`CheckpointMismatchError`.
    ``dry_run`` reads and classifies but writes nothing (no queues, no labels, no checkpoint);
    it cannot see subjects missing in Phoenix (Phoenix checks them only when writing).

    A vendor failure (after the providers' own retries) stops the run with that error: resume
    from the checkpoint. ``progress`` is called after each batch (from the event loop, with a
    :class:`MigrationProgress`); an exception it raises stops the run the same way.

Checking the result
    :func:`verify` compares the migrated subjects between source and target with
    :func:`~annotation_gateway.compare.compare`, on what was copied: on the source side only
    the kinds the target can hold, without the ``skipped_copies`` (copies of the target's own
    annotations); on the target side only what migrate wrote (Phoenix rows whose
    ``metadata.migrated_from.source`` is the source; Datadog annotations in the
    ``migrated-from-{source}`` queues, with ``{name}_score`` folded back into ``{name}``).
    Since the target side consists of copies of the source, verify asks compare to include
    copies (``include_copies=True``), which a user's compare leaves out by default.
    Compare pairs by (subject, name) on label and score; explanations are never compared
    (Datadog's carries the provenance line), nor are annotator, identifier or timestamps, which
    cannot survive the trip. Each copy is given its original's timestamps first (found through
    its provenance), because compare breaks a tie between reviewers' labels by recency and a
    copy's own timestamp is the time of the migration.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from annotation_gateway.compare import CompareRequest, CompareResult, compare
from annotation_gateway.concurrency import run_bounded
from annotation_gateway.errors import (
    RequestValidationError,
    SourceNotFoundError,
    UnsupportedError,
)
from annotation_gateway.federation.limits import MAX_SCOPE_SUBJECTS
from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, SubjectKind
from annotation_gateway.provenance import PROVENANCE_MARKER, copied_from, origin, reasoning_line
from annotation_gateway.providers.base import AnnotationProvider, ScopeRequest, SourceQuery
from annotation_gateway.providers.datadog import (
    AnnotationUpsert,
    DatadogQueue,
    DatadogQueues,
    LabelSchema,
    LabelValueInput,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "PROVENANCE_MARKER",
    "CheckpointMismatchError",
    "MigrationFailure",
    "MigrationProgress",
    "MigrationReport",
    "Outcome",
    "QueueTarget",
    "derive_identifier",
    "migrate",
    "migration_queue_name",
    "provenance",
    "verify",
]

DEFAULT_BATCH_SIZE = 100
"""Subjects per batch: one source read and one target write each (Phoenix reads 100 ids in ~0.1 s)."""
DEFAULT_CONCURRENCY = 4
"""Batches in flight at once; each provider also caps its own requests."""
CHECKPOINT_VERSION = 1
QUEUE_CALL_SIZE = 100
"""Interactions/annotations per Datadog queue call: keeps each request small."""
SCORE_SUFFIX = "_score"
"""Suffix of the score label that holds the score of an annotation whose name is categorical."""
DATADOG_LABEL_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
QUEUE_KINDS = frozenset({SubjectKind.SESSION, SubjectKind.TRACE, SubjectKind.EXPERIMENT_TRACE})
"""Kinds written as queue interactions by content id (a display block's id is derived from its
blocks, so it cannot be added by id)."""


# --- public models --------------------------------------------------------------------------


class Outcome(StrEnum):
    """What happened to one source annotation."""

    WRITTEN = "written"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


class MigrationFailure(BaseModel):
    """One source annotation (or subject) that was not copied, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject_id: str
    subject_kind: str | None = None
    name: str | None = Field(default=None, description="The annotation name in the source.")
    source_id: str | None = Field(default=None, description="The canonical id in the source.")
    reason: str


class MigrationProgress(BaseModel):
    """Where a run stands after one batch (what a CLI progress bar needs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batches_done: int
    batches_total: int
    subjects_done: int
    subjects_total: int
    written: int
    updated: int
    unchanged: int
    failed: int
    elapsed_s: float
    dry_run: bool

    def line(self) -> str:
        """One human line, e.g. for a terminal: ``batch 3/10 · 300/1000 subjects · ...``."""
        verb = "would write" if self.dry_run else "written"
        return (
            f"batch {self.batches_done}/{self.batches_total} · {self.subjects_done}/{self.subjects_total} "
            f"subjects · {verb} {self.written} · updated {self.updated} · unchanged {self.unchanged} "
            f"· failed {self.failed} · {self.elapsed_s:.1f} s"
        )


class MigrationReport(BaseModel):
    """The outcome of a migration (totals over the whole migration when resumed)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    method: str = Field(description="`upsert` (Phoenix target) or `annotation_queues` (Datadog target).")
    dry_run: bool
    subjects_total: int
    subjects_resumed: int = Field(description="Subjects skipped because the checkpoint had them done.")
    batches_total: int = Field(description="Batches this run processed (resumed subjects excluded).")
    annotations_read: int
    written: int
    updated: int
    unchanged: int
    failed: int
    skipped_copies: int = Field(
        description="Source annotations that are themselves copies of the target's annotations "
        "(their provenance names the target): never copied back, not failures."
    )
    failures: list[MigrationFailure]
    missing_subjects: list[str] = Field(description="Subjects the target does not know (not written).")
    queues: list[str] = Field(default_factory=list, description="Datadog queues written (queue target).")
    elapsed_s: float

    @property
    def changed(self) -> int:
        """Annotations the target gained or changed (what a re-run should bring to 0)."""
        return self.written + self.updated


class CheckpointMismatchError(ValueError):
    """The checkpoint file belongs to another migration (source, target, name map or subjects)."""


@runtime_checkable
class QueueTarget(Protocol):
    """A target written through annotation queues: Datadog, whose ``queues`` is its queue write API."""

    @property
    def name(self) -> str: ...

    async def fetch(self, query: SourceQuery) -> list[Annotation]: ...

    @property
    def queues(self) -> DatadogQueues: ...


# --- derivations (public so the CLI and docs can show them) ---------------------------------


def derive_identifier(annotation: Annotation) -> str:
    """The target identifier of a source annotation: stable across runs, unique per source value.

    Datadog: ``dd:{annotation_id}:{label_schema_id}`` (one user's annotation of one interaction,
    one label of it). Otherwise ``{provider}:{native id}``. The source *name* is left out on
    purpose: renaming a source in the config must not duplicate everything.
    """
    datadog = annotation.extensions.get("datadog") or {}
    annotation_id, label_id = datadog.get("annotation_id"), datadog.get("label_schema_id")
    if isinstance(annotation_id, str) and isinstance(label_id, str) and annotation_id and label_id:
        return f"dd:{annotation_id}:{label_id}"
    prefix = f"{annotation.source}:"
    native = annotation.id[len(prefix) :] if annotation.id.startswith(prefix) else annotation.id
    return f"{annotation.provider.value}:{native}"


def provenance(annotation: Annotation) -> dict[str, Any]:
    """What the target cannot hold in its own fields: ``{"migrated_from": {...}}``.

    Deterministic (no timestamps), so an unchanged source annotation compares equal next time.
    """
    found: dict[str, Any] = {
        "source": annotation.source,
        "provider": annotation.provider.value,
        "id": annotation.id,
        "annotator": annotation.annotator.id,
        "annotator_kind": annotation.annotator.kind.value,
    }
    if annotation.identifier:
        found["identifier"] = annotation.identifier
    if annotation.queue is not None:
        found["queue"] = {"id": annotation.queue.id, "name": annotation.queue.name}
    datadog = annotation.extensions.get("datadog")
    if datadog:
        for key in ("label_type", "assessment", "values", "interaction_id"):
            if datadog.get(key) is not None:
                found[key] = datadog[key]
    return {"migrated_from": found}


def migration_queue_name(source: str, identifier: str = "") -> str:
    """The Datadog queue that holds ``source``'s annotations with ``identifier``."""
    base = f"migrated-from-{source}"
    return base if not identifier else f"{base}:{identifier}"


# --- per-batch results ----------------------------------------------------------------------


@dataclass(slots=True)
class _BatchResult:
    read: int = 0
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    failures: list[MigrationFailure] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def ok(self, outcome: Outcome, n: int = 1) -> None:
        self.counts[outcome] += n

    def fail(self, annotation: Annotation, reason: str) -> None:
        self.counts[Outcome.FAILED] += 1
        self.failures.append(
            MigrationFailure(
                subject_id=annotation.subject.id,
                subject_kind=annotation.subject.kind.value,
                name=annotation.name,
                source_id=annotation.id,
                reason=reason,
            )
        )


class _Writer(Protocol):
    method: str

    async def apply(self, annotations: Sequence[Annotation], *, dry_run: bool) -> _BatchResult: ...

    def queues(self) -> list[str]: ...


def _kinds_text(kinds: Iterable[SubjectKind]) -> str:
    return ", ".join(sorted(k.value for k in kinds))


# --- upsert targets (Phoenix) ---------------------------------------------------------------


class _UpsertWriter:
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
                f"(it takes {_kinds_text(self._kinds)})"
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
            return f"not writable: {_first_line(str(exc))}"

    async def apply(self, annotations: Sequence[Annotation], *, dry_run: bool) -> _BatchResult:
        result = _BatchResult(read=len(annotations))
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
        self, planned: list[tuple[Annotation, AnnotationWrite, Outcome]], result: _BatchResult
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


# --- annotation-queue targets (Datadog) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    """One Datadog label value a source annotation becomes."""

    label: str
    value: bool | float | str | list[str]
    reasoning: str


@dataclass(slots=True)
class _QueueState:
    queue: DatadogQueue | None
    """None in a dry run when the queue does not exist yet."""
    labels: dict[str, LabelSchema]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _QueueWriter:
    """Writes through annotation queues: queue per identifier, label per name, one user."""

    method = "annotation_queues"

    def __init__(
        self,
        source: str,
        target: QueueTarget,
        name_map: Mapping[str, str],
        project_id: str | None,
    ) -> None:
        self._source = source
        self._target = target
        self._queues = target.queues
        self._names = name_map
        self._project_id = project_id
        self._states: dict[str, _QueueState] = {}
        self._known: dict[str, DatadogQueue] | None = None
        self._lock = asyncio.Lock()
        self._user: str | None = None
        """The key's user (who owns what we write); learnt from queues we create and upserts."""

    def queues(self) -> list[str]:
        return sorted(self._states)

    async def _state(self, name: str, *, dry_run: bool) -> _QueueState:
        async with self._lock:  # one creator per queue name, however many batches run
            state = self._states.get(name)
            if state is not None:
                return state
            if self._known is None:
                found = await self._queues.list_queues(project_id=self._project_id)
                self._known = {q.name: q for q in sorted(found, key=lambda q: q.created_at)}
            queue = self._known.get(name)
            if queue is None and not dry_run:
                if self._project_id is None:
                    raise UnsupportedError(
                        f"{self._target.name}: queue {name!r} does not exist yet; creating it needs "
                        "the Datadog LLM Observability project id (queue_project_id)"
                    )
                queue = await self._queues.create_queue(
                    name,
                    project_id=self._project_id,
                    description=f"Annotations migrated from {self._source} by annotation-gateway",
                )
                self._known[name] = queue
                self._user = self._user or queue.created_by
            labels: tuple[LabelSchema, ...] = ()
            if queue is not None:
                labels = queue.label_schemas or await self._queues.get_label_schema(queue.id)
                # A reused queue: its creator is our best guess until an upsert tells us.
                self._user = self._user or queue.created_by
            state = _QueueState(queue=queue, labels={label.name: label for label in labels})
            self._states[name] = state
            return state

    async def apply(self, annotations: Sequence[Annotation], *, dry_run: bool) -> _BatchResult:
        result = _BatchResult(read=len(annotations))
        groups: dict[str, list[Annotation]] = defaultdict(list)
        for annotation in annotations:
            reason = self._refusal(annotation)
            if reason is not None:
                result.fail(annotation, reason)
            else:
                groups[annotation.identifier].append(annotation)
        if not groups:
            return result
        existing = await self._target.fetch(
            SourceQuery(subject_ids=tuple(dict.fromkeys(a.subject.id for g in groups.values() for a in g)))
        )
        for identifier in sorted(groups):
            name = migration_queue_name(self._source, identifier)
            state = await self._state(name, dry_run=dry_run)
            await self._apply_queue(state, groups[identifier], existing, result, dry_run=dry_run)
        return result

    def _refusal(self, annotation: Annotation) -> str | None:
        if annotation.subject.kind not in QUEUE_KINDS:
            return (
                f"Datadog annotation queues take {_kinds_text(QUEUE_KINDS)} by content id, "
                f"not {annotation.subject.kind.value}"
            )
        name = self._names.get(annotation.name, annotation.name)
        if not DATADOG_LABEL_NAME.match(name):
            return f"Datadog label names must match {DATADOG_LABEL_NAME.pattern}; map {name!r} with name_map"
        if annotation.label is None and annotation.score is None and annotation.explanation is None:
            return "nothing to copy: no label, score or explanation"
        if annotation.label == "":
            return "Datadog cannot store an empty label"
        if annotation.score is not None and not math.isfinite(annotation.score):
            return "Datadog cannot store a non-finite score"
        return None

    async def _apply_queue(
        self,
        state: _QueueState,
        annotations: list[Annotation],
        existing: Sequence[Annotation],
        result: _BatchResult,
        *,
        dry_run: bool,
    ) -> None:
        annotations = sorted(annotations, key=lambda a: a.id)
        async with state.lock:  # the schema is replaced whole: one read-modify-write at a time
            values = self._plan_values(state, annotations, result)
            await self._extend_schema(state, values, dry_run=dry_run)
        queue = state.queue
        # The user's current annotation per interaction, as label_schema_id → value input.
        current: dict[tuple[str, str], dict[str, LabelValueInput]] = defaultdict(dict)
        if queue is not None:
            for old in existing:
                if old.queue is None or old.queue.id != queue.id:
                    continue
                if self._user is not None and old.annotator.id != self._user:
                    continue  # someone else's review in our queue: not ours to compare or keep
                wire = _wire_value(old)
                if wire is not None:
                    current[(old.subject.kind.value, old.subject.id)][wire.label_schema_id] = wire
        by_interaction: dict[tuple[str, str], list[tuple[Annotation, list[LabelValueInput], Outcome]]] = (
            defaultdict(list)
        )
        for annotation, planned in values:
            key = (annotation.subject.kind.value, annotation.subject.id)
            inputs = [self._input(state, value) for value in planned]
            have = current.get(key, {})
            if all(have.get(i.label_schema_id) == i for i in inputs):
                outcome = Outcome.UNCHANGED
            elif any(i.label_schema_id in have for i in inputs):
                outcome = Outcome.UPDATED
            else:
                outcome = Outcome.WRITTEN
            by_interaction[key].append((annotation, inputs, outcome))
        to_send: list[tuple[tuple[str, str], list[tuple[Annotation, list[LabelValueInput], Outcome]]]] = []
        for key, items in by_interaction.items():
            if all(outcome is Outcome.UNCHANGED for _, _, outcome in items):
                result.ok(Outcome.UNCHANGED, len(items))
            elif dry_run or queue is None:
                for _, _, outcome in items:
                    result.ok(outcome)
            else:
                to_send.append((key, items))
        if to_send and queue is not None:
            await self._send(queue, to_send, current, result)

    def _plan_values(
        self, state: _QueueState, annotations: list[Annotation], result: _BatchResult
    ) -> list[tuple[Annotation, list[_Value]]]:
        """Each annotation's label values, deciding the type of labels the queue lacks."""
        # A new name's type is decided over the whole batch, so one with labels anywhere is
        # categorical rather than fixed by whichever annotation came first.
        types = {name: label.type for name, label in state.labels.items()}
        for annotation in annotations:
            name = self._names.get(annotation.name, annotation.name)
            if annotation.label is not None:
                types.setdefault(name, "categorical")
        for annotation in annotations:
            name = self._names.get(annotation.name, annotation.name)
            types.setdefault(name, "score" if annotation.score is not None else "text")
        planned: list[tuple[Annotation, list[_Value]]] = []
        seen: dict[tuple[str, str, str], str] = {}
        for annotation in annotations:
            name = self._names.get(annotation.name, annotation.name)
            outcome = _values_for(annotation, name, types, _reasoning(annotation))
            if isinstance(outcome, str):
                result.fail(annotation, outcome)
                continue
            collisions = [
                seen[(annotation.subject.kind.value, annotation.subject.id, v.label)]
                for v in outcome
                if (annotation.subject.kind.value, annotation.subject.id, v.label) in seen
            ]
            if collisions:
                result.fail(annotation, f"Datadog label already taken on this subject by {collisions[0]}")
                continue
            for value in outcome:
                seen[(annotation.subject.kind.value, annotation.subject.id, value.label)] = annotation.id
            planned.append((annotation, outcome))
        return planned

    async def _extend_schema(
        self, state: _QueueState, planned: list[tuple[Annotation, list[_Value]]], *, dry_run: bool
    ) -> None:
        labels = dict(state.labels)
        changed = False
        for _, values in planned:
            for value in values:
                old = labels.get(value.label)
                if old is None:
                    labels[value.label] = _new_label(value, self._source)
                    changed = True
                    continue
                update: dict[str, Any] = {}
                if not old.has_reasoning:
                    update["has_reasoning"] = True
                if old.type == "categorical" and isinstance(value.value, list):
                    missing = [v for v in value.value if v not in (old.values or [])]
                    if missing:
                        update["values"] = [*(old.values or []), *missing]
                if update:
                    labels[value.label] = old.model_copy(update=update)
                    changed = True
        if not changed:
            return
        if dry_run or state.queue is None:
            state.labels = labels  # what the schema would become; ids unknown until written
            return
        stored = await self._queues.replace_label_schema(state.queue.id, list(labels.values()))
        state.labels = {label.name: label for label in stored}

    @staticmethod
    def _input(state: _QueueState, value: _Value) -> LabelValueInput:
        label = state.labels[value.label]
        # In a dry run a new label has no id yet; its name stands in (never sent).
        return LabelValueInput(
            label_schema_id=label.id or value.label, value=value.value, reasoning=value.reasoning
        )

    async def _send(
        self,
        queue: DatadogQueue,
        to_send: list[tuple[tuple[str, str], list[tuple[Annotation, list[LabelValueInput], Outcome]]]],
        current: Mapping[tuple[str, str], Mapping[str, LabelValueInput]],
        result: _BatchResult,
    ) -> None:
        interaction_ids: dict[tuple[str, str], str] = {}
        keys = [key for key, _ in to_send]
        for start in range(0, len(keys), QUEUE_CALL_SIZE):
            chunk = keys[start : start + QUEUE_CALL_SIZE]
            added = await self._queues.add_interactions(queue.id, chunk)
            for item in added:
                interaction_ids[(item.type, item.content_id)] = item.id
        upserts: list[AnnotationUpsert] = []
        members: dict[str, list[tuple[Annotation, Outcome]]] = {}
        for key, items in to_send:
            interaction_id = interaction_ids.get(key)
            if interaction_id is None:
                for annotation, _, _ in items:
                    result.fail(annotation, f"{self._target.name} did not add interaction {key[0]} {key[1]}")
                continue
            inputs = {i.label_schema_id: i for _, values, _ in items for i in values}
            # An upsert replaces the user's whole annotation: send back what we do not change.
            for label_id, old in current.get(key, {}).items():
                inputs.setdefault(label_id, old)
            upserts.append(
                AnnotationUpsert(interaction_id=interaction_id, label_values=list(inputs.values()))
            )
            members[interaction_id] = [(annotation, outcome) for annotation, _, outcome in items]
        for start in range(0, len(upserts), QUEUE_CALL_SIZE):
            sent = upserts[start : start + QUEUE_CALL_SIZE]
            answer = await self._queues.upsert_annotations(queue.id, sent)
            for written in answer.annotations:
                self._user = written.modified_by  # the key's user, as Datadog sees it
            errors = {e.interaction_id: e.error for e in answer.errors}
            for upsert in sent:
                for annotation, outcome in members.get(upsert.interaction_id, []):
                    if upsert.interaction_id in errors:
                        result.fail(
                            annotation, f"refused by {self._target.name}: {errors[upsert.interaction_id]}"
                        )
                    else:
                        result.ok(outcome)


def _values_for(
    annotation: Annotation, name: str, types: Mapping[str, str], reasoning: str
) -> list[_Value] | str:
    """The label values of one annotation given the queue's label types, or why it cannot go."""
    kind = types[name]
    where = f"Datadog label {name!r} is {kind}"
    values: list[_Value] = []
    if kind == "categorical":
        if annotation.label is not None:
            values.append(_Value(name, [annotation.label], reasoning))
        if annotation.score is not None:
            score_name = f"{name}{SCORE_SUFFIX}"
            if types.get(score_name, "score") != "score":
                return f"Datadog label {score_name!r} (for the score) is {types[score_name]}, not score"
            values.append(_Value(score_name, float(annotation.score), reasoning))
        if not values:
            return f"{where}; an annotation with only an explanation cannot go there"
    elif kind == "score":
        if annotation.label is not None:
            return f"{where}; this annotation has a label ({annotation.label!r})"
        if annotation.score is None:
            return f"{where}; this annotation has no score"
        values.append(_Value(name, float(annotation.score), reasoning))
    elif kind == "boolean":
        if annotation.label not in ("true", "false"):
            return f"{where}; this annotation's label is not true/false"
        values.append(_Value(name, annotation.label == "true", reasoning))
    else:  # text
        if annotation.label is not None or annotation.score is not None:
            return f"{where}; this annotation has a label or score"
        values.append(_Value(name, annotation.explanation or "", reasoning))
    return values


def _new_label(value: _Value, source: str) -> LabelSchema:
    description = f"migrated from {source}"
    if isinstance(value.value, list):
        return LabelSchema(
            name=value.label,
            type="categorical",
            values=list(value.value),
            has_reasoning=True,
            description=description,
        )
    if isinstance(value.value, bool):
        return LabelSchema(name=value.label, type="boolean", has_reasoning=True, description=description)
    if isinstance(value.value, float):
        return LabelSchema(name=value.label, type="score", has_reasoning=True, description=description)
    return LabelSchema(name=value.label, type="text", has_reasoning=True, description=description)


def _reasoning(annotation: Annotation) -> str:
    """The explanation, then one line with what Datadog has no field for (deterministic)."""
    line = reasoning_line(
        {
            "source": annotation.source,
            "id": annotation.id,
            "annotator": {"kind": annotation.annotator.kind.value, "id": annotation.annotator.id},
            "identifier": annotation.identifier,
        }
    )
    # A text label's value is the explanation itself; repeating it in reasoning would add nothing.
    if annotation.explanation and (annotation.label is not None or annotation.score is not None):
        return f"{annotation.explanation}\n\n{line}"
    return line


def _wire_value(annotation: Annotation) -> LabelValueInput | None:
    """A canonical Datadog annotation back as the label value that was written."""
    datadog = annotation.extensions.get("datadog") or {}
    label_id, label_type = datadog.get("label_schema_id"), datadog.get("label_type")
    if not isinstance(label_id, str):
        return None
    value: bool | float | str | list[str] | None
    reasoning = annotation.explanation
    if label_type == "categorical":
        found = datadog.get("values")
        value = list(found) if isinstance(found, list) else ([annotation.label] if annotation.label else None)
    elif label_type == "score":
        value = annotation.score
    elif label_type == "boolean":
        value = annotation.label == "true" if annotation.label is not None else None
    elif label_type == "text":
        value = annotation.explanation
        found_reasoning = datadog.get("reasoning")
        reasoning = found_reasoning if isinstance(found_reasoning, str) else None
    else:
        return None
    if value is None:
        return None
    assessment = datadog.get("assessment")
    return LabelValueInput(
        label_schema_id=label_id,
        value=value,
        assessment=assessment if assessment in ("pass", "fail") else None,
        reasoning=reasoning,
    )


# --- the checkpoint -------------------------------------------------------------------------


class _Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = CHECKPOINT_VERSION
    source: str
    target: str
    name_map: dict[str, str]
    subjects_total: int
    subjects_sha256: str
    finished: bool = False
    completed_subjects: list[str] = Field(default_factory=list)
    batches_done: int = 0
    annotations_read: int = 0
    counts: dict[Outcome, int] = Field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    skipped_copies: int = 0
    failures: list[MigrationFailure] = Field(default_factory=list)
    missing_subjects: list[str] = Field(default_factory=list)

    def save(self, path: Path) -> None:
        save_state(path, self)


def _subjects_digest(subject_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(subject_ids).encode()).hexdigest()


State = TypeVar("State", bound=BaseModel)


def save_state(path: Path, state: BaseModel) -> None:
    """Write a checkpoint or state file atomically: a crash leaves the old file or the new one,
    never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(state.model_dump_json(indent=1).encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_state(path: Path, fresh: State, identity: Sequence[str], *, kind: str, differs: str) -> State:
    """The state saved at ``path``, or ``fresh`` when there is none. A file that is not such a
    state (``kind``), or one that disagrees with ``fresh`` on the ``identity`` fields (it
    belongs to another run: ``differs`` says which), is a :class:`CheckpointMismatchError`."""
    if not path.exists():
        return fresh
    try:
        found = type(fresh).model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise CheckpointMismatchError(f"{path}: not a {kind} ({_first_line(str(exc))})") from None
    if any(getattr(found, name) != getattr(fresh, name) for name in identity):
        raise CheckpointMismatchError(
            f"{path} belongs to another {differs}; give another file or delete this one"
        )
    return found


def _load_checkpoint(path: Path, fresh: _Checkpoint) -> _Checkpoint:
    found = load_state(
        path,
        fresh,
        ("version", "source", "target", "name_map", "subjects_sha256"),
        kind="migrate checkpoint",
        differs="migration (source, target, name map or subject list differ)",
    )
    return fresh if found.finished else found


# --- the run --------------------------------------------------------------------------------


def _writer_for(
    source: AnnotationProvider,
    target: AnnotationProvider,
    name_map: Mapping[str, str],
    queue_project_id: str | None,
) -> _Writer:
    if target.capabilities.writable_kinds:
        return _UpsertWriter(source.name, target, name_map)
    if isinstance(target, QueueTarget):
        return _QueueWriter(source.name, target, name_map, queue_project_id)
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
    state = _Checkpoint(
        source=source.name,
        target=target.name,
        name_map=names,
        subjects_total=len(subjects),
        subjects_sha256=_subjects_digest(subjects if subjects_key is None else [subjects_key]),
    )
    use_checkpoint = checkpoint is not None and not dry_run
    if use_checkpoint and checkpoint is not None:
        state = _load_checkpoint(checkpoint, state)
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


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# --- verification ---------------------------------------------------------------------------


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
