"""The contract between a process's answer cache and a cache shared by several processes.

Contract:
- :class:`SharedTier` is what :class:`~.local.AnnotationCache` asks when ``[cache] backend =
  "redis"`` (:class:`~.redis_tier.RedisTier` implements it): :meth:`SharedTier.fill` answers a
  flight's subjects from the shared store or through one upstream call across processes,
  :meth:`SharedTier.confirm` confirms at once the answers a process still holds, and
  :meth:`SharedTier.invalidate` tells every process of a write;
- answers travel per subject *slot* (:data:`Slot`: a subject id, or ``None`` for an
  identifier-only answer) under a :data:`FilterKey` (everything of the pushed-down query but
  its subject ids), as :class:`TierEntry` values (items, age, version) gathered in a
  :class:`TierFill`; a version names an answer so that an unchanged one is confirmed rather than
  sent again (:data:`Known`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from annotation_gateway.model import SubjectKind

__all__ = [
    "Confirm",
    "FetchParts",
    "FilterKey",
    "Known",
    "Prefetched",
    "SharedTier",
    "Slot",
    "TierEntry",
    "TierFill",
]

T = TypeVar("T")

FilterKey = tuple[tuple[SubjectKind, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]
"""(subject_kinds, identifiers, names, exclude_names, include_raw), each tuple sorted."""
Slot = str | None
"""A subject id, or ``None`` for the identifier-only answer."""


@dataclass(frozen=True, slots=True)
class TierEntry(Generic[T]):
    """One subject's answer as the shared tier has it: the items and how old they are."""

    items: tuple[T, ...]
    age_s: float
    """Seconds since the upstream call that produced it started (0 or more)."""
    version: bytes | None = None
    """What names this answer in the shared tier (``None``: not there): handed back to
    :meth:`SharedTier.fill` in ``known`` when the local copy is no longer fresh, so that an
    unchanged answer is confirmed rather than sent and decoded again (or, fetched again and
    still the same, re-dated rather than stored whole)."""


@dataclass(slots=True)
class TierFill(Generic[T]):
    """What :meth:`SharedTier.fill` found or fetched for a flight's subjects."""

    found: dict[Slot, TierEntry[T]]
    """Every requested slot when ``error`` is ``None``."""
    upstream: bool
    """An upstream call was made or awaited (here or by another process)."""
    error: BaseException | None = None
    """The upstream call's failure (the shared tier itself never fails a fill)."""
    usable: dict[Slot, TierEntry[T]] = field(default_factory=dict)
    """With ``error``: what the shared tier held for those slots, for stale-on-error."""


FetchParts = Callable[[list[Slot]], Awaitable[dict[Slot, tuple[T, ...]]]]
"""The upstream call for some slots, split per slot (one call for all of them)."""
Known = Mapping[Slot, tuple[bytes, tuple[T, ...]]]
"""Answers this process still holds, by slot: (their version in the shared tier, the items)."""


class Prefetched:
    """What :meth:`SharedTier.confirm` found for an answer it could not confirm (opaque here):
    handed to that answer's :meth:`SharedTier.fill`, which then makes no lookup of its own, or
    to :meth:`SharedTier.release` when no fill follows."""

    __slots__ = ()


Confirm = tuple[str, FilterKey, list[Slot], Known[T]]
"""One source's answer to confirm: (source, filter key, slots, the versions held for every slot)."""


class SharedTier(Protocol[T]):
    """A cache shared by several processes, behind each process's :class:`AnnotationCache`."""

    @property
    def ttl_s(self) -> float:
        """The fresh lifetime of a shared answer (the configured ``ttl_s``)."""
        ...

    async def fill(
        self,
        source: str,
        fkey: FilterKey,
        slots: list[Slot],
        fetch_parts: FetchParts[T],
        *,
        read: bool,
        store: bool,
        known: Known[T] | None = None,
        prefetched: Prefetched | None = None,
    ) -> TierFill[T]:
        """The answers for ``slots``: what the tier holds fresh (unless ``read`` is false), the
        rest through ``fetch_parts`` (at most once across processes where it can), stored unless
        ``store`` is false. An answer in ``known`` that the tier still holds unchanged is
        answered with those items. ``prefetched``: what :meth:`confirm` found for these slots
        (used instead of a lookup when it matches them). Never raises for its own failures:
        then it simply fetches."""
        ...

    async def confirm(self, asks: Sequence[Confirm[T]]) -> list[dict[Slot, TierEntry[T]] | Prefetched] | None:
        """Whether the tier still holds, fresh and unchanged, the answers of ``asks`` (every
        slot's version given): asked for all of them at once. Per ask, its entries when every
        one is confirmed, else what was found, to hand to :meth:`fill` (or :meth:`release`).
        ``None`` when the tier could not be asked (then every ask is read as usual)."""
        ...

    def release(self, prefetched: Prefetched) -> None:
        """Give up ``prefetched`` without a fill (frees what it holds, e.g. a lock)."""
        ...

    async def invalidate(self, source: str, subject_ids: Collection[str]) -> None:
        """Tell every process that ``source``'s answers about ``subject_ids`` changed."""
        ...

    async def status(self) -> dict[str, Any]:
        """The tier's state for ``/readyz`` (never a credential)."""
        ...

    async def aclose(self) -> None: ...
