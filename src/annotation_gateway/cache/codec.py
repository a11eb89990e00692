"""The shared tier's value format: one subject's answer (its records) as bytes, and back.

Contract: :func:`encode` writes ``AGW2``, the wall-clock epoch seconds the upstream call started
(big-endian double), the length of a JSON header, a CRC-32 of the rest, the header — one array
per field of the records (17, typed: msgspec checks each as it parses it) and one of the lengths
of their ``metadata``, ``extensions`` and ``raw`` JSON — then those JSON bytes one after the
other. :func:`decode` rebuilds each :class:`~annotation_gateway.records.Record` exactly (the JSON
pieces are sliced, never parsed; low-cardinality strings are interned as
:meth:`~annotation_gateway.records.RecordBuilder.record` does) and raises ``ValueError`` for anything it
did not write (wrong magic, checksum, header or lengths): never pickle, never a crash on what
another program put in Redis. :func:`stored_at_of` reads only the fixed-size :data:`HEAD`; two
values of the same answer have the same :data:`SAME` bytes (the Lua scripts of
:mod:`~annotation_gateway.cache.redis_tier` compare them without decoding).
:data:`FORMAT_VERSION` names the format in the keys: a gateway writing another format uses other
keys.
"""

from __future__ import annotations

import itertools
import math
import struct
import sys
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import cast

import msgspec

from annotation_gateway.records import (
    AnnotatorRef,
    QueueRef,
    Record,
    SubjectRef,
    extensions_json,
    held_metadata,
    wire_score,
)

__all__ = ["FORMAT_VERSION", "HEAD", "MAGIC", "SAME", "decode", "encode", "stored_at_of"]

FORMAT_VERSION = "v2"
MAGIC = b"AGW2"
HEAD = struct.Struct(">4sdII")
"""A value's fixed-size head: magic, stored_at (wall-clock epoch seconds), header length, CRC-32
of header and bodies."""
SAME = slice(12, 20)
"""The header length and CRC-32 in a value's head: equal for identical answers."""
_intern = sys.intern
_Raw = msgspec.Raw


class _Columns(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """The header: one array per field of the records, then the JSON lengths of every record's
    ``metadata``, then of every record's ``extensions``, then of every record's ``raw`` (-1:
    none)"""

    id: list[str]
    source: list[str]
    provider: list[str]
    subject_kind: list[str]
    subject_id: list[str]
    project: list[str | None]
    name: list[str]
    label: list[str | None]
    score: list[float | None]
    """Encoded from the records' ``score_field``, which msgspec writes as it is (float or Raw)."""
    explanation: list[str | None]
    annotator_kind: list[str]
    annotator_id: list[str | None]
    identifier: list[str]
    queue_id: list[str | None]
    queue_name: list[str | None]
    created_at: list[datetime]
    updated_at: list[datetime]
    lengths: list[int]


_HEADER = msgspec.json.Decoder(_Columns)
_ENCODE_HEADER = msgspec.json.Encoder().encode


def encode(records: Sequence[Record], stored_at: float) -> bytes:
    """The value of one subject's answer (see the module docstring); ``stored_at`` is wall-clock
    epoch seconds.

    The header is column-wise (a list per field, then the JSON lengths: every record's
    metadata, then every record's extensions, then every record's ``raw``) so that decoding
    builds every record with ``map`` calls over the columns, in C, with little per-record Python
    code, and msgspec checks each column's type as it parses it. The CRC-32 (zlib, ~1 GB/s)
    guards the bodies, which are only sliced.
    """
    metadata = [r.metadata for r in records]
    extensions = list(map(extensions_json, records))
    raws = [r.raw for r in records]
    lengths = [*map(len, metadata), *map(len, extensions)]
    lengths += (
        [-1] * len(raws) if raws.count(None) == len(raws) else [-1 if x is None else len(x) for x in raws]
    )
    # A Raw score (a large float as orjson wrote it) is written as it is and reads back as the float.
    scores = cast("list[float | None]", [r.score_field for r in records])
    subjects = [r.subject for r in records]
    annotators = [r.annotator for r in records]
    queues = [r.queue for r in records]
    header = _ENCODE_HEADER(
        _Columns(
            [r.id for r in records],
            [r.source for r in records],
            [r.provider for r in records],
            [s.kind for s in subjects],
            [s.id for s in subjects],
            [s.project for s in subjects],
            [r.name for r in records],
            [r.label for r in records],
            scores,
            [r.explanation for r in records],
            [a.kind for a in annotators],
            [a.id for a in annotators],
            [r.identifier for r in records],
            [None if q is None else q.id for q in queues],
            [None if q is None else q.name for q in queues],
            [r.created_at for r in records],
            [r.updated_at for r in records],
            lengths,
        )
    )
    body = b"".join([*metadata, *extensions, *(x for x in raws if x is not None)])
    crc = zlib.crc32(body, zlib.crc32(header))
    return b"".join((HEAD.pack(MAGIC, stored_at, len(header), crc), header, body))


def stored_at_of(value: bytes) -> float:
    """The ``stored_at`` of a value (only its fixed-size head is read); ``ValueError`` if it has
    none."""
    try:
        magic, stored_at, _, _ = HEAD.unpack_from(value)
    except struct.error as exc:
        raise ValueError("not a cached answer") from exc
    if magic != MAGIC or not math.isfinite(stored_at):
        raise ValueError("not a cached answer of this format")
    return float(stored_at)


def _interned(column: list[str | None]) -> list[str | None]:
    if None not in column:
        return list(map(_intern, column))  # type: ignore[arg-type]
    if column.count(None) == len(column):  # all null (a Datadog project, most queues): as is
        return column
    return [v if v is None else _intern(v) for v in column]


def _subjects(c: _Columns, count: int) -> list[SubjectRef]:
    """The records' subjects: a value is one subject's answer, so usually one shared object."""
    kinds, ids, projects = c.subject_kind, c.subject_id, c.project
    if count and kinds.count(kinds[0]) == ids.count(ids[0]) == projects.count(projects[0]) == count:
        project = projects[0]
        return [
            SubjectRef(_intern(kinds[0]), _intern(ids[0]), None if project is None else _intern(project))
        ] * count
    return list(map(SubjectRef, map(_intern, kinds), map(_intern, ids), _interned(projects)))


def decode(value: bytes) -> tuple[float, tuple[Record, ...]]:
    """``(stored_at, records)`` of a value :func:`encode` wrote; ``ValueError`` for anything else."""
    stored_at = stored_at_of(value)
    _, _, header_len, crc = HEAD.unpack_from(value)
    view = memoryview(value)
    start = HEAD.size + header_len
    if start > len(value) or zlib.crc32(view[start:], zlib.crc32(view[HEAD.size : start])) != crc:
        raise ValueError("not a cached answer (checksum)")
    try:
        c = _HEADER.decode(view[HEAD.size : start])
    except msgspec.DecodeError as exc:
        raise ValueError("malformed record header") from exc
    count = len(c.id)
    lengths = c.lengths
    columns = [getattr(c, name) for name in _Columns.__struct_fields__]
    sized, raw_sizes = lengths[: 2 * count], lengths[2 * count :]
    if (
        any(len(column) != count for column in columns[:-1])
        or len(raw_sizes) != count
        or min(sized, default=0) < 0
        or min(raw_sizes, default=0) < -1
    ):
        raise ValueError("malformed record header")
    sized += [n for n in raw_sizes if n >= 0]
    ends = list(itertools.accumulate(sized, initial=start))
    if ends[-1] != len(value):
        raise ValueError("record bodies do not match the header")
    pieces = list(map(value.__getitem__, map(slice, ends[:-1], ends[1:])))  # sliced in C
    if len(pieces) == 2 * count:  # no record carries raw (a read without include=raw)
        raws: list[msgspec.Raw | None] = [None] * count
    else:
        held_raws = iter(pieces[2 * count :])
        raws = [None if n < 0 else _Raw(next(held_raws)) for n in raw_sizes]
    created = c.created_at
    queues = [
        None if q is None else QueueRef(q, n)
        for q, n in zip(_interned(c.queue_id), _interned(c.queue_name), strict=True)
    ]
    return (
        stored_at,
        tuple(
            map(
                Record,
                c.id,
                map(_intern, c.source),
                map(_intern, c.provider),
                _subjects(c, count),
                map(_intern, c.name),
                _interned(c.label),
                map(wire_score, c.score),
                c.explanation,
                map(AnnotatorRef, map(_intern, c.annotator_kind), _interned(c.annotator_id)),
                map(_intern, c.identifier),
                map(held_metadata, pieces[:count]),
                queues,
                created,
                [
                    a if a == b else b for a, b in zip(created, c.updated_at, strict=True)
                ],  # one object when equal
                map(_Raw, pieces[count : 2 * count]),
                raws,
            )
        ),
    )
