"""Moving-window rate limits (the ``limits`` library): vendor budgets and per-key client limits.

Contract (SPEC §9):
- :class:`RateLimiter` is one app's limit store. With ``[cache] backend = "redis"`` the windows
  live in Redis (URL from the variable ``cache.redis_url_env`` names), so every process and
  replica shares them; otherwise in this process's memory. Redis is reached through redis-py's
  asyncio client (``limits``' ``implementation="redispy"``; its default would be coredis).
  :meth:`RateLimiter.hit` takes one unit from every limit of a list, or says which refused and
  when it frees a unit.
- Redis down or slow never fails a request: :meth:`RateLimiter.warm` connects at start-up, each
  Redis call is bounded by ``[cache] redis_timeout_s`` (the cache tier's, one Redis); on an
  error the limiter logs it once and counts in a per-process memory store, trying Redis again
  with one request after ``[cache] redis_retry_s``, doubling per failed trial up to 30 s (the
  shared cache tier's backoff: :class:`~annotation_gateway.resilience.OptionalDependency`; the
  requests that arrive while a trial waits on a hung Redis count in memory at once).
  ``degraded`` says which is in use. While degraded each process enforces every budget on its
  own, so N processes may together spend up to N times a budget: the price of answering at all.
- :class:`SourceBudget` is one source's ``[[sources]] rate_limit``, taken before *every* HTTP
  request to the vendor (retries, pages, chunks and health probes included: that is what the
  vendor counts; a budget per guarded call would let one federated read spend many). A request
  the window does not allow waits for it, up to ``max_wait_s`` (the source's ``timeout_s``; the
  whole-call deadline of ``[resilience]`` still applies), else the source fails with
  :class:`~annotation_gateway.errors.SourceBudgetExhaustedError` (``rate_limited``, retryable,
  so a stale answer may stand in; the provider does not retry it: it already waited).
- Several limits (``"10/second;500/hour"``) are all taken; a unit taken from an earlier one when
  a later one refuses is not given back (``limits`` has no multi-limit transaction): a refused
  request may cost an earlier window one unit, never the reverse.

The windows' timestamps are the storages' own (``time.time``, which ``limits`` reads itself),
so the wait is computed on that clock (``wall_clock``, injectable with the storage).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from annotation_gateway.errors import SourceBudgetExhaustedError
from annotation_gateway.providers.config import ConfigError, read_secret
from annotation_gateway.resilience import OptionalDependency
from annotation_gateway.settings import GatewaySettings

__all__ = [
    "REDIS_RETRY_S",
    "REDIS_TIMEOUT_S",
    "RateLimiter",
    "SourceBudget",
    "Verdict",
    "limiter_url",
    "needs_limiter",
    "redis_url",
    "source_budgets",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_TIMEOUT_S = 0.5
"""Longest wait for one Redis call of a limiter built without settings
(:meth:`RateLimiter.from_settings` uses ``[cache] redis_timeout_s``, the same 0.5 s by
default); beyond it the request is counted in memory instead. Not much less: a burst of first
requests opens a connection each and loads the Lua scripts (:meth:`RateLimiter.warm` does that
once at start-up), which took over 0.25 s on the loaded 2-core test machine and wrongly
switched to memory. A hit is one Lua script: 0.27 ms wall, 0.21 ms of this process's CPU
(redis-py's asyncio client and ``limits``' layers), against 0.011 ms in memory (3,000 hits on
loopback Redis 8, the 2-core dev machine); a refusal adds a second call for the window's reset
time."""
REDIS_RETRY_S = 5.0
"""After a Redis failure, how long the memory store of a limiter built without settings counts
before Redis is tried again (the first backoff; it doubles while trials fail).
:meth:`RateLimiter.from_settings` uses ``[cache] redis_retry_s``."""
KEY_PREFIX = "annotation-gateway-limits"
_WARM_UP = parse_many("1000000/second")
MAX_JITTER_S = 0.05
"""Waiters for one freed unit wake up to this much apart, so they do not all ask at once."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`RateLimiter.hit` decided."""

    allowed: bool
    refused_by: RateLimitItem | None = None
    """The limit that refused (``None`` when allowed)."""
    wait_s: float = 0.0
    """Seconds until that limit's window frees a unit (0 when allowed)."""
    remaining: int = 0
    """Units left in the refusing window (0 when refused by it; unknown, 0, when allowed)."""


def limiter_url(redis_url: str) -> str:
    """A ``redis://`` / ``rediss://`` / ``unix://`` URL in ``limits``' async notation."""
    for plain, limits_scheme in (
        ("redis://", "async+redis://"),
        ("rediss://", "async+rediss://"),
        ("unix://", "async+redis+unix://"),
    ):
        if redis_url.startswith(plain):
            return limits_scheme + redis_url[len(plain) :]
    raise ConfigError("cache.redis_url_env: the Redis URL must start with redis://, rediss:// or unix://")


def needs_limiter(settings: GatewaySettings) -> bool:
    """Whether any enabled source or any key has a ``rate_limit``."""
    return any(s.rate_limit for s in settings.sources if s.enabled) or any(
        k.rate_limit for k in settings.auth.keys
    )


def redis_url(settings: GatewaySettings, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The limiter's Redis URL (``None`` for the memory backend); ``ConfigError`` when the
    variable ``cache.redis_url_env`` names is unset, empty or a placeholder, or not a Redis URL.
    ``serve`` calls it before anything listens, so a missing URL is exit code 2, not a crash."""
    if settings.cache.backend != "redis":
        return None
    url = read_secret(settings.cache.redis_url_env, key="cache.redis_url_env", environ=environ)
    assert url is not None  # the variable name is a required field
    limiter_url(url.get_secret_value())  # the scheme is checked here, not at the first request
    return url.get_secret_value()


class RateLimiter:
    """One app's moving-window limit store (Redis or memory; see the module docstring)."""

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        redis_timeout_s: float = REDIS_TIMEOUT_S,
        redis_retry_s: float = REDIS_RETRY_S,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        """``redis_url``: ``redis://…`` (shared windows) or ``None`` (this process's memory);
        ``clock`` (monotonic) times the Redis retry; ``wall_clock`` is the storages' clock;
        ``on_degraded`` hears each switch to memory (``True``) and back (the metrics)."""
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        if redis_url is not None:
            storage = RedisStorage(
                limiter_url(redis_url),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=KEY_PREFIX,
                socket_timeout=redis_timeout_s,
                socket_connect_timeout=redis_timeout_s,
            )
            self._redis = MovingWindowRateLimiter(storage)
        self.wall_clock = wall_clock
        self._redis_timeout_s = redis_timeout_s
        self._on_degraded = on_degraded
        self._health = OptionalDependency(
            retry_s=redis_retry_s, grace_s=redis_timeout_s, clock=clock, on_change=self._switched
        )

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> RateLimiter | None:
        """The limiter ``settings`` need: ``None`` when no source and no key has a
        ``rate_limit``; Redis-backed with ``[cache] backend = "redis"`` (``ConfigError`` when
        the URL variable is unset), its calls bounded and retried as the cache tier's are
        (``[cache] redis_timeout_s``, ``redis_retry_s``: one Redis, one tuning)."""
        if not needs_limiter(settings):
            return None
        return cls(
            redis_url=redis_url(settings, environ=environ),
            clock=clock,
            redis_timeout_s=settings.cache.redis_timeout_s,
            redis_retry_s=settings.cache.redis_retry_s,
            on_degraded=on_degraded,
        )

    async def warm(self) -> None:
        """Open a Redis connection and load the Lua scripts before the first request needs them
        (the app's start-up); a Redis that does not answer just starts the limiter degraded."""
        await self.hit(_WARM_UP, "warm-up")

    @property
    def degraded(self) -> bool:
        """True while Redis failed and this process counts in memory."""
        return not self._health.up

    def _switched(self, up: bool) -> None:
        if self._on_degraded is not None:
            self._on_degraded(not up)

    async def _run(self, op: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        redis = self._redis
        if redis is not None and self._health.allow():
            try:
                async with asyncio.timeout(self._redis_timeout_s):
                    result = await op(redis)
            except (StorageError, RedisError, OSError, TimeoutError) as exc:
                if self._health.failed():
                    log.warning(
                        "rate limits: Redis failed (%s); counting in this process until it answers",
                        type(exc).__name__,
                    )
            else:
                if self._health.succeeded():
                    log.warning("rate limits: Redis answers again; limits are shared again")
                return result
        return await op(self._memory)

    async def hit(self, items: Sequence[RateLimitItem], *identifiers: str) -> Verdict:
        """Take one unit from each of ``items`` for ``identifiers``, or say which refused."""
        for item in items:

            async def take(limiter: MovingWindowRateLimiter, item: RateLimitItem = item) -> Verdict:
                if await limiter.hit(item, *identifiers):
                    return Verdict(True)
                stats = await limiter.get_window_stats(item, *identifiers)
                wait_s = max(0.0, stats.reset_time - self.wall_clock())
                return Verdict(False, refused_by=item, wait_s=wait_s, remaining=max(0, stats.remaining))

            verdict = await self._run(take)
            if not verdict.allowed:
                return verdict
        return Verdict(True)


class SourceBudget:
    """One source's vendor budget, taken before each HTTP request (module docstring)."""

    def __init__(
        self,
        limiter: RateLimiter,
        source: str,
        rate_limit: str,
        *,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limiter = limiter
        self.source = source
        self.rate_limit = rate_limit
        self._items = parse_many(rate_limit)
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep

    async def acquire(self) -> None:
        """Return once the budget allows one more request; wait for it up to ``max_wait_s``,
        else raise ``SourceBudgetExhaustedError`` (with the wait it would have needed)."""
        deadline = self._clock() + self._max_wait_s
        while True:
            verdict = await self._limiter.hit(self._items, "source", self.source)
            if verdict.allowed:
                return
            left = deadline - self._clock()
            if verdict.wait_s > left:
                raise SourceBudgetExhaustedError(
                    f"{self.source}: its rate budget ({self.rate_limit}) is spent; the next request "
                    f"fits in {verdict.wait_s:.1f} s, beyond the {self._max_wait_s:g} s it may wait",
                    source=self.source,
                    retry_after=math.ceil(verdict.wait_s),
                )
            # S311: jitter, not cryptography.
            await self._sleep(verdict.wait_s + random.uniform(0, MAX_JITTER_S))


def source_budgets(limiter: RateLimiter | None, settings: GatewaySettings) -> dict[str, SourceBudget]:
    """Every enabled source's budget, by source name (none without a ``rate_limit``)."""
    if limiter is None:
        return {}
    return {
        s.name: SourceBudget(limiter, s.name, s.rate_limit, max_wait_s=s.timeout_s)
        for s in settings.sources
        if s.enabled and s.rate_limit
    }
