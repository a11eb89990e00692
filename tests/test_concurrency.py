"""The shared concurrency helpers: one error out, never a group; unstarted coroutines closed."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from annotation_gateway.concurrency import first_leaf, gather, run_bounded
from annotation_gateway.errors import NotFoundError, SourceError, SourceUnavailableError


async def _value(value: int, delay: float = 0.0) -> int:
    await asyncio.sleep(delay)
    return value


async def _fail(exc: BaseException, delay: float = 0.0) -> int:
    await asyncio.sleep(delay)
    raise exc


def test_first_leaf_prefers_a_gateway_error_and_flattens_nested_groups() -> None:
    wanted = SourceUnavailableError("down", source="s")
    group = BaseExceptionGroup("outer", [ValueError("x"), ExceptionGroup("inner", [wanted])])
    assert first_leaf(group) is wanted
    plain = ValueError("first")
    assert first_leaf(ExceptionGroup("g", [plain, KeyError("k")])) is plain


def test_first_leaf_honours_a_narrower_preference() -> None:
    client = NotFoundError("missing")
    source = SourceError("boom", source="s")
    group = ExceptionGroup("g", [client, source])
    assert first_leaf(group) is client
    assert first_leaf(group, prefer=SourceError) is source


async def test_gather_returns_results_in_order() -> None:
    assert await gather([_value(1, 0.02), _value(2), _value(3, 0.01)]) == [1, 2, 3]
    assert await gather([_value(7)]) == [7]
    assert await gather([]) == []


async def test_gather_raises_the_error_itself_without_the_group() -> None:
    wanted = SourceUnavailableError("down", source="s")
    with pytest.raises(SourceUnavailableError) as caught:
        await gather([_value(1, 1.0), _fail(wanted)])
    assert caught.value is wanted
    assert caught.value.__context__ is None


async def test_run_bounded_runs_all_within_the_limit() -> None:
    running = 0
    peak = 0
    done: list[int] = []

    async def job(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        done.append(i)

    await run_bounded([job(i) for i in range(7)], 2)
    assert sorted(done) == list(range(7))
    assert peak == 2


async def test_run_bounded_stops_on_the_first_error_and_closes_the_rest() -> None:
    wanted = SourceUnavailableError("down", source="s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "never awaited" RuntimeWarning would fail the test
        with pytest.raises(SourceUnavailableError) as caught:
            await run_bounded([_fail(wanted)] + [_value(i) for i in range(5)], 1)
    assert caught.value is wanted
