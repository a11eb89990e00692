"""Migrating into annotation queues (Datadog).

Contract: :class:`QueueWriter` writes a batch to a target through its annotation queues
(:class:`QueueTarget`: Datadog): queue per identifier, label schema derived from the data and
extended as values appear, provenance in the reasoning line (see the package docstring).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from annotation_gateway.errors import (
    UnsupportedError,
)
from annotation_gateway.migrate.derive import migration_queue_name
from annotation_gateway.migrate.report import BatchResult, Outcome, kinds_text
from annotation_gateway.model import Annotation, SubjectKind
from annotation_gateway.provenance import reasoning_line
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.providers.datadog import (
    AnnotationUpsert,
    DatadogQueue,
    DatadogQueues,
    LabelSchema,
    LabelValueInput,
)


@runtime_checkable
class QueueTarget(Protocol):
    """A target written through annotation queues: Datadog, whose ``queues`` is its queue write API."""

    @property
    def name(self) -> str: ...

    async def fetch(self, query: SourceQuery) -> list[Annotation]: ...

    @property
    def queues(self) -> DatadogQueues: ...


QUEUE_CALL_SIZE = 100
"""Interactions/annotations per Datadog queue call: keeps each request small."""
SCORE_SUFFIX = "_score"
"""Suffix of the score label that holds the score of an annotation whose name is categorical."""
DATADOG_LABEL_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
QUEUE_KINDS = frozenset({SubjectKind.SESSION, SubjectKind.TRACE, SubjectKind.EXPERIMENT_TRACE})
"""Kinds written as queue interactions by content id (a display block's id is derived from its
blocks, so it cannot be added by id)."""


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


class QueueWriter:
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

    async def apply(self, annotations: Sequence[Annotation], *, dry_run: bool) -> BatchResult:
        result = BatchResult(read=len(annotations))
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
                f"Datadog annotation queues take {kinds_text(QUEUE_KINDS)} by content id, "
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
        result: BatchResult,
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
        self, state: _QueueState, annotations: list[Annotation], result: BatchResult
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
        result: BatchResult,
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
