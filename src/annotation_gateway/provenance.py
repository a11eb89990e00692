"""Where a migrated annotation came from: the provenance :mod:`~annotation_gateway.migrate` writes.

Contract
--------
Pure: no I/O, no vendor calls; it sees only :class:`~annotation_gateway.model.Annotation`.
Migrate leaves the origin of every copy in one of two places, and :func:`origin` reads both:

``metadata["migrated_from"]`` (targets with metadata: Phoenix)
    an object with at least ``source`` (the source *name* the original was read from) and ``id``
    (its canonical id), both non-empty strings; see :func:`annotation_gateway.migrate.provenance`.
The reasoning line (targets without metadata: Datadog)
    the **last line** of the Datadog reasoning is :data:`PROVENANCE_MARKER` followed by one JSON
    object with the same ``source`` and ``id`` (:func:`reasoning_line` writes it). The reasoning
    is the canonical ``explanation``, except for a Datadog ``text`` label, whose explanation is
    the label's value and whose reasoning is ``extensions["datadog"]["reasoning"]``.

:func:`origin` returns an :class:`Origin` (source name + original canonical id) or ``None``: an
annotation with no provenance, or with provenance that is malformed (not an object, ``source``
or ``id`` missing, empty or not a string, the line not valid JSON), is treated as an original —
never guessed. When both places are filled (a copy of a copy), ``metadata`` wins: it is the
most recent hop, written by the migration that made *this* annotation.

Who relies on it
    * :func:`annotation_gateway.compare.compare` leaves out a side's annotations copied from the
      other side of the comparison (a copy is not an independent judgement), unless asked to
      include them;
    * :func:`annotation_gateway.migrate.migrate` never copies an annotation back into the source
      it came from, and :func:`~annotation_gateway.migrate.verify` pairs each copy with its
      original by :attr:`Origin.id`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from annotation_gateway.model import Annotation

__all__ = ["PROVENANCE_MARKER", "Origin", "copied_from", "origin", "reasoning_line"]

PROVENANCE_MARKER = "migrated_from: "
"""Starts the line of a Datadog ``reasoning`` that carries what Datadog cannot keep."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The annotation a copy was made from."""

    source: str
    """The configured source name it was read from (e.g. ``datadog-prod``)."""
    id: str
    """Its canonical id in that source (``{source}:{native id}``)."""


def reasoning_line(fields: Mapping[str, Any]) -> str:
    """The provenance line for a Datadog reasoning: the marker, then compact sorted JSON.

    Deterministic (sorted keys, no spaces), so an unchanged original gives the same line on
    every run. ``fields`` should hold at least ``source`` and ``id`` for :func:`origin` to read it.
    """
    return PROVENANCE_MARKER + json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))


def _valid(found: object) -> Origin | None:
    if not isinstance(found, dict):
        return None
    source, original = found.get("source"), found.get("id")
    if isinstance(source, str) and isinstance(original, str) and source and original:
        return Origin(source=source, id=original)
    return None


def _reasoning(annotation: Annotation) -> str:
    datadog = annotation.extensions.get("datadog") or {}
    if datadog.get("label_type") == "text":
        found = datadog.get("reasoning")
        return found if isinstance(found, str) else ""
    return annotation.explanation or ""


def origin(annotation: Annotation) -> Origin | None:
    """Where ``annotation`` was copied from (see the module docstring), or ``None`` for an original."""
    from_metadata = _valid(annotation.metadata.get("migrated_from"))
    if from_metadata is not None:
        return from_metadata
    text = _reasoning(annotation).rstrip()
    if PROVENANCE_MARKER not in text:  # the common case: skip the line split
        return None
    last = text.rsplit("\n", 1)[-1].strip()
    if not last.startswith(PROVENANCE_MARKER):
        return None
    try:
        return _valid(json.loads(last[len(PROVENANCE_MARKER) :]))
    except ValueError:
        return None


def copied_from(annotation: Annotation, source: str) -> bool:
    """Whether ``annotation`` is a migrated copy of an annotation read from ``source``."""
    found = origin(annotation)
    return found is not None and found.source == source
