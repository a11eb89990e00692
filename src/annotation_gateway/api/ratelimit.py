"""Per-key client limits: ``[[auth.keys]] rate_limit`` → 429 with the RateLimit header fields.

Contract (SPEC §9):
- :class:`ClientLimits` holds each configured key's limits (by key name, the partition) over the
  app's :class:`~annotation_gateway.ratelimit.RateLimiter` (Redis-shared by every replica with
  ``[cache] backend = "redis"``, per process otherwise; memory while Redis is down).
- :meth:`ClientLimits.check` runs after authentication on every authenticated request, the fast
  lane's included (:func:`~annotation_gateway.api.auth.authenticate` calls it); a request beyond
  the key's limit is refused with :class:`~annotation_gateway.errors.ClientRateLimitedError`:
  429 ``rate_limited`` with ``Retry-After`` (whole seconds until the moving window frees a
  unit), ``RateLimit-Policy`` (every policy of the key) and ``RateLimit`` (the one that
  refused, ``r=0``, ``t`` = the same seconds as ``Retry-After``). Keys without a limit and the
  anonymous principal (auth off) are never limited; answers other than 429 carry no RateLimit
  fields (that would cost a second window read on every request).

Cost: only keys with a ``rate_limit`` pay, one window hit per request: ~0.01 ms of CPU in
memory; with Redis ~0.21 ms of CPU and ~0.27 ms of wall time (measured: see ``REDIS_TIMEOUT_S``
in :mod:`annotation_gateway.ratelimit`), about as much again as a whole cache hit (~0.22 ms).

Header syntax: draft-ietf-httpapi-ratelimit-headers-11 §3-§4 (Structured Field lists of items:
``"name";q=<quota>;w=<window s>`` and ``"name";r=<remaining>;t=<seconds>``; the -11 text was
checked; -12 of 2026-11-20 is the newest revision the datatracker lists). -11 §6: a
``Retry-After`` next to ``RateLimit`` should not point earlier than the end of the effective
window, so both say the same number of seconds. A key with one limit calls its policy
``"default"``; with several (``"10/second;500/hour"``) each is named by its window in seconds
(``"1s"``, ``"3600s"``).
"""

from __future__ import annotations

import math

from limits import RateLimitItem, parse_many

from annotation_gateway.errors import ClientRateLimitedError
from annotation_gateway.ratelimit import RateLimiter
from annotation_gateway.settings import AuthConfig

__all__ = ["RATELIMIT_HEADERS_DRAFT", "ClientLimits", "policy_field", "service_limit_field"]

RATELIMIT_HEADERS_DRAFT = "draft-ietf-httpapi-ratelimit-headers-11"


def _policy_name(item: RateLimitItem, alone: bool) -> str:
    return "default" if alone else f"{item.get_expiry()}s"


def policy_field(items: list[RateLimitItem]) -> str:
    """``RateLimit-Policy``: one quota policy item per limit (``"default";q=100;w=1``)."""
    alone = len(items) == 1
    return ", ".join(f'"{_policy_name(i, alone)}";q={i.amount};w={i.get_expiry()}' for i in items)


def service_limit_field(
    item: RateLimitItem, items: list[RateLimitItem], *, remaining: int, reset_s: int
) -> str:
    """``RateLimit``: the service limit of the policy ``item`` (``"default";r=0;t=1``)."""
    return f'"{_policy_name(item, len(items) == 1)}";r={remaining};t={reset_s}'


class ClientLimits:
    """Every key's ``rate_limit`` (module docstring)."""

    def __init__(self, limiter: RateLimiter, auth: AuthConfig) -> None:
        self._limiter = limiter
        self._by_key: dict[str, tuple[list[RateLimitItem], str]] = {}
        for key in auth.keys:
            if key.rate_limit and key.name not in self._by_key:
                items = parse_many(key.rate_limit)
                self._by_key[key.name] = (items, policy_field(items))

    @classmethod
    def from_settings(cls, limiter: RateLimiter | None, auth: AuthConfig) -> ClientLimits | None:
        """``None`` when no key has a ``rate_limit`` (nothing to check on any request)."""
        if limiter is None or not any(k.rate_limit for k in auth.keys):
            return None
        return cls(limiter, auth)

    async def check(self, key_name: str) -> None:
        """Count one request of ``key_name``; raise ``ClientRateLimitedError`` beyond its limit."""
        limited = self._by_key.get(key_name)
        if limited is None:
            return
        items, policy = limited
        verdict = await self._limiter.hit(items, "key", key_name)
        if verdict.allowed or verdict.refused_by is None:
            return
        # Whole seconds, rounded up: a client that waits this long finds a unit free.
        reset_s = max(1, math.ceil(verdict.wait_s))
        refused = verdict.refused_by
        raise ClientRateLimitedError(
            f"this key may make {refused.amount} requests per {refused.get_expiry()} s; retry in {reset_s} s",
            retry_after=reset_s,
            headers={
                "RateLimit-Policy": policy,
                "RateLimit": service_limit_field(
                    verdict.refused_by, items, remaining=verdict.remaining, reset_s=reset_s
                ),
            },
        )
