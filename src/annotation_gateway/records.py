"""Compact canonical records: what the read path caches, merges, pages and streams.

Contract:
- a :class:`Record` is one canonical annotation (SPEC §2) held as its JSON, encoded once, plus
  the few fields that ordering, filters, grouping and aggregation read (so none of them parses
  the JSON): ``id``, ``updated_us``/``created_us`` (µs since the epoch, UTC), ``source``,
  ``provider``, ``subject_kind``, ``subject_id``, ``project``, ``name``, ``label``, ``score``,
  ``annotator_kind``, ``annotator_id``, ``identifier``, ``queue_id``, ``queue_name``. It is
  immutable; ``json`` is exactly what the API writes for it (``raw`` only when the read that
  produced it asked for ``include=raw``);
- low-cardinality strings (source, provider, kinds, names, labels, projects, queue names,
  annotators) are interned, so a million records share one copy of each, and so are subject
  ids, so a subject's records share one;
- :func:`build_record` builds a record straight from a provider's mapped values (no model
  object: what the read path should use), the times worked out once as :class:`Stamps`;
  :func:`record_of` builds one from a canonical :class:`~annotation_gateway.model.Annotation`
  and :meth:`Record.annotation` rebuilds the annotation from the JSON (for the few consumers
  that want the model: compare, the CLI's tables). :func:`sort_key` is the answer order.

Why: the first release held every cached answer as pydantic object graphs, ~4.2 KB per
annotation (six times its JSON), and serialized them one by one per page. A record is its JSON
and a handful of references (see ``bench/`` for what it measures).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import orjson

from annotation_gateway.model import Annotation, to_utc

__all__ = [
    "Record",
    "Stamps",
    "build_record",
    "decode",
    "micros",
    "record_of",
    "sort_key",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_intern = sys.intern


class Record(msgspec.Struct, frozen=True, gc=False, eq=False):
    """One canonical annotation: its JSON and the fields the read path reads.

    A msgspec ``Struct`` (``frozen``, ``gc=False``), not a dataclass: built in C (~0.13 µs
    against 0.33 for a slots dataclass without ``frozen=True`` and 4.85 with it), immutable at
    run time, and not tracked by the cyclic garbage collector — a record holds only strings,
    numbers and bytes, so it can never be part of a cycle, and the collector's full passes no
    longer walk every cached annotation (100,000 of them after the bench's 10,000-id search).
    """

    id: str
    updated_us: int
    created_us: int
    source: str
    provider: str
    subject_kind: str
    subject_id: str
    project: str | None
    name: str
    label: str | None
    score: float | None
    annotator_kind: str
    annotator_id: str | None
    identifier: str
    queue_id: str | None
    queue_name: str | None
    json: bytes

    def annotation(self) -> Annotation:
        """The canonical model of this record (validated from its JSON)."""
        return Annotation.model_validate_json(self.json)

    def as_dict(self) -> dict[str, Any]:
        """The record's JSON as a dict (for writers that need every field, e.g. CSV)."""
        parsed: dict[str, Any] = orjson.loads(self.json)
        return parsed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self.json == other.json

    def __hash__(self) -> int:
        return hash(self.id)


def micros(value: datetime) -> int:
    """µs since the epoch of an aware datetime (the unit of ``updated_us``/``created_us``)."""
    return (value - _EPOCH) // _MICROSECOND


def record_of(annotation: Annotation, *, include_raw: bool = False) -> Record:
    """The compact record of ``annotation`` (``raw`` kept only with ``include_raw``): the same
    :func:`build_record` the providers use, fed from the model."""
    subject, annotator, queue = annotation.subject, annotation.annotator, annotation.queue
    return build_record(
        id=annotation.id,
        source=annotation.source,
        provider=annotation.provider.value,
        subject_kind=subject.kind.value,
        subject_id=subject.id,
        project=subject.project,
        name=annotation.name,
        label=annotation.label,
        score=annotation.score,
        explanation=annotation.explanation,
        annotator_kind=annotator.kind.value,
        annotator_id=annotator.id,
        identifier=annotation.identifier,
        metadata=annotation.metadata,
        queue_id=None if queue is None else queue.id,
        queue_name=None if queue is None else queue.name,
        stamps=Stamps.of(annotation.created_at, annotation.updated_at),
        extensions=annotation.extensions,
        raw=annotation.raw if include_raw else None,
    )


_DUMP = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z


class Stamps(NamedTuple):
    """An annotation's two times, in UTC and in µs since the epoch: worked out once per vendor
    annotation, though Datadog gives one record per label value of it."""

    created_at: datetime
    updated_at: datetime
    created_us: int
    updated_us: int

    @classmethod
    def of(cls, created_at: datetime, updated_at: datetime) -> Stamps:
        """The stamps of two aware (or naive-UTC) datetimes."""
        created_at, updated_at = to_utc(created_at), to_utc(updated_at)
        return cls(created_at, updated_at, micros(created_at), micros(updated_at))


def build_record(
    id: str,
    source: str,
    provider: str,
    subject_kind: str,
    subject_id: str,
    project: str | None,
    name: str,
    label: str | None,
    score: float | None,
    explanation: str | None,
    annotator_kind: str,
    annotator_id: str | None,
    identifier: str,
    metadata: dict[str, Any],
    queue_id: str | None,
    queue_name: str | None,
    stamps: Stamps,
    extensions: dict[str, dict[str, Any]],
    raw: dict[str, Any] | None,
) -> Record:
    """A record straight from a provider's mapped values, without building the canonical model:
    the JSON is written by orjson in the model's field order and format (RFC 3339 UTC with
    ``Z``, microseconds only when present; ``raw`` only when given), byte for byte what
    :func:`record_of` writes for the same annotation (``tests/test_records.py`` checks it).

    The values must already be valid canonical values (a provider validated the vendor's wire
    shape first); the times come as :class:`Stamps`. The providers call it once per annotation
    read (100,000 times for a 10,000-id search), with positional arguments: binding 19 keyword
    arguments cost ~1.2 µs a call on this machine, 19 positional ones ~0.15.
    """
    if score is not None:
        score = float(score)  # a vendor's integer score is the canonical number 1.0, as pydantic writes it
    document: dict[str, Any] = {
        "id": id,
        "source": source,
        "provider": provider,
        "subject": {"kind": subject_kind, "id": subject_id, "project": project},
        "name": name,
        "label": label,
        "score": score,
        "explanation": explanation,
        "annotator": {"kind": annotator_kind, "id": annotator_id},
        "identifier": identifier,
        "metadata": metadata,
        "queue": None if queue_id is None else {"id": queue_id, "name": queue_name},
        "created_at": stamps.created_at,
        "updated_at": stamps.updated_at,
        "extensions": extensions,
    }
    if raw is not None:
        document["raw"] = raw
    # Positional, in the field order; the optional strings interned inline (a helper function
    # per field was five calls a record).
    return Record(
        id,
        stamps.updated_us,
        stamps.created_us,
        _intern(source),
        _intern(provider),
        _intern(subject_kind),
        _intern(subject_id),  # Phoenix gives every row its own copy; a subject's records share one
        None if project is None else _intern(project),
        _intern(name),
        None if label is None else _intern(label),
        score,
        _intern(annotator_kind),
        None if annotator_id is None else _intern(annotator_id),
        _intern(identifier),
        None if queue_id is None else _intern(queue_id),
        None if queue_name is None else _intern(queue_name),
        # orjson's answer keeps its 4 KiB write buffer (measured: 4,097 bytes held per 500-byte
        # document with orjson 3.13); a record lives in the cache, so it keeps an exact copy
        # (0.3 µs) — without it a cached annotation cost ~8.5 KB instead of ~1 KB.
        bytes(memoryview(_DUMP(document, option=_UTC_Z))),
    )


def decode(records: list[Record]) -> list[Annotation]:
    """The canonical models of ``records``, in order."""
    return [record.annotation() for record in records]


def sort_key(record: Record) -> tuple[int, str]:
    """Ascending order of this key is ``updated_at`` descending, then ``id`` ascending."""
    return (-record.updated_us, record.id)
