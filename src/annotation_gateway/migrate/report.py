"""What a migration reports.

Contract: the public models of a migration — each annotation's :class:`Outcome`, a
:class:`MigrationFailure` per failed one, the :class:`MigrationProgress` told after each batch and the
:class:`MigrationReport` a run returns — and :class:`BatchResult`, what one batch counted, and
:class:`Writer`, what writes a batch to a target (:mod:`.upsert`, :mod:`.queues`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from annotation_gateway.model import Annotation, SubjectKind


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


@dataclass(slots=True)
class BatchResult:
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


class Writer(Protocol):
    method: str

    async def apply(self, annotations: Sequence[Annotation], *, dry_run: bool) -> BatchResult: ...

    def queues(self) -> list[str]: ...


def kinds_text(kinds: Iterable[SubjectKind]) -> str:
    return ", ".join(sorted(k.value for k in kinds))


def first_line(text: str) -> str:
    """The first line of an error's text (what a failure reason or a message shows)."""
    return text.strip().splitlines()[0] if text.strip() else text
