"""A migration's checkpoint and state files.

Contract: the checkpoint of a run (:class:`Checkpoint`), written atomically after every
batch (:func:`save_state`) and read back only by the same migration (:func:`load_state`: another
one is a :class:`~.report.CheckpointMismatchError`); ``migrate --follow`` keeps its state file the
same way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from annotation_gateway.migrate.report import CheckpointMismatchError, MigrationFailure, Outcome, first_line

CHECKPOINT_VERSION = 1


class Checkpoint(BaseModel):
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


def subjects_digest(subject_ids: Sequence[str]) -> str:
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
        raise CheckpointMismatchError(f"{path}: not a {kind} ({first_line(str(exc))})") from None
    if any(getattr(found, name) != getattr(fresh, name) for name in identity):
        raise CheckpointMismatchError(
            f"{path} belongs to another {differs}; give another file or delete this one"
        )
    return found


def load_checkpoint(path: Path, fresh: Checkpoint) -> Checkpoint:
    found = load_state(
        path,
        fresh,
        ("version", "source", "target", "name_map", "subjects_sha256"),
        kind="migrate checkpoint",
        differs="migration (source, target, name map or subject list differ)",
    )
    return fresh if found.finished else found
