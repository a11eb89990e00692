"""The shared tier's link to Redis: the URL never shown whole, and what the link says while Redis
fails (driven with a manual clock; no call is made)."""

from __future__ import annotations

import asyncio

from annotation_gateway.cache.redis_link import RedisLink, redact
from annotation_gateway.settings import CacheConfig
from tests.fakes import ManualClock


def test_redact_hides_the_password() -> None:
    assert redact("redis://:hunter2@cache.internal:6380/1") == "redis://***@cache.internal:6380/1"
    assert redact("rediss://app:hunter2@cache/0") == "rediss://***@cache/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "hunter2" not in redact("redis://app:hunter2@[::1]:6379")


def test_a_failing_redis_is_left_alone_and_reported_without_its_password() -> None:
    clock = ManualClock()
    errors: list[str] = []
    states: list[bool] = []
    config = CacheConfig(backend="redis", redis_retry_s=2.0)
    link = RedisLink(
        "redis://:hunter2@127.0.0.1:1/0", config, clock=clock, on_error=errors.append, on_state=states.append
    )
    assert link.target == "redis://***@127.0.0.1:1/0"
    assert link.allowed()
    assert link.unreachable() is None
    link.failed("read", ConnectionError("Error connecting to redis://:hunter2@127.0.0.1:1"))
    link.failed("write", TimeoutError())  # under way when it failed: the same outage
    assert (errors, states) == (["read", "write"], [False])
    detail = link.unreachable()
    assert detail is not None
    assert "hunter2" not in detail
    assert detail.startswith("Redis unreachable (write: TimeoutError)")
    assert detail.endswith("next try in 2.0 s")
    assert not link.allowed()
    clock.advance(2.0)
    assert link.allowed()  # the trial
    assert not link.allowed()
    link.succeeded()
    assert link.up
    assert link.unreachable() is None
    assert states == [False, True]
    asyncio.run(link.aclose())
    assert not link.allowed()  # closed: no call any more
