r"""The change feed (SPEC §10): annotations created or updated after a watermark, oldest first.

Contract:
- a page is the ``limit`` oldest matches of the query, in ``(updated_at, id)`` order, whose
  version (the hash of its canonical JSON) was not delivered before; ``next_since`` (opaque, signed and bound
  to the query and the key like cursors) carries the watermark — the newest ``updated_at``
  delivered — and the versions delivered within ``CHANGES_OVERLAP_S`` of it;
- the next call reads every match with ``updated_at >= watermark - CHANGES_OVERLAP_S`` **fresh**
  (no cache: neither the annotation cache nor the scope's discovery cache, which would hide a
  new change until its TTL) and leaves out the versions the token names. So a change that shows
  up late at its vendor — a write committing after others with later times, a vendor clock
  slightly behind — is still delivered, as long as it is visible within the overlap; an update
  is a new version and is delivered again (re-writing identical content is not a change);
- **never skipped, maybe twice**: a change is delivered at least once if it becomes visible
  within the overlap; it can come twice when more than ``CHANGES_MAX_SEEN`` versions crowd the
  overlap (the oldest are forgotten first). Empty ``data`` means caught up; ``next_since`` is
  always returned, to poll with;
- without ``since`` the feed starts at the beginning: everything in the query's reach, oldest
  first. Every call reads its whole window (vendors cannot list annotations by time), through
  the streaming read path, keeping only the ``limit`` oldest in memory (a bounded heap);
- vendors expose no deletions, and the feed invents none.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from annotation_gateway.federation import limits
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.records import Record

__all__ = ["ChangesPage", "Seen", "version_hash"]

_ENTRY = struct.Struct(">I6s")
"""One remembered version: µs before the watermark (uint32: the overlap is far below 71 min),
and 6 bytes of its hash."""


def version_hash(record: Record) -> bytes:
    """6 bytes naming one version of one annotation: the hash of its whole canonical JSON (id,
    ``updated_at`` and content). Not (id, ``updated_at``) alone: Phoenix answers ``updated_at``
    in whole seconds, so two upserts within one second share it — found by the interleaving
    test, where the second of them was taken for the first and skipped."""
    return hashlib.blake2b(record.json, digest_size=6).digest()


@dataclass(slots=True)
class ChangesPage:
    """One page of the feed."""

    records: list[Record]
    next_since: str
    partial: bool
    sources: list[SourceStatus]


class Seen:
    """The versions delivered near a watermark, as a ``since`` token carries them."""

    def __init__(self, watermark_us: int | None, entries: dict[bytes, int] | None = None) -> None:
        self.watermark_us = watermark_us
        self.entries: dict[bytes, int] = entries or {}
        """version hash → its ``updated_at`` (µs)."""

    @classmethod
    def unpack(cls, watermark_us: int, packed: bytes) -> Seen:
        entries: dict[bytes, int] = {}
        usable = len(packed) - len(packed) % _ENTRY.size
        for offset in range(0, usable, _ENTRY.size):
            before, digest = _ENTRY.unpack_from(packed, offset)
            entries[digest] = watermark_us - before
        return cls(watermark_us, entries)

    def pack(self) -> bytes:
        if self.watermark_us is None:
            return b""
        newest = sorted(self.entries.items(), key=lambda item: item[1], reverse=True)
        return b"".join(
            _ENTRY.pack(self.watermark_us - us, digest) for digest, us in newest[: limits.CHANGES_MAX_SEEN]
        )

    @property
    def floor(self) -> datetime | None:
        """The oldest ``updated_at`` the next read must cover (``None``: the beginning)."""
        if self.watermark_us is None:
            return None
        overlap_us = int(limits.CHANGES_OVERLAP_S * 1_000_000)
        return datetime.fromtimestamp((self.watermark_us - overlap_us) / 1e6, tz=UTC)

    def delivered(self, record: Record) -> bool:
        return version_hash(record) in self.entries

    def advance(self, page: list[Record]) -> Seen:
        """The state after delivering ``page`` (oldest first): the watermark moves to its newest
        change; versions older than the overlap below it are forgotten."""
        if not page:
            return self
        watermark = max(self.watermark_us or page[-1].updated_us, page[-1].updated_us)
        overlap_us = int(limits.CHANGES_OVERLAP_S * 1_000_000)
        entries = {d: us for d, us in self.entries.items() if us >= watermark - overlap_us}
        for record in page:
            if record.updated_us >= watermark - overlap_us:
                entries[version_hash(record)] = record.updated_us
        return Seen(watermark, entries)


class Oldest:
    """The ``limit`` oldest records by ``(updated_at, id)`` of a stream, in bounded memory: a
    buffer trimmed back to ``limit`` whenever it holds twice that (amortised n log limit)."""

    def __init__(self, limit: int, seen: Seen) -> None:
        self._limit = limit
        self._seen = seen
        self._kept: list[Record] = []

    def add(self, records: list[Record]) -> None:
        seen = self._seen
        if seen.watermark_us is None:
            self._kept.extend(records)
        else:
            self._kept.extend(r for r in records if not seen.delivered(r))
        if len(self._kept) >= 2 * self._limit:
            self._trim()

    def _trim(self) -> None:
        self._kept = heapq.nsmallest(self._limit, self._kept, key=_order)

    def result(self) -> list[Record]:
        self._trim()
        return self._kept


def _order(record: Record) -> tuple[int, str]:
    return (record.updated_us, record.id)
