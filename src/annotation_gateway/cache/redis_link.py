"""One process's connection to the shared cache tier's Redis: the client, the bound on every
call, and whether to call at all.

Contract:
- the URL may hold a password: it is never logged, shown in ``/readyz`` or put in a metric label
  (:func:`redact` is what logs show; :attr:`RedisLink.target` is the redacted URL);
- the client is redis-py's asyncio API; connecting is lazy. Every call of the tier is bounded by
  ``redis_timeout_s`` (the caller's ``asyncio.timeout(link.timeout)``), a timeout is not retried,
  and a broken connection is retried once, at once, on a new one (a restarted Redis);
- :meth:`RedisLink.allowed` says whether to call Redis now: the backoff of
  :class:`~annotation_gateway.resilience.OptionalDependency` (one trial call per period after a
  failure, ``redis_retry_s`` doubling up to ``DEFAULT_MAX_RETRY_S``, 30 s), and never once the link is
  closed. The callers report each call: :meth:`RedisLink.failed` counts the error (by
  operation, through ``on_error``) and logs the switch to degraded once,
  :meth:`RedisLink.succeeded` logs the way back; ``on_state`` hears both (the metrics).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from annotation_gateway.resilience import Clock, OptionalDependency
from annotation_gateway.settings import CacheConfig

__all__ = ["RedisLink", "redact"]

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """``url`` with its password (and user) replaced by ``***``: what logs may show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    auth = "***@" if parts.username or parts.password else ""
    return urlunsplit((parts.scheme, f"{auth}{host}{port}", parts.path, "", ""))


class RedisLink:
    """The client and the health of this process's connection to the tier's Redis."""

    def __init__(
        self,
        url: str | SecretStr,
        config: CacheConfig,
        *,
        clock: Clock = time.monotonic,
        on_error: Callable[[str], None],
        on_state: Callable[[bool], None],
    ) -> None:
        """``clock`` (monotonic) times the backoff; ``on_error`` hears each failed call's
        operation, ``on_state`` each switch (``False`` degraded, ``True`` back)."""
        secret = url.get_secret_value() if isinstance(url, SecretStr) else url
        self.target = redact(secret)
        self.timeout = config.redis_timeout_s
        """What one call may take (the callers bound each with ``asyncio.timeout``)."""
        self.client: Redis = Redis.from_url(
            secret,
            # Each call of the tier is bounded by its own asyncio.timeout(redis_timeout_s) instead:
            # with a socket timeout redis-py wraps every send in asyncio.wait_for, a task per
            # command on Python 3.11 (measured: a PING cost 184 µs of CPU with it, 99 without).
            # A call cut short by the timeout is cancelled, and redis-py then drops the
            # connection (its reply could otherwise be read as the next command's).
            socket_timeout=None,
            socket_connect_timeout=config.redis_timeout_s,
            # A timeout is not retried: a hung Redis must cost one timeout per call, not a retry
            # loop inside a request (the backoff decides when to try again). A broken connection
            # is retried once, at once, on a new one: that is a restarted Redis, and on loopback
            # or a LAN a refused connection costs well under a millisecond.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            client_name="annotation-gateway",
        )
        self._on_error = on_error
        self._health = OptionalDependency(
            retry_s=config.redis_retry_s,
            grace_s=config.redis_timeout_s,
            clock=clock,
            on_change=on_state,
        )
        self._last_error: str | None = None
        self.closed = False

    @property
    def up(self) -> bool:
        """False while degraded (the last call failed and no call succeeded since)."""
        return self._health.up

    @property
    def backoff_s(self) -> float:
        """How long a failing Redis is left alone now."""
        return self._health.backoff_s

    def allowed(self) -> bool:
        """Whether to call Redis now (up, or this call is the backoff period's trial)."""
        return not self.closed and self._health.allow()

    def failed(self, operation: str, exc: BaseException) -> None:
        """A call failed (``operation`` names it in the metrics and the status)."""
        self._on_error(operation)
        self._last_error = f"{operation}: {type(exc).__name__}"
        if self._health.failed():
            # The exception's text may name the host, never the password; only its type is logged.
            log.warning(
                "shared cache tier degraded: Redis %s failed (%s); answering without it",
                operation,
                type(exc).__name__,
            )

    def succeeded(self) -> None:
        """A call succeeded."""
        if self._health.succeeded():
            self._last_error = None
            log.warning("shared cache tier back: Redis answers again")

    def unreachable(self) -> str | None:
        """What ``/readyz`` says while degraded (no URL), ``None`` when up."""
        if self._health.up:
            return None
        return (
            f"Redis unreachable ({self._last_error}); answering from memory and the sources, "
            f"next try in {self._health.retry_in_s:.1f} s"
        )

    def close(self) -> None:
        """No call allowed from now on (calls under way finish; :meth:`aclose` ends them)."""
        self.closed = True

    async def aclose(self) -> None:
        """No call from now on; the connections closed."""
        self.closed = True
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
