"""Metric hooks of the federation: what an observer is told, and a no-op default.

Contract: the federation calls these on the event loop; an implementation must be cheap and
never raise. The API wires them to Prometheus, so the federation imports no metrics library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from annotation_gateway.resilience import CircuitState

__all__ = [
    "BoundObserver",
    "CacheOutcome",
    "FederationObserver",
    "NullObserver",
    "SharedCacheOutcome",
    "UpstreamOperation",
]

UpstreamOperation = Literal["fetch", "discover", "write"]
CacheOutcome = Literal["hit", "miss", "stale"]
SharedCacheOutcome = Literal["hit", "miss", "invalid", "wait", "bypass"]


class FederationObserver(Protocol):
    """Metric hooks. Called on the event loop; implementations must be cheap and never raise.

    An observer may implement only some of them (or subclass :class:`NullObserver`): a missing
    hook is replaced by a no-op when the federation is built.
    """

    def on_upstream(self, source: str, operation: UpstreamOperation, elapsed_s: float, outcome: str) -> None:
        """One upstream call ended. ``outcome`` is ``"ok"``, a ``ProblemCode`` value
        (``source_timeout``, ``source_unavailable``...), ``"circuit_open"`` (refused without a
        request) or ``"cancelled"``."""

    def on_cache(self, source: str, result: CacheOutcome) -> None:
        """One query was answered for ``source``: entirely from the cache (``hit``), with an
        upstream call made or awaited (``miss``, also when that call failed), or from stale
        entries because the source failed (``stale``)."""

    def on_inflight(self, source: str, delta: int) -> None:
        """An upstream call of ``source`` started (+1) or ended (-1)."""

    def on_circuit(self, source: str, state: CircuitState) -> None:
        """The circuit breaker of ``source`` changed state."""

    def on_shared_cache(self, source: str, result: SharedCacheOutcome, count: int) -> None:
        """The shared (Redis) tier looked up ``count`` subjects of ``source``: fresh there
        (``hit``), absent or too old (``miss``), undecodable (``invalid``); or, once per lookup,
        waited for another process's identical call (``wait``) or skipped Redis, degraded
        (``bypass``)."""

    def on_redis_error(self, operation: str) -> None:
        """A Redis call of the shared tier failed (``read``, ``write``, ``invalidate``,
        ``subscribe``, ``ping``), or the tier itself did (``internal``: a bug; the request went
        to the source)."""

    def on_redis_state(self, up: bool) -> None:
        """The shared tier became degraded (``False``) or answers again (``True``)."""


class NullObserver:
    """The default observer: does nothing."""

    def on_upstream(self, source: str, operation: UpstreamOperation, elapsed_s: float, outcome: str) -> None:
        return None

    def on_cache(self, source: str, result: CacheOutcome) -> None:
        return None

    def on_inflight(self, source: str, delta: int) -> None:
        return None

    def on_circuit(self, source: str, state: CircuitState) -> None:
        return None

    def on_shared_cache(self, source: str, result: SharedCacheOutcome, count: int) -> None:
        return None

    def on_redis_error(self, operation: str) -> None:
        return None

    def on_redis_state(self, up: bool) -> None:
        return None


class BoundObserver:
    """The observer's hooks looked up once, with a no-op for each one it lacks."""

    __slots__ = (
        "on_cache",
        "on_circuit",
        "on_inflight",
        "on_redis_error",
        "on_redis_state",
        "on_shared_cache",
        "on_upstream",
    )

    def __init__(self, observer: object | None) -> None:
        null = NullObserver()
        self.on_upstream: Callable[[str, UpstreamOperation, float, str], None] = getattr(
            observer, "on_upstream", null.on_upstream
        )
        self.on_cache: Callable[[str, CacheOutcome], None] = getattr(observer, "on_cache", null.on_cache)
        self.on_inflight: Callable[[str, int], None] = getattr(observer, "on_inflight", null.on_inflight)
        self.on_circuit: Callable[[str, CircuitState], None] = getattr(
            observer, "on_circuit", null.on_circuit
        )
        self.on_shared_cache: Callable[[str, SharedCacheOutcome, int], None] = getattr(
            observer, "on_shared_cache", null.on_shared_cache
        )
        self.on_redis_error: Callable[[str], None] = getattr(observer, "on_redis_error", null.on_redis_error)
        self.on_redis_state: Callable[[bool], None] = getattr(observer, "on_redis_state", null.on_redis_state)
