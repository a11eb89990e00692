"""The per-source circuit breaker and bulkhead, and the optional dependency's outage state, driven
with a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from annotation_gateway.errors import (
    CircuitOpenError,
    SourceNotFoundError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from annotation_gateway.resilience import Bulkhead, CircuitBreaker, CircuitState, OptionalDependency
from tests.fakes import ManualClock


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise SourceUnavailableError("src: 503", source="src")


async def refused() -> str:
    raise SourceNotFoundError("src: no such project", source="src")


def breaker(clock: ManualClock, changes: list[CircuitState] | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        "src",
        failure_threshold=3,
        reset_timeout_s=10.0,
        clock=clock,
        on_state_change=(lambda _s, state: changes.append(state)) if changes is not None else None,
    )


async def test_opens_after_threshold_consecutive_retryable_failures() -> None:
    clock = ManualClock()
    changes: list[CircuitState] = []
    cb = breaker(clock, changes)
    for _ in range(2):
        with pytest.raises(SourceUnavailableError):
            await cb.call(down)
    assert cb.state == "closed"
    assert cb.consecutive_failures == 2
    with pytest.raises(SourceUnavailableError):
        await cb.call(down)
    assert cb.state == "open"
    assert changes == ["open"]

    calls = 0

    async def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(CircuitOpenError) as info:
        await cb.call(counted)
    assert calls == 0, "an open circuit sends no request"
    assert "circuit open" in info.value.detail
    assert info.value.source == "src"
    assert info.value.status == 502
    assert cb.retry_in_s == pytest.approx(10.0)


async def test_success_resets_the_consecutive_count() -> None:
    cb = breaker(ManualClock())
    for _ in range(2):
        with pytest.raises(SourceUnavailableError):
            await cb.call(down)
    assert await cb.call(ok) == "ok"
    assert cb.consecutive_failures == 0
    for _ in range(2):
        with pytest.raises(SourceUnavailableError):
            await cb.call(down)
    assert cb.state == "closed"


async def test_permanent_errors_do_not_count_and_break_the_streak() -> None:
    cb = breaker(ManualClock())
    for _ in range(5):
        with pytest.raises(SourceNotFoundError):
            await cb.call(refused)
    assert cb.state == "closed"
    with pytest.raises(SourceUnavailableError):
        await cb.call(down)
    with pytest.raises(SourceNotFoundError):
        await cb.call(refused)
    assert cb.consecutive_failures == 0


async def test_half_open_lets_one_trial_through_and_closes_on_success() -> None:
    clock = ManualClock()
    changes: list[CircuitState] = []
    cb = breaker(clock, changes)
    for _ in range(3):
        with pytest.raises(SourceUnavailableError):
            await cb.call(down)
    clock.advance(9.9)
    assert cb.state == "open"
    clock.advance(0.2)
    assert cb.state == "half_open"

    gate = asyncio.Event()

    async def slow_ok() -> str:
        await gate.wait()
        return "ok"

    trial = asyncio.create_task(cb.call(slow_ok))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError, match="trial"):
        await cb.call(ok)  # a second call while the trial is in flight is refused
    gate.set()
    assert await trial == "ok"
    assert cb.state == "closed"
    assert changes == ["open", "half_open", "closed"]
    assert await cb.call(ok) == "ok"


async def test_failed_trial_reopens_for_a_full_cool_down() -> None:
    clock = ManualClock()
    cb = breaker(clock)
    for _ in range(3):
        with pytest.raises(SourceUnavailableError):
            await cb.call(down)
    clock.advance(10)

    async def timeout() -> str:
        raise SourceTimeoutError("src: slow", source="src")

    with pytest.raises(SourceTimeoutError):
        await cb.call(timeout)
    assert cb.state == "open"
    clock.advance(9)
    with pytest.raises(CircuitOpenError):
        await cb.call(ok)
    clock.advance(1)
    assert await cb.call(ok) == "ok"
    assert cb.state == "closed"


async def test_permanent_error_on_trial_closes_the_circuit() -> None:
    clock = ManualClock()
    cb = breaker(clock)
    for _ in range(3):
        with pytest.raises(SourceUnavailableError):
            await cb.call(down)
    clock.advance(10)
    with pytest.raises(SourceNotFoundError):
        await cb.call(refused)
    assert cb.state == "closed", "the source answered, so it is reachable"


async def test_cancelled_trial_frees_the_slot_without_counting() -> None:
    clock = ManualClock()
    cb = breaker(clock)
    for _ in range(3):
        with pytest.raises(SourceUnavailableError):
            await cb.call(down)
    clock.advance(10)
    never = asyncio.Event()

    async def hang() -> str:
        await never.wait()
        return "never"

    trial = asyncio.create_task(cb.call(hang))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert cb.state == "half_open"
    assert await cb.call(ok) == "ok"
    assert cb.state == "closed"


async def test_non_source_errors_are_not_counted() -> None:
    cb = breaker(ManualClock())

    async def bug() -> str:
        raise KeyError("oops")

    for _ in range(5):
        with pytest.raises(KeyError):
            await cb.call(bug)
    assert cb.state == "closed"
    assert cb.consecutive_failures == 0


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("s", failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout_s"):
        CircuitBreaker("s", reset_timeout_s=-1)


async def test_bulkhead_caps_concurrency() -> None:
    bulkhead = Bulkhead(2)
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        async with bulkhead:
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(work() for _ in range(7)))
    assert peak == 2
    assert bulkhead.in_flight == 0


async def test_unlimited_bulkhead_counts_in_flight() -> None:
    bulkhead = Bulkhead(None)
    gate = asyncio.Event()
    seen: list[int] = []

    async def work() -> None:
        async with bulkhead:
            await gate.wait()

    tasks = [asyncio.create_task(work()) for _ in range(5)]
    await asyncio.sleep(0)
    seen.append(bulkhead.in_flight)
    gate.set()
    await asyncio.gather(*tasks)
    assert seen == [5]
    assert bulkhead.in_flight == 0
    with pytest.raises(ValueError, match="limit"):
        Bulkhead(0)


def dependency(clock: ManualClock, changes: list[bool]) -> OptionalDependency:
    return OptionalDependency(
        retry_s=2.0, grace_s=0.5, max_retry_s=10.0, clock=clock, on_change=changes.append
    )


def test_an_optional_dependency_backs_off_with_one_trial_a_period_doubling_to_its_cap() -> None:
    clock, changes = ManualClock(), []
    redis = dependency(clock, changes)
    assert redis.allow()
    assert redis.up
    assert redis.retry_in_s == 0.0
    assert redis.failed() is True  # this failure took it down
    assert not redis.up
    assert changes == [False]
    assert not redis.allow()
    assert redis.retry_in_s == 2.0
    periods = []
    for _ in range(5):
        clock.advance(redis.retry_in_s)
        assert redis.allow()  # the trial ...
        assert not redis.allow()
        assert not redis.allow()
        clock.advance(1.0)  # the trial fails after the grace: a failed trial, the backoff doubles
        assert redis.failed() is False  # already down
        periods.append(redis.backoff_s)
    assert periods == [4.0, 8.0, 10.0, 10.0, 10.0]
    clock.advance(redis.retry_in_s)
    assert redis.allow()
    assert redis.succeeded() is True
    assert redis.up
    assert changes == [False, True]
    assert redis.succeeded() is False  # already up: nothing to tell
    assert redis.backoff_s == 2.0  # a new outage starts from retry_s again
    assert redis.allow()
    assert redis.allow()


def test_failures_of_calls_under_way_when_it_went_down_are_one_outage() -> None:
    clock, changes = ManualClock(), []
    redis = dependency(clock, changes)
    assert redis.failed() is True
    clock.advance(0.4)  # within the grace: another call of the same outage timing out
    assert redis.failed() is False
    assert redis.backoff_s == 2.0
    assert redis.retry_in_s == pytest.approx(1.6)
    clock.advance(0.2)  # past the grace: a new failure doubles the backoff
    redis.failed()
    assert redis.backoff_s == 4.0
    assert redis.retry_in_s == 4.0
    assert changes == [False]


def test_a_trial_that_never_reports_does_not_hold_the_dependency_down_for_good() -> None:
    clock, changes = ManualClock(), []
    redis = dependency(clock, changes)
    redis.failed()
    clock.advance(2.0)
    assert redis.allow()  # a trial cancelled with its request: it reports nothing
    assert not redis.allow()
    clock.advance(2.0)
    assert redis.allow()  # the next period has its own trial
    with pytest.raises(ValueError, match="negative"):
        OptionalDependency(retry_s=-1.0, grace_s=0.0)
