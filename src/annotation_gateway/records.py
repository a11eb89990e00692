"""Compact canonical records: what the read path caches, merges, pages and streams.

Contract:
- a :class:`Record` *is* one canonical annotation (SPEC §2): a msgspec ``Struct`` whose fields,
  in order, are the canonical document's, so that msgspec writes its JSON — one record
  (:attr:`Record.json`) or a whole page in one call (:func:`json_items`, :func:`json_lines`) —
  byte for byte what the canonical model writes (``tests/test_records.py`` holds it to pydantic's
  serializer). ``metadata``, ``extensions`` and ``raw`` (the last only when the read that
  produced the record asked for ``include=raw``) are held as the JSON orjson wrote for them once,
  when the record was built;
- the fields that ordering, filters, grouping and aggregation read are attributes, none of which
  parses anything: ``id``, ``source``, ``provider``, ``name``, ``label``, ``identifier`` directly;
  ``subject_kind``, ``subject_id``, ``project``, ``annotator_kind``, ``annotator_id``,
  ``queue_id``, ``queue_name``, ``score`` one attribute away; ``updated_us``/``created_us``
  (µs since the epoch, UTC) computed from the two times. It is immutable;
- low-cardinality strings (source, provider, kinds, names, labels, projects, queue names,
  annotators) are interned, so a million records share one copy of each, and so are subject ids;
  a record's subject, annotator and queue are small shared structs, reused while consecutive
  records have the same; repeated scores and short metadata are held once (bounded tables);
- a :class:`RecordBuilder` (one per page a provider maps) builds a record straight from the
  provider's mapped values (no model object: what the read path should use);
  :func:`builder_for` is the builder of a source, for one record at a time; :func:`record_of` builds
  one from a canonical :class:`~annotation_gateway.model.Annotation` and
  :meth:`Record.annotation` rebuilds the annotation from the JSON (for the few consumers that
  want the model: compare, the CLI's tables). :func:`sort_key` is the answer order.

Why: the first release held every cached answer as pydantic object graphs, ~4.2 KB per
annotation (six times its JSON). The second held each record's JSON, encoded once, beside the
fields the read path reads: ~1,200 B of live data per annotation, two thirds of it JSON that
repeats what every record of a subject, an annotator or a queue shares (and the id and the times
twice over). A record that is its document holds each value once (~800 B, see ``bench/``), and
msgspec writes a page of them in C at ~0.9 µs a record — only when a page is composed (a polled
page's JSON is kept with the merged result) — instead of every record paying ~2.7 µs for its
JSON when it is read.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from math import copysign as _copysign
from math import isfinite as _isfinite
from typing import Any

import msgspec
import orjson

from annotation_gateway.model import Annotation, to_utc

__all__ = [
    "AnnotatorRef",
    "QueueRef",
    "Record",
    "RecordBuilder",
    "SubjectRef",
    "builder_for",
    "decode",
    "extensions_json",
    "held_json",
    "held_metadata",
    "json_items",
    "json_lines",
    "micros",
    "record_of",
    "same_documents",
    "sort_key",
    "wire_score",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_intern = sys.intern


class SubjectRef(msgspec.Struct, frozen=True, gc=False):
    """A record's ``subject`` object (shared by the records of one subject)."""

    kind: str
    id: str
    project: str | None


class AnnotatorRef(msgspec.Struct, frozen=True, gc=False):
    """A record's ``annotator`` object (shared by consecutive records of one annotator)."""

    kind: str
    id: str | None


class QueueRef(msgspec.Struct, frozen=True, gc=False):
    """A record's ``queue`` object (shared by consecutive records of one queue)."""

    id: str
    name: str | None


class Record(msgspec.Struct, frozen=True, gc=False, eq=False, omit_defaults=True):
    """One canonical annotation, its fields in the canonical document's order.

    A msgspec ``Struct`` (``frozen``, ``gc=False``): built in C, immutable at run time, and not
    tracked by the cyclic garbage collector — a record holds only strings, numbers, times, JSON
    bytes, the three small structs above and a provider's extensions struct (none refers back),
    so it can never be part of a cycle, and the
    collector's full passes do not walk every cached annotation. ``omit_defaults`` only ever
    omits ``raw`` (the one field with a default), as the canonical model does when it is null.
    """

    id: str
    source: str
    provider: str
    subject: SubjectRef
    name: str
    label: str | None
    score_field: float | msgspec.Raw | None = msgspec.field(name="score")
    """The score as written: the float, or — for one of 1e16 or more, which msgspec writes
    ``1e16`` where orjson and pydantic write ``1e+16`` — the JSON orjson wrote for it. Read
    :attr:`score`."""
    explanation: str | None
    annotator: AnnotatorRef
    identifier: str
    metadata: msgspec.Raw
    queue: QueueRef | None
    created_at: datetime
    updated_at: datetime
    extensions: msgspec.Raw | msgspec.Struct
    """As orjson wrote it, or a provider's own struct (see :meth:`RecordBuilder.record`)."""
    raw: msgspec.Raw | None = None

    @property
    def score(self) -> float | None:
        value = self.score_field
        if value is None or isinstance(value, float):
            return value
        return float(orjson.loads(memoryview(value)))  # a Raw: what orjson wrote for it

    @property
    def subject_kind(self) -> str:
        return self.subject.kind

    @property
    def subject_id(self) -> str:
        return self.subject.id

    @property
    def project(self) -> str | None:
        return self.subject.project

    @property
    def annotator_kind(self) -> str:
        return self.annotator.kind

    @property
    def annotator_id(self) -> str | None:
        return self.annotator.id

    @property
    def queue_id(self) -> str | None:
        queue = self.queue
        return None if queue is None else queue.id

    @property
    def queue_name(self) -> str | None:
        queue = self.queue
        return None if queue is None else queue.name

    @property
    def updated_us(self) -> int:
        """``updated_at`` in µs since the epoch."""
        return micros(self.updated_at)

    @property
    def created_us(self) -> int:
        """``created_at`` in µs since the epoch."""
        return micros(self.created_at)

    @property
    def json(self) -> bytes:
        """The canonical JSON of this record (what the API writes for it)."""
        return _ENCODE(self)

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


_ENCODER = msgspec.json.Encoder()
_ENCODE = _ENCODER.encode


def json_items(records: Sequence[Record]) -> bytes:
    """The JSON of ``records``, comma-separated (the items of a JSON array): one msgspec call."""
    if not records:
        return b""
    return _ENCODE(records)[1:-1]


def json_lines(records: Iterable[Record]) -> bytes:
    """The JSON of ``records``, one per line, each line ending in ``\\n`` (NDJSON)."""
    return _ENCODER.encode_lines(records)


def extensions_json(record: Record) -> bytes | msgspec.Raw:
    """The JSON of ``record.extensions``."""
    extensions = record.extensions
    return extensions if type(extensions) is msgspec.Raw else _ENCODE(extensions)


_FIELDS = msgspec.structs.astuple


def same_documents(these: Sequence[Record], those: Sequence[Record]) -> bool:
    """Whether two answers are the same canonical documents, record for record, in order —
    what comparing their JSON would say, without writing it (~0.45 µs a record, against
    ~0.6-0.8 to write its JSON and ~1.8-2.1 to encode it for Redis: a shared-cache refresh
    compares the vendor's new answer with the one it holds).

    Field values compare as Python compares them, which is what their JSON says for a record's
    fields (strings, UTC datetimes, JSON held as bytes, the small structs), except for a score of
    ``0.0`` against ``-0.0`` — equal, but written differently — which is told apart here. Two
    values that merely look alike (a struct against the same JSON held as bytes, NaN against
    NaN) compare unequal: a false "different" only costs the caller the write it would do
    anyway."""
    if len(these) != len(those):
        return False
    for this, that in zip(these, those, strict=True):
        if this is that:
            continue
        if _FIELDS(this) != _FIELDS(that):
            return False
        if not _same_zero(this.score_field, that.score_field):
            return False
    return True


def _same_zero(score: float | msgspec.Raw | None, other: float | msgspec.Raw | None) -> bool:
    """False only for ``0.0`` against ``-0.0`` (equal, written differently)."""
    if isinstance(score, float) and isinstance(other, float) and score == 0.0:
        return _copysign(1.0, score) == _copysign(1.0, other)
    return True


def micros(value: datetime) -> int:
    """µs since the epoch of an aware datetime (the unit of ``updated_us``/``created_us``)."""
    return (value - _EPOCH) // _MICROSECOND


def record_of(annotation: Annotation, *, include_raw: bool = False) -> Record:
    """The compact record of ``annotation`` (``raw`` kept only with ``include_raw``): the same
    :meth:`RecordBuilder.record` the providers use, fed from the model."""
    subject, annotator, queue = annotation.subject, annotation.annotator, annotation.queue
    return builder_for(annotation.source, annotation.provider.value).record(
        annotation.id,
        subject.kind.value,
        subject.id,
        subject.project,
        annotation.name,
        annotation.label,
        annotation.score,
        annotation.explanation,
        annotator.kind.value,
        annotator.id,
        annotation.identifier,
        annotation.metadata,
        None if queue is None else queue.id,
        None if queue is None else queue.name,
        annotation.created_at,
        annotation.updated_at,
        annotation.extensions,
        annotation.raw if include_raw else None,
    )


_DUMP = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z
_RAW = msgspec.Raw
_EMPTY_OBJECT = msgspec.Raw(b"{}")
_LARGE = 1e16
"""From here on msgspec writes a float's exponent without its sign (``1e16``); orjson and
pydantic write ``1e+16``."""


def wire_score(score: float | None) -> float | msgspec.Raw | None:
    """What :attr:`Record.score_field` holds for ``score``: the float (an integer given as the
    canonical number ``1.0``, as pydantic writes it), or its JSON when msgspec would write it
    differently."""
    if score is None:
        return None
    score = float(score)
    if -_LARGE < score < _LARGE or not _isfinite(score):  # NaN and infinities: both write null
        return score
    return _RAW(_DUMP(score))


def held_json(value: Mapping[str, Any]) -> msgspec.Raw:
    """``value``'s JSON as a record holds it (``metadata``, ``extensions``, ``raw``, or a part of
    a provider's extensions struct). orjson's answer keeps its 4 KiB write buffer (measured: 4,097
    bytes held for a 500-byte document with orjson 3.13); a record lives in the cache, so it holds
    an exact copy (0.3 µs)."""
    if not value:
        return _EMPTY_OBJECT  # most metadata: one shared object
    return _RAW(bytes(memoryview(_DUMP(value, option=_UTC_Z))))


SHARED_JSON_MAX_BYTES = 64
"""Metadata whose JSON is this short is held once for all the records that have it."""
SHARED_JSON_SLOTS = 4096
"""How many such JSON values are remembered (the table starts afresh when it is full)."""
_shared_json: dict[bytes, msgspec.Raw] = {}


def held_metadata(dumped: bytes) -> msgspec.Raw:
    """An annotation's metadata JSON as a record holds it: short metadata repeats (a tag, a
    model's name, a run's number), and each value held once saves its bytes and its ``Raw``
    (~110 bytes a record for the bench's Phoenix rows). A dict lookup table with no eviction
    order: cleared when full, since what matters is that a page's repeats share. ``dumped`` may
    be orjson's answer (only an exact copy is kept) or a slice of a cached value."""
    if dumped == b"{}":
        return _EMPTY_OBJECT
    if len(dumped) > SHARED_JSON_MAX_BYTES:
        return _RAW(bytes(memoryview(dumped)))
    held = _shared_json.get(dumped)
    if held is None:
        if len(_shared_json) >= SHARED_JSON_SLOTS:
            _shared_json.clear()
        exact = bytes(memoryview(dumped))
        held = _shared_json[exact] = _RAW(exact)
    return held


SHARED_FLOAT_SLOTS = 4096
"""How many distinct scores are held once for all the records that have them (the table starts
afresh when it is full). Scores repeat (a 1-5 scale, a boolean's 1.0, a judge's two decimals), and
each float a record holds alone is 24 bytes: ~20 bytes a cached annotation of the bench's data."""
_shared_floats: dict[float, float] = {}


class RecordBuilder:
    """Builds the records of one read: a vendor page (a provider makes one per page it maps) or
    the models :func:`record_of` is given. Its ``source`` and ``provider`` are fixed (interned
    once); :meth:`record` takes what differs from one record to the next.

    What consecutive records have in common is built once and shared: their subject, annotator
    and queue objects (a vendor's page is grouped by subject). One entry each, no table: a table
    of every subject seen would cost about what sharing saves. Each is read and replaced whole,
    so threads that build with one builder at once can only miss a share, never share the wrong
    one.

    Why a builder and not one function: a page's constants are interned once instead of once a
    record, and a provider's loop calls one bound method with the values it has, the times
    checked inline. Mapping the bench's Phoenix page of 50 rows took ~100 µs through a per-row
    function and a 19-argument ``build_record``, ~55 µs so (measured in isolation).
    """

    __slots__ = ("_annotator", "_queue", "_subject", "id_prefix", "provider", "source")

    def __init__(self, source: str, provider: str) -> None:
        self.source = _intern(source)
        self.provider = _intern(provider)
        self.id_prefix = f"{source}:"
        """What a record id of this source starts with (``{source}:{native id}``)."""
        self._subject = SubjectRef("", "", None)
        self._annotator = AnnotatorRef("", None)
        self._queue = QueueRef("", None)

    def record(
        self,
        id: str,
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
        metadata: dict[str, Any] | None,
        queue_id: str | None,
        queue_name: str | None,
        created_at: datetime,
        updated_at: datetime,
        extensions: dict[str, dict[str, Any]] | msgspec.Struct,
        raw: dict[str, Any] | None,
    ) -> Record:
        """A record straight from a provider's mapped values, without building the canonical
        model: its JSON is byte for byte what :func:`record_of` gives for the same annotation
        (``tests/test_records.py`` checks it). The values must already be valid canonical
        values (a provider validated the vendor's wire shape first); the times are aware (or
        naive UTC) datetimes, equal times held as one object.

        ``extensions`` is a dict, or a provider's struct that msgspec writes as that dict would
        be written (a provider whose records share most of their extensions holds them so: see
        ``providers/datadog/mapping.py``).

        The providers call it once per annotation read (100,000 times for a 10,000-id search),
        with positional arguments: binding 19 keyword arguments cost ~1.2 µs a call on this
        machine, 19 positional ones ~0.15.
        """
        subject_id = _intern(
            subject_id
        )  # Phoenix gives every row its own copy; a subject's records share one
        subject = self._subject
        if subject.id is not subject_id or subject.project != project or subject.kind != subject_kind:
            subject = self._subject = SubjectRef(
                _intern(subject_kind), subject_id, None if project is None else _intern(project)
            )
        annotator = self._annotator
        if annotator.id != annotator_id or annotator.kind != annotator_kind:
            annotator = self._annotator = AnnotatorRef(
                _intern(annotator_kind), None if annotator_id is None else _intern(annotator_id)
            )
        if queue_id is None:
            queue = None
        else:
            queue = self._queue
            if queue.id != queue_id or queue.name != queue_name:
                queue = self._queue = QueueRef(
                    _intern(queue_id), None if queue_name is None else _intern(queue_name)
                )
        held: float | msgspec.Raw | None = score
        if score is not None:
            if type(score) is not float or not -_LARGE < score < _LARGE:
                held = wire_score(score)  # an integer, or a float msgspec would write otherwise
            elif score:  # not ±0.0: 0.0 == -0.0, and the two are written differently
                held = _shared_floats.get(score)
                if held is None:
                    if len(_shared_floats) >= SHARED_FLOAT_SLOTS:
                        _shared_floats.clear()
                    held = _shared_floats[score] = score
        # The vendors' pages, decoded strictly, are in UTC already (``to_utc`` is then a no-op
        # call, ~40 ns twice a record).
        if created_at.tzinfo is not UTC:
            created_at = to_utc(created_at)
        if updated_at.tzinfo is not UTC:
            updated_at = to_utc(updated_at)
        if updated_at == created_at:
            updated_at = created_at
        # Positional, in the field order.
        return Record(
            id,
            self.source,
            self.provider,
            subject,
            _intern(name),
            None if label is None else _intern(label),
            held,
            explanation,
            annotator,
            _intern(identifier),
            held_metadata(_DUMP(metadata, option=_UTC_Z)) if metadata else _EMPTY_OBJECT,
            queue,
            created_at,
            updated_at,
            held_json(extensions) if isinstance(extensions, dict) else extensions,
            None if raw is None else held_json(raw),
        )


_MAX_BUILDERS = 256
_builders: dict[tuple[str, str], RecordBuilder] = {}
"""One builder per (source, provider) for :func:`builder_for`; started afresh when full."""


def builder_for(source: str, provider: str) -> RecordBuilder:
    """The builder of ``source`` (one kept per (source, provider)), for consumers that build
    records one at a time from several sources: :func:`record_of`, the tests."""
    builder = _builders.get((source, provider))
    if builder is None:
        if len(_builders) >= _MAX_BUILDERS:
            _builders.clear()
        builder = _builders[(source, provider)] = RecordBuilder(source, provider)
    return builder


def decode(records: list[Record]) -> list[Annotation]:
    """The canonical models of ``records``, in order."""
    return [record.annotation() for record in records]


def sort_key(record: Record) -> tuple[int, str]:
    """Ascending order of this key is ``updated_at`` descending, then ``id`` ascending."""
    return (-record.updated_us, record.id)
