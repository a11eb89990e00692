"""Datadog ↔ canonical annotations: pure functions, no I/O.

Contract (SPEC §2): :func:`to_records` turns one validated interaction (:mod:`.wire`) into the
compact records (:mod:`annotation_gateway.records`) of its canonical annotations — one per
non-empty label value, id
``{source}:{annotation id}:{label_schema_id}``; name = ``name_when_saved``, else the queue's
label schema (:class:`QueueLabels`, given by the caller), else the ``label_schema_id``; value
per :func:`map_label_value`'s table. ``label_values`` may be the array Datadog sends or the
legacy ``{label name: value}`` object. Zero-time (``0001-01-01T00:00:00Z``) annotation
timestamps fall back to the interaction's. Annotator: ``HUMAN``, the annotation's creator.
Nothing Datadog sends is dropped silently: fields this module does not know are kept in
``extensions.datadog`` under ``interaction``, ``annotation`` and ``label_value``, by the level of
the answer they came on. A value of the wrong type for its label is a
:class:`~annotation_gateway.errors.SourceProtocolError` naming the field.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from annotation_gateway.errors import SourceProtocolError
from annotation_gateway.model import AnnotatorKind
from annotation_gateway.providers.base import unknown_fields
from annotation_gateway.providers.datadog.wire import (
    AnnotationExtras,
    InteractionExtras,
    LabelSchema,
    StrictAnnotation,
    StrictInteraction,
)
from annotation_gateway.records import Record, RecordBuilder, held_json

__all__ = [
    "NO_LABELS",
    "LabelValueError",
    "MappedValue",
    "QueueLabels",
    "infer_label_type",
    "map_label_value",
    "needs_schema",
    "to_records",
]

_intern = sys.intern
_HUMAN = AnnotatorKind.HUMAN.value


@dataclass(frozen=True, slots=True)
class QueueLabels:
    """A queue's label schema, indexed for name and type resolution."""

    by_id: Mapping[str, LabelSchema]
    by_name: Mapping[str, LabelSchema]

    @classmethod
    def of(cls, labels: Iterable[LabelSchema]) -> QueueLabels:
        labels = list(labels)
        return cls(
            by_id={label.id: label for label in labels if label.id},
            by_name={label.name: label for label in labels},
        )


NO_LABELS = QueueLabels(by_id={}, by_name={})


class DatadogFields(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """``extensions.datadog`` of a record, held as a struct msgspec writes with the record:
    most of it (the label schema, who modified it, the content id, the keys) is what the
    interaction's other records share, which this holds once instead of as ~330 bytes of JSON
    each. The optional fields (:class:`DatadogMoreFields`) are written only when present, after
    these; the fields this module does not know are kept as the JSON orjson wrote."""

    interaction_id: str
    annotation_id: str
    label_schema_id: str
    label_type: str
    assessment: str | None
    modified_by: str | None
    can_annotate: bool
    content_id: str


class DatadogMoreFields(DatadogFields, frozen=True, gc=False, omit_defaults=True):
    """:class:`DatadogFields` with the optional ones, written after them when present (a
    separate class so that the common record does not hold six empty slots: 48 bytes)."""

    values: list[str] | None = None
    reasoning: str | None = None
    label_type_inferred: bool = False
    interaction: msgspec.Raw | None = None
    annotation: msgspec.Raw | None = None
    label_value: msgspec.Raw | None = None


class DatadogExtensions(msgspec.Struct, frozen=True, gc=False):
    """A Datadog record's ``extensions``: ``{"datadog": {...}}``."""

    datadog: DatadogFields | DatadogMoreFields


def _extra(fields: Mapping[str, Any] | None) -> msgspec.Raw | None:
    """Unknown fields as the JSON a record holds for any other canonical JSON value."""
    return held_json(fields) if fields else None


class MappedValue(NamedTuple):
    """Where one Datadog label value lands in the canonical model. (A named tuple built with
    positional arguments: one is made per label value read; a frozen dataclass costs ~1.5 µs
    to build, this ~0.34, with keyword arguments ~0.54.)"""

    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    values: list[str] | None = None
    """The categorical choices, in order (kept in ``extensions.datadog.values``)."""


class LabelValueError(Exception):
    """A label value of the wrong type; the caller names the field."""


_NUMBERS = (int, float)
"""The types of a score label's value that map straight to the score (not ``bool``: ``type()``)."""


def _all_choices(value: list[Any]) -> bool:
    """Whether a categorical value is a list of non-empty strings, one or more (what
    :func:`map_label_value` keeps whole)."""
    if not value:
        return False
    for choice in value:  # noqa: SIM110 - all(<generator>) costs ~0.4 µs more (see map_label_value)
        if type(choice) is not str or not choice:
            return False
    return True


def _is_unset(value: Any) -> bool:
    return value is None or value == "" or value == []


def infer_label_type(value: Any) -> str:
    """The label type a value implies when neither the answer nor the schema says.

    A bare string is taken as a categorical choice: Datadog's own example (``"value": "good"``)
    is one, and a label compares like a category while an explanation does not.
    """
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "score"
    return "categorical"


def map_label_value(label_type: str, value: Any, reasoning: str | None) -> MappedValue | None:
    """Map one Datadog label value onto canonical fields; None when the value is unset.

    =============  ==========================================================================
    score          ``score`` = value; ``explanation`` = reasoning
    boolean        ``label`` = "true"/"false", ``score`` = 1.0/0.0; ``explanation`` = reasoning
    categorical    ``label`` = the choices joined with ", " (in order), ``values`` = the list;
                   ``explanation`` = reasoning
    text           ``explanation`` = value (reasoning is kept in extensions by the caller)
    =============  ==========================================================================

    Raises ``LabelValueError`` for a value of the wrong type for its label.
    """
    if _is_unset(value):
        return None
    why = reasoning or None
    if label_type == "score":
        if isinstance(value, bool):
            raise LabelValueError("expected a number for a score label")
        if isinstance(value, int | float):
            return MappedValue(None, float(value), why)
        if isinstance(value, str):
            try:
                return MappedValue(None, float(value), why)
            except ValueError:
                pass
        raise LabelValueError("expected a number for a score label")
    if label_type == "boolean":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise LabelValueError("expected true or false for a boolean label")
        return MappedValue("true" if value else "false", 1.0 if value else 0.0, why)
    if label_type == "categorical":
        if isinstance(value, str):
            choices = [value] if value else []
        elif isinstance(value, list):
            # A loop, not all(<generator>): the generator cost ~0.4 µs a label value (3 % of a
            # 10,000-id search's samples).
            choices = []
            for choice in value:
                if not isinstance(choice, str):
                    raise LabelValueError("expected a string or a list of strings for a categorical label")
                if choice:
                    choices.append(choice)
        else:
            raise LabelValueError("expected a string or a list of strings for a categorical label")
        if not choices:
            return None
        return MappedValue(", ".join(choices), None, why, choices)
    if label_type == "text":
        if not isinstance(value, str):
            raise LabelValueError("expected a string for a text label")
        return MappedValue(None, None, value)
    raise LabelValueError(f"unknown label type {label_type!r}")


_Entry = tuple[str, str | None, str | None, Any, str | None, str | None, int | str, Mapping[str, Any] | None]
"""One label value, whichever form ``label_values`` came in: label schema id, name, type, value,
assessment, reasoning, where it is (its index in the array form, its label name in the object
form, for error messages) and the fields of it this module does not know (kept in extensions).
A plain tuple, unpacked by :func:`to_records`: a named tuple cost ~0.35 µs a label value."""


_KNOWN_LEGACY_VALUE_FIELDS = frozenset({"value", "assessment", "reasoning"})


def _entries(
    annotation: StrictAnnotation, extras: AnnotationExtras | None, labels: QueueLabels
) -> list[_Entry]:
    values = annotation.label_values
    if isinstance(values, list):
        value_extras = () if extras is None else extras.label_values
        return [
            (
                item.label_schema_id,
                item.name_when_saved or None,
                item.type or None,
                item.value,
                item.assessment or None,
                item.reasoning,
                index,
                value_extras[index] if value_extras else None,
            )
            for index, item in enumerate(values)
        ]
    # Legacy object form {label name: value}: the schema gives the id and the type back.
    entries: list[_Entry] = []
    for name, value in values.items():
        label = labels.by_name.get(name)
        assessment = reasoning = None
        extra: dict[str, Any] | None = None
        if isinstance(value, dict):
            if "value" not in value:
                raise LabelValueError(f"label_values.{name}: expected a value")
            assessment, reasoning = value.get("assessment"), value.get("reasoning")
            extra = unknown_fields(value, _KNOWN_LEGACY_VALUE_FIELDS)
            value = value["value"]
        entries.append(
            (
                label.id if label and label.id else name,
                name,
                label.type if label else None,
                value,
                assessment if isinstance(assessment, str) else None,
                reasoning if isinstance(reasoning, str) else None,
                name,
                extra,
            )
        )
    return entries


def needs_schema(annotation: StrictAnnotation) -> bool:
    values = annotation.label_values
    if isinstance(values, dict):
        return bool(values)
    return any(not v.name_when_saved or not v.type for v in values)


def _is_zero_time(value: datetime) -> bool:
    return value.year <= 1


def _without_annotations(raw_interaction: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw_interaction.items() if k != "annotations"}


def _where(interaction_id: str, index: int) -> str:
    """Where an annotation is in the answer, for an error message (built only for one)."""
    return f"annotated_interactions[{interaction_id}].annotations.{index}"


def to_records(
    interaction: StrictInteraction,
    extras: InteractionExtras | None,
    raw: Mapping[str, Any] | None,
    labels: QueueLabels,
    builder: RecordBuilder,
) -> Iterator[Record]:
    """The compact records of the canonical annotations of one validated interaction (module
    docstring), made by ``builder`` (one for the records of a read); ``extras`` are the fields
    of it this module does not know (``None``: none), ``raw`` the interaction as received when
    the read asks for ``include=raw`` (each record then carries it), else ``None``."""
    # No model object is built: the page is validated strictly, so every value below already
    # has the canonical type, and the records are made directly. What every label value
    # of an annotation shares (times, annotator, the interaction's fields) is worked out once
    # per annotation, not once per label value.
    interaction_id = interaction.id
    content_id = interaction.content_id
    queue_id = interaction.queue_id
    queue_name = interaction.queue_name or None
    can_annotate = interaction.can_annotate
    subject_kind = interaction.type
    interaction_json = None if extras is None else _extra(extras.interaction)  # held once, shared
    annotation_extras = None if extras is None else extras.annotations
    raw_interaction = None if raw is None else _without_annotations(raw)
    source = builder.source
    record = builder.record
    prefix = builder.id_prefix
    for index, annotation in enumerate(interaction.annotations):
        created = annotation.created_at
        if _is_zero_time(created):
            created = interaction.created_at
        updated = annotation.modified_at
        if _is_zero_time(updated):
            updated = interaction.modified_at
        annotation_id = annotation.id
        annotator_id = annotation.created_by or None
        modified_by = annotation.modified_by or None
        more = None if annotation_extras is None else annotation_extras[index]
        annotation_json = None if more is None else _extra(more.annotation)
        plain = interaction_json is None and annotation_json is None
        raw_document = (
            None if raw is None else {"annotation": raw["annotations"][index], "interaction": raw_interaction}
        )
        try:
            entries = _entries(annotation, more, labels)
        except LabelValueError as exc:
            where = _where(interaction_id, index)
            raise SourceProtocolError(f"{source}: {where}.{exc}", source=source) from None
        for label_schema_id, entry_name, entry_type, value, assessment, reasoning, key, extra in entries:
            if entry_name and entry_type:  # as Datadog answers today: the schema is not needed
                name, label_type, inferred = entry_name, entry_type, False
            else:
                label = labels.by_id.get(label_schema_id) or (
                    labels.by_name.get(entry_name) if entry_name else None
                )
                name = entry_name or (label.name if label else None) or label_schema_id
                declared = entry_type or (label.type if label else None)
                inferred = declared is None
                label_type = declared or infer_label_type(value)
            text: str | None
            score: float | None
            values: list[str] | None
            # The common values: map_label_value's cases for them, without its calls and its
            # named tuple (~0.4 µs a label value).
            if label_type == "score" and type(value) in _NUMBERS:
                text, score, explanation, values = None, float(value), reasoning or None, None
            elif label_type == "boolean" and type(value) is bool:
                text, score, explanation = "true" if value else "false", float(value), reasoning or None
                values = None
            elif label_type == "categorical" and type(value) is list and _all_choices(value):
                text, score, explanation, values = ", ".join(value), None, reasoning or None, value
            else:
                try:
                    found = map_label_value(label_type, value, reasoning)
                except LabelValueError as exc:
                    raise SourceProtocolError(
                        f"{source}: {_where(interaction_id, index)}.label_values.{key}.value: {exc}",
                        source=source,
                    ) from None
                if found is None:
                    continue
                text, score, explanation, values = found
            label_schema_id = _intern(label_schema_id)
            label_type = _intern(label_type)
            text_reasoning = reasoning if label_type == "text" and reasoning else None
            known = (
                interaction_id,
                annotation_id,
                label_schema_id,
                label_type,
                assessment,
                modified_by,
                can_annotate,
                content_id,
            )
            if values is None and text_reasoning is None and not inferred and plain and not extra:
                fields: DatadogFields = DatadogFields(*known)
            else:
                fields = DatadogMoreFields(
                    *known,
                    values,
                    text_reasoning,
                    inferred,
                    # Fields newer than this module: kept, not dropped (SPEC §2), by level.
                    interaction_json,
                    annotation_json,
                    _extra(extra),
                )
            datadog = DatadogExtensions(fields)
            yield record(
                f"{prefix}{annotation_id}:{label_schema_id}",
                subject_kind,
                content_id,
                None,
                name,
                text,
                score,
                explanation,
                _HUMAN,
                annotator_id,
                "",
                None,
                queue_id,
                queue_name,
                created,
                updated,
                datadog,
                raw_document,
            )
