r"""The change feed (SPEC §10): annotations created or updated after a watermark, oldest first.

Contract:
- a page is the ``limit`` oldest matches of the query, in ``(updated_at, id)`` order, whose
  version (the hash of its canonical JSON) is not the last one delivered of that annotation;
  ``next_since`` (opaque, signed and bound to the query and the key like cursors) carries,
  **per source**, a watermark — how far that source has been delivered — and, for the
  annotations delivered within ``CHANGES_OVERLAP_S`` of it, the last version delivered of each
  (so a value that comes back — good, then meh, then good again within one second, the same
  JSON as before — is delivered again: found by the interleaving test);
- the next call reads, for each source, every match with ``updated_at >= its watermark -
  CHANGES_OVERLAP_S`` **fresh** (no cache: neither the annotation cache nor the scope's
  discovery cache, which would hide a new change until its TTL) and leaves out the versions the
  token names. So a change that shows up late at its vendor — a write committing after others
  with later times, a vendor clock slightly behind — is still delivered, as long as it is
  visible within the overlap; an update is a new version and is delivered again (re-writing
  identical content is not a change);
- a source that **fails** keeps its watermark: the feed moves on with the others (``partial``),
  and that source's changes come once it answers again — the feed never moves past a source it
  could not read. A source that answered moves to the page's newest change (everything of it
  not delivered yet is newer than that);
- **never skipped, maybe twice**: a change is delivered at least once if it becomes visible
  within the overlap; it can come twice when more versions crowd a source's overlap than the
  token keeps (``CHANGES_MAX_SEEN`` shared by the sources; the oldest are forgotten first).
  Empty ``data`` means caught up; ``next_since`` is always returned, to poll with;
- without ``since`` (or for a source the token does not know, e.g. one added to the config)
  the feed starts at the beginning: everything in the query's reach, oldest first. Every call
  reads its whole window (vendors cannot list annotations by time), through the streaming read
  path, keeping only the ``limit`` oldest in memory;
- vendors expose no deletions, and the feed invents none.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from annotation_gateway.federation import limits
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.records import Record

__all__ = ["ChangesPage", "FeedState", "Oldest", "Seen", "id_hash", "version_hash"]

_ENTRY = struct.Struct(">I4s6s")
"""One remembered version: µs before the watermark (uint32: the overlap is far below 71 min),
4 bytes of the annotation's id hash, 6 bytes of the version's hash."""


def version_hash(record: Record) -> bytes:
    """6 bytes naming one version of one annotation: the hash of its whole canonical JSON (id,
    ``updated_at`` and content). Not (id, ``updated_at``) alone: Phoenix answers ``updated_at``
    in whole seconds, so two upserts within one second share it — found by the interleaving
    test, where the second of them was taken for the first and skipped."""
    return hashlib.blake2b(record.json, digest_size=6).digest()


def id_hash(record: Record) -> bytes:
    """4 bytes naming the annotation (its id): a collision only makes the two annotations share
    one remembered version, so one may come twice, never be skipped."""
    return hashlib.blake2b(record.id.encode("utf-8", "surrogatepass"), digest_size=4).digest()


def _overlap_us() -> int:
    return int(limits.CHANGES_OVERLAP_S * 1_000_000)


@dataclass(slots=True)
class ChangesPage:
    """One page of the feed."""

    records: list[Record]
    next_since: str
    partial: bool
    sources: list[SourceStatus]


class Seen:
    """One source's watermark and, for the annotations delivered near it, the last version
    delivered of each."""

    def __init__(self, watermark_us: int, entries: dict[bytes, tuple[bytes, int]] | None = None) -> None:
        self.watermark_us = watermark_us
        self.entries: dict[bytes, tuple[bytes, int]] = entries or {}
        """id hash → (the last version delivered, its ``updated_at`` in µs)."""

    @classmethod
    def unpack(cls, watermark_us: int, packed: bytes) -> Seen:
        entries: dict[bytes, tuple[bytes, int]] = {}
        usable = len(packed) - len(packed) % _ENTRY.size
        for offset in range(0, usable, _ENTRY.size):
            before, ident, digest = _ENTRY.unpack_from(packed, offset)
            entries[ident] = (digest, watermark_us - before)
        return cls(watermark_us, entries)

    def pack(self, keep: int) -> bytes:
        newest = sorted(self.entries.items(), key=lambda item: item[1][1], reverse=True)[:keep]
        return b"".join(_ENTRY.pack(self.watermark_us - us, ident, digest) for ident, (digest, us) in newest)

    @property
    def floor_us(self) -> int:
        """The oldest ``updated_at`` the next read must cover for this source."""
        return self.watermark_us - _overlap_us()

    def delivered(self, record: Record) -> bool:
        if record.updated_us < self.floor_us:
            return True
        last = self.entries.get(id_hash(record))
        return last is not None and last[0] == version_hash(record)

    def advance(self, watermark_us: int, delivered: Iterable[Record]) -> Seen:
        """Moved to ``watermark_us`` (never back), remembering ``delivered`` (oldest first: a
        later version of one annotation replaces an earlier one) near it."""
        watermark = max(self.watermark_us, watermark_us)
        floor = watermark - _overlap_us()
        entries = {ident: entry for ident, entry in self.entries.items() if entry[1] >= floor}
        for record in delivered:
            if record.updated_us >= floor:
                entries[id_hash(record)] = (version_hash(record), record.updated_us)
        return Seen(watermark, entries)


class FeedState:
    """Every source's :class:`Seen` (a source absent from it starts at the beginning)."""

    def __init__(self, per_source: dict[str, Seen] | None = None) -> None:
        self.per_source = per_source or {}

    @classmethod
    def unpack(cls, state: dict[str, tuple[int, bytes]]) -> FeedState:
        return cls({name: Seen.unpack(watermark, packed) for name, (watermark, packed) in state.items()})

    def pack(self) -> dict[str, tuple[int, bytes]]:
        keep = max(limits.CHANGES_MAX_SEEN // max(len(self.per_source), 1), 1)
        return {name: (seen.watermark_us, seen.pack(keep)) for name, seen in self.per_source.items()}

    def floor(self, sources: Iterable[str]) -> datetime | None:
        """The oldest ``updated_at`` the next read must cover (``None``: the beginning)."""
        floors = [self.per_source[s].floor_us if s in self.per_source else None for s in sources]
        if not floors or any(f is None for f in floors):
            return None
        return datetime.fromtimestamp(min(f for f in floors if f is not None) / 1e6, tz=UTC)

    def delivered(self, record: Record) -> bool:
        seen = self.per_source.get(record.source)
        return seen is not None and seen.delivered(record)

    def advance(self, page: list[Record], answered: Iterable[str]) -> FeedState:
        """The state after delivering ``page`` (oldest first): every source that ``answered``
        moves to the page's newest change (all it has not delivered yet is newer); the others
        keep theirs."""
        if not page:
            return self
        newest = page[-1].updated_us
        per_source = dict(self.per_source)
        for name in answered:
            own = [r for r in page if r.source == name]
            current = per_source.get(name) or Seen(newest)
            per_source[name] = current.advance(newest, own)
        return FeedState(per_source)


class Oldest:
    """The ``limit`` oldest records by ``(updated_at, id)`` of a stream not delivered before, in
    bounded memory: a buffer trimmed back to ``limit`` whenever it holds twice that (amortised
    n log limit)."""

    def __init__(self, limit: int, state: FeedState) -> None:
        self._limit = limit
        self._state = state
        self._kept: list[Record] = []

    def add(self, records: list[Record]) -> None:
        state = self._state
        if state.per_source:
            self._kept.extend(r for r in records if not state.delivered(r))
        else:
            self._kept.extend(records)
        if len(self._kept) >= 2 * self._limit:
            self._trim()

    def _trim(self) -> None:
        self._kept = heapq.nsmallest(self._limit, self._kept, key=_order)

    def result(self) -> list[Record]:
        self._trim()
        return self._kept


def _order(record: Record) -> tuple[int, str]:
    return (record.updated_us, record.id)
