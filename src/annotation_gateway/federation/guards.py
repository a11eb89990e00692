"""Per-source guards: every upstream call passes a bulkhead, a deadline and a circuit breaker.

Contract: :class:`SourceRuntime` is one configured source with its provider, breaker and
bulkhead (and its last health probe). :meth:`SourceRuntime.guarded` runs one upstream call
through the bulkhead (optional cap on calls in flight), the breaker, and the whole-call deadline
(``deadline_s``: chunks, pages and the provider's own retries included; ``None``: none), and
tells the observer the outcome. A provider may raise only ``SourceError``s; anything else is a
bug in that adapter, logged once and turned into that source's ``SourceError`` so one broken
adapter never fails the whole federated answer. No retry here: providers retry idempotent
reads themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from annotation_gateway.errors import CircuitOpenError, GatewayError, SourceError, SourceTimeoutError
from annotation_gateway.federation.observer import BoundObserver, UpstreamOperation
from annotation_gateway.model import ProviderKind
from annotation_gateway.providers.base import AnnotationProvider, HealthReport
from annotation_gateway.resilience import Bulkhead, CircuitBreaker

__all__ = ["SourceRuntime"]

log = logging.getLogger("annotation_gateway.federation")

T = TypeVar("T")


@dataclass(slots=True)
class SourceRuntime:
    """One configured source at run time."""

    provider: AnnotationProvider
    name: str
    kind: ProviderKind
    breaker: CircuitBreaker
    bulkhead: Bulkhead
    last_health: HealthReport | None = None
    last_checked_at: datetime | None = None
    last_checked_mono: float | None = None

    async def guarded(
        self,
        operation: UpstreamOperation,
        call: Callable[[], Awaitable[T]],
        *,
        observer: BoundObserver,
        deadline_s: float | None,
    ) -> T:
        """One upstream call through the bulkhead, the deadline and the breaker, observed."""
        outcome = "ok"
        started = time.perf_counter()
        try:
            async with self.bulkhead:
                observer.on_inflight(self.name, 1)
                try:
                    return await self.breaker.call(lambda: self._within_deadline(call, deadline_s))
                finally:
                    observer.on_inflight(self.name, -1)
        except CircuitOpenError:
            outcome = "circuit_open"
            raise
        except GatewayError as exc:
            outcome = exc.code.value
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome = "internal_error"
            log.exception("provider raised a non-SourceError", extra={"source": self.name})
            raise SourceError(
                f"{self.name}: internal error in the source adapter ({type(exc).__name__})",
                source=self.name,
            ) from exc
        finally:
            observer.on_upstream(self.name, operation, time.perf_counter() - started, outcome)

    async def _within_deadline(self, call: Callable[[], Awaitable[T]], deadline_s: float | None) -> T:
        if deadline_s is None:
            return await call()
        try:
            async with asyncio.timeout(deadline_s):
                return await call()
        except TimeoutError as exc:
            raise SourceTimeoutError(
                f"{self.name}: no complete answer within {deadline_s:g} s", source=self.name
            ) from exc
