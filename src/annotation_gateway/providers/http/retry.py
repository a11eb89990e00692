"""The one retrying call of every provider.

Contract:

- :func:`send_idempotent` sends a request built afresh by ``build`` for every try, hands the
  answer to ``classify`` (which returns a result or raises a ``SourceError``), and retries per a
  :class:`RetryPolicy`. Only for calls that are safe to repeat: reads, and writes the vendor
  keys idempotently (an upsert, a whole-schema replace). When a ``limit`` semaphore is given,
  each *try* holds one slot while its request is in flight; none is held while waiting between
  tries or while ``classify`` runs.
- :class:`RetryPolicy` retries only retryable ``SourceError``s (connect errors, resets,
  timeouts, 5xx, 429: ``error.retryable``), at most ``attempts`` tries in all. Before a retry it
  waits what a 429 asked for (``SourceRateLimitedError.retry_after``, from
  :func:`~annotation_gateway.providers.http.outcomes.retry_after_seconds`) capped at
  ``max_retry_after_s``, else an exponential backoff with full jitter (tenacity). A spent rate
  budget of the source's own (``SourceBudgetExhaustedError``) is not retried: the budget already
  waited as long as the source allows.
- ``budget``: the source's :class:`~annotation_gateway.providers.http.budget.RequestBudget`,
  taken before every try (inside the concurrency slot, right before the request leaves).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from annotation_gateway.errors import SourceBudgetExhaustedError, SourceError, SourceRateLimitedError
from annotation_gateway.providers.http.budget import RequestBudget
from annotation_gateway.providers.http.client import send

__all__ = ["RetryPolicy", "exchange_idempotent", "send_idempotent"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a source retries idempotent calls."""

    attempts: int = 3
    """Total tries, the first included."""
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    max_retry_after_s: float = 5.0
    """Cap on a vendor's requested wait (``Retry-After`` / ``X-RateLimit-Reset``)."""

    def wait_s(self, state: RetryCallState) -> float:
        """Seconds to wait before the next try, after the failure ``state`` holds."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, SourceRateLimitedError) and exc.retry_after is not None:
            return max(0.0, min(exc.retry_after, self.max_retry_after_s))
        jitter = wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s)
        return float(jitter(state))

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` with retries on retryable ``SourceError``s; re-raise the last one.

        The first try runs on its own: nearly every call ends there, and tenacity's machinery
        (its retrying object, attempt and state) costs ~30 µs a call. A first try that failed
        in a way worth retrying is handed to tenacity as its first attempt's outcome (raised
        again, not sent again), so the waits, the log and the count of tries are tenacity's."""
        try:
            return await call()
        except SourceError as exc:
            if self.attempts <= 1 or not _worth_retrying(exc):
                raise
            pending = [exc]

        async def again() -> T:
            if pending:
                raise pending.pop()
            return await call()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self.wait_s,
            retry=retry_if_exception(_worth_retrying),
            reraise=True,
            before_sleep=_log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await again()
        raise AssertionError("unreachable: tenacity re-raises")  # pragma: no cover


def _worth_retrying(exc: BaseException) -> bool:
    # A spent budget of our own already waited as long as the source allows (module docstring).
    return isinstance(exc, SourceError) and exc.retryable and not isinstance(exc, SourceBudgetExhaustedError)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    source = getattr(exc, "source", "?")
    log.info(
        "retrying read",
        extra={"source": source, "attempt": state.attempt_number, "error": type(exc).__name__},
    )


async def send_idempotent(
    client: httpx.AsyncClient,
    build: Callable[[], httpx.Request],
    classify: Callable[[httpx.Response], T],
    *,
    source: str,
    policy: RetryPolicy,
    limit: asyncio.Semaphore | None = None,
    budget: RequestBudget | None = None,
) -> T:
    """Send the request ``build`` makes and classify its answer, retrying per ``policy``.

    ``classify`` turns the response into a result or raises a ``SourceError`` (a retryable one,
    such as a 5xx or 429, is retried). ``limit``: the source's concurrency cap, held per try;
    ``budget``: its rate budget, taken per try.
    """
    return await exchange_idempotent(
        lambda: send(client, build(), source=source), classify, policy=policy, limit=limit, budget=budget
    )


async def exchange_idempotent(
    exchange: Callable[[], Awaitable[R]],
    classify: Callable[[R], T],
    *,
    policy: RetryPolicy,
    limit: asyncio.Semaphore | None = None,
    budget: RequestBudget | None = None,
) -> T:
    """:func:`send_idempotent` for any ``exchange`` that sends one request and reads its answer
    (:func:`~annotation_gateway.providers.http.client.get` is the reads' one; what it answers
    may be a response or what :func:`~annotation_gateway.providers.http.client.get_decoded`
    decoded from one)."""

    async def once() -> T:
        if limit is None:
            if budget is not None:
                await budget.acquire()
            response = await exchange()
        else:
            async with limit:
                if budget is not None:
                    await budget.acquire()
                response = await exchange()
        return classify(response)

    return await policy.run(once)
