"""Resilience: a circuit breaker and a concurrency cap (bulkhead) per source; the outage state of
an optional dependency (Redis).

Contract:
- :class:`CircuitBreaker` wraps every upstream call of one source. It counts *consecutive
  retryable* failures (``SourceError.retryable``: timeouts, connect errors, 5xx, 429); after
  ``failure_threshold`` of them it opens and every call fails at once with
  :class:`~annotation_gateway.errors.CircuitOpenError` (no request is sent). After
  ``reset_timeout_s`` it lets exactly **one** trial call through (half-open): success closes it,
  a retryable failure opens it again for another cool-down. A permanent error (an upstream 4xx)
  proves the source answered, so it counts as a success for the breaker's purpose; an exception
  that is not a ``SourceError`` (a bug, a cancellation) is not counted either way, nor is the
  source's own spent rate budget (``SourceBudgetExhaustedError``: no request was sent, so it
  says nothing about the vendor; counting it would report a healthy vendor as unavailable).
- :class:`Bulkhead` caps how many upstream calls of one source are in flight; callers beyond the
  cap wait their turn (the caller's deadline bounds the wait).
- :class:`OptionalDependency` is the state of a dependency the gateway answers without while it
  fails (Redis, for the shared cache tier and the shared rate limits): up until a call fails;
  then down, and no call is made until the backoff ends; then exactly **one** trial call per
  backoff period (a hung Redis holds up one request a period, not every request that arrives
  while the trial waits), the period doubling per failed trial up to ``max_retry_s``. Failures
  of calls that were already under way when it went down (within ``grace_s`` of the failure
  that escalated, the calls' own timeout) are the same outage and do not double it. The caller
  does the calls, logs and counts; this only says whether to call and hears how it went.

Why hand-written: the breaker libraries on PyPI are stale (aiobreaker's last release is from
2021) or little used (purgatory), and the behaviour needed here is small: about 100 lines with
tests in ``tests/test_resilience.py``. Retries are *not* done here: providers already retry
idempotent reads with tenacity (``providers/http.py``), and a second layer would multiply attempts.

Time comes from an injectable monotonic clock so tests can move it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal, TypeVar

from annotation_gateway.errors import CircuitOpenError, SourceBudgetExhaustedError, SourceError

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_MAX_RETRY_S",
    "DEFAULT_RESET_TIMEOUT_S",
    "Bulkhead",
    "CircuitBreaker",
    "CircuitState",
    "Clock",
    "OptionalDependency",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

CircuitState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]
"""Seconds from a monotonic clock (``time.monotonic`` by default)."""

DEFAULT_FAILURE_THRESHOLD = 5
"""Consecutive retryable failures (each already retried inside the provider) that open a circuit."""
DEFAULT_RESET_TIMEOUT_S = 30.0
"""How long an open circuit refuses calls before it lets one trial through."""
DEFAULT_MAX_RETRY_S = 30.0
"""The longest backoff of an :class:`OptionalDependency` (its first is its ``retry_s``)."""


class CircuitBreaker:
    """closed → open after N consecutive retryable failures → half-open after a cool-down → one
    trial call → closed (success) or open again (failure).

    Not thread-safe; meant for one asyncio event loop (all state changes happen between awaits).
    """

    def __init__(
        self,
        source: str,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S,
        clock: Clock = time.monotonic,
        on_state_change: Callable[[str, CircuitState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_s < 0:
            raise ValueError("reset_timeout_s must not be negative")
        self.source = source
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_state_change = on_state_change
        self._state: CircuitState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    # --- inspection ------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state; an open circuit whose cool-down is over reads as ``half_open``."""
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._set_state("half_open")
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a trial call through (0 when not open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    # --- use ---------------------------------------------------------------------------------

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` if the circuit allows it, recording its outcome; else ``CircuitOpenError``."""
        trial = self._admit()
        try:
            result = await fn()
        except SourceBudgetExhaustedError:
            if trial:
                self._trial_in_flight = False
            raise
        except SourceError as exc:
            self._record(trial, failed=exc.retryable)
            raise
        except BaseException:
            # A bug or a cancellation says nothing about the source's health: free the trial
            # slot so the next call can try, and leave the counters alone.
            if trial:
                self._trial_in_flight = False
            raise
        self._record(trial, failed=False)
        return result

    def _admit(self) -> bool:
        """Raise if no call may go through now; return whether this call is the half-open trial."""
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        if state == "open":
            detail = (
                f"{self.source}: circuit open after {self._failures} consecutive failures; "
                f"next trial in {self.retry_in_s:.1f} s"
            )
        else:
            detail = f"{self.source}: circuit half-open, a trial request is in flight"
        raise CircuitOpenError(detail, source=self.source)

    def _record(self, trial: bool, *, failed: bool) -> None:
        if trial:
            self._trial_in_flight = False
        if not failed:
            self._failures = 0
            if self._state != "closed":
                self._set_state("closed")
            return
        self._failures += 1
        if trial or (self._state == "closed" and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            self._set_state("open")

    def _set_state(self, state: CircuitState) -> None:
        if state == self._state:
            return
        self._state = state
        log.warning("circuit %s", state, extra={"source": self.source, "failures": self._failures})
        if self._on_state_change is not None:
            self._on_state_change(self.source, state)


class Bulkhead:
    """At most ``limit`` concurrent holders (``None``: unlimited, still counted).

    Used as ``async with bulkhead: ...``; waiters queue in FIFO order (asyncio.Semaphore).
    """

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 or None")
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit) if limit is not None else None
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __aenter__(self) -> None:
        if self._semaphore is not None:
            await self._semaphore.acquire()
        self._in_flight += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_flight -= 1
        if self._semaphore is not None:
            self._semaphore.release()


class OptionalDependency:
    """up → down at a failed call → one trial call per backoff period → up at a call that
    succeeds (the module docstring). Not thread-safe; one asyncio event loop."""

    def __init__(
        self,
        *,
        retry_s: float,
        grace_s: float,
        max_retry_s: float = DEFAULT_MAX_RETRY_S,
        clock: Clock = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """``retry_s``: the first backoff; ``grace_s``: how long after the failure that took it
        down (or doubled its backoff) other calls' failures are the same outage (their timeout);
        ``on_change`` hears each switch, ``False`` down and ``True`` back up."""
        if retry_s < 0 or grace_s < 0 or max_retry_s < 0:
            raise ValueError("retry_s, grace_s and max_retry_s must not be negative")
        self._retry_s = retry_s
        self._grace_s = grace_s
        self._max_retry_s = max_retry_s
        self._clock = clock
        self._on_change = on_change
        self._up = True
        self._failures = 0
        self._retry_at = 0.0
        self._escalated_at = 0.0

    @property
    def up(self) -> bool:
        return self._up

    @property
    def retry_in_s(self) -> float:
        """Seconds until the next trial call (0 when up, or when one may go now)."""
        return 0.0 if self._up else max(self._retry_at - self._clock(), 0.0)

    @property
    def backoff_s(self) -> float:
        """The current backoff period: ``retry_s``, doubled per failed trial, at most
        ``max_retry_s``."""
        return float(min(self._retry_s * 2 ** max(self._failures - 1, 0), self._max_retry_s))

    def allow(self) -> bool:
        """Whether to make a call now: always while up; while down, once per backoff period
        (that call is the trial, the others until the next period are refused)."""
        if self._up:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.backoff_s
        return True

    def failed(self) -> bool:
        """A call failed; True when this failure took the dependency down."""
        now = self._clock()
        if not self._up and now - self._escalated_at < self._grace_s:
            # A call that was already under way when it failed: the same outage, so it does
            # not double the backoff (32 requests in flight would otherwise make it 30 s at once).
            return False
        self._failures += 1
        self._escalated_at = now
        self._retry_at = now + self.backoff_s
        if not self._up:
            return False
        self._up = False
        if self._on_change is not None:
            self._on_change(False)
        return True

    def succeeded(self) -> bool:
        """A call succeeded; True when this success brought the dependency back."""
        if self._up:
            return False
        self._up = True
        self._failures = 0
        if self._on_change is not None:
            self._on_change(True)
        return True
