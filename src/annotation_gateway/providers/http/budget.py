"""A source's rate budget as the provider toolkit sees it.

Contract: a :class:`RequestBudget` is awaited before every HTTP request a provider sends
(:class:`~annotation_gateway.providers.http.upstream.Upstream`: one-try sends, each try of a
retrying call); ``acquire()`` returns when the request may leave, or raises a ``SourceError``
(``SourceBudgetExhaustedError``) when the budget allows none in time. The implementation with
shared windows is :class:`annotation_gateway.ratelimit.SourceBudget`; the toolkit depends only on
this protocol.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["RequestBudget"]


class RequestBudget(Protocol):
    """Taken once per HTTP request to the vendor."""

    async def acquire(self) -> None: ...
