"""Run coroutines concurrently and fail the way a caller expects: with one error, not a group.

Contract of every helper here:

* On the first failure the coroutines still running are cancelled, and exactly one exception is
  raised: the first failure that is an instance of ``prefer`` (a :class:`GatewayError` unless the
  caller narrows it), else the first failure of any kind. It is raised itself, never wrapped in
  an ``ExceptionGroup``, and the group is not chained onto it, so callers catch what they expect.
* "First" is the order of the failures in the group, nested groups flattened breadth-first.
* Coroutines that were never started (the run stopped first) are closed, so Python does not warn
  that they were never awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from annotation_gateway.errors import GatewayError

T = TypeVar("T")

__all__ = ["first_leaf", "gather", "run_bounded"]


async def gather(
    coros: Iterable[Coroutine[Any, Any, T]], *, prefer: type[BaseException] = GatewayError
) -> list[T]:
    """Run ``coros`` all at once; their results in order, or the first failure (see the contract).

    A single coroutine is awaited directly, without a task.
    """
    pending = list(coros)
    if len(pending) == 1:
        return [await pending[0]]
    failure: BaseException | None = None
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in pending]
    except BaseExceptionGroup as failed:
        failure = first_leaf(failed, prefer=prefer)
    if failure is not None:
        raise failure  # outside the except block, so the group is not chained onto it
    return [task.result() for task in tasks]


async def run_bounded(
    coros: Sequence[Coroutine[Any, Any, Any]],
    concurrency: int,
    *,
    prefer: type[BaseException] = GatewayError,
) -> None:
    """Run ``coros`` with at most ``concurrency`` at once, started in order; results are dropped.

    The first failure stops the run (see the contract); the coroutines not yet started are closed.
    """
    pending = iter(coros)
    failure: BaseException | None = None

    async def worker() -> None:
        for coro in pending:
            await coro

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(coros))):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        failure = first_leaf(failed, prefer=prefer)
    finally:
        for coro in pending:  # never started (the run stopped): close them without warnings
            coro.close()
    if failure is not None:
        raise failure


def first_leaf(
    group: BaseExceptionGroup[BaseException], *, prefer: type[BaseException] = GatewayError
) -> BaseException:
    """The failure to report for ``group``: its first ``prefer`` leaf, else its first leaf.

    A failure of ours says more than, say, an unrelated error it caused elsewhere.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        current = stack.pop(0)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        else:
            leaves.append(current)
    return next((e for e in leaves if isinstance(e, prefer)), leaves[0])
