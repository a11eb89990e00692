"""One source's way to its vendor, as every provider uses it.

Contract: an :class:`Upstream` bundles what each provider used to keep separately — the shared
client (:func:`~annotation_gateway.providers.http.client.make_client`), the source and vendor
names, the ``max_concurrency`` cap and the :class:`~annotation_gateway.providers.http.retry.RetryPolicy`
— and offers the only ways a provider talks to its vendor:

- :meth:`Upstream.send`: one try, under the cap (writes that must not repeat, health probes);
- every request, each try of a retrying call included, first takes the source's rate budget
  when it has one (:class:`~annotation_gateway.providers.http.budget.RequestBudget`);
- :meth:`Upstream.call` / :meth:`Upstream.get`: the one retrying call
  (:func:`~annotation_gateway.providers.http.retry.send_idempotent`, the cap held per try);
  :meth:`Upstream.get_decoded` the same for a read page its caller can decode from its bytes;
- :meth:`Upstream.error`: an unsuccessful answer as the ``SourceError`` the status table says;
- :meth:`Upstream.validate`: a decoded body checked against the vendor's wire shape, or a
  ``SourceProtocolError`` naming the field, with ``errors[]`` in the one item shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from annotation_gateway.errors import SourceError, SourceProtocolError
from annotation_gateway.providers.http.budget import RequestBudget
from annotation_gateway.providers.http.client import (
    QueryParams,
    get,
    get_decoded,
    is_json,
    parse_json,
    send,
)
from annotation_gateway.providers.http.outcomes import (
    ErrorItem,
    status_error,
    validation_items,
    validation_summary,
)
from annotation_gateway.providers.http.retry import RetryPolicy, exchange_idempotent, send_idempotent

__all__ = ["Upstream"]

T = TypeVar("T")
D = TypeVar("D")
R = TypeVar("R")


class Upstream:
    """A source's client, names, concurrency cap and retry policy (module docstring)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        source: str,
        vendor: str,
        max_concurrency: int,
        retry: RetryPolicy,
        budget: RequestBudget | None = None,
    ) -> None:
        self.client = client
        self.budget = budget
        self.source = source
        self.vendor = vendor
        self.retry = retry
        self._limit = asyncio.Semaphore(max_concurrency)

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` once, under the concurrency cap."""
        async with self._limit:
            if self.budget is not None:
                await self.budget.acquire()
            return await send(self.client, request, source=self.source)

    async def call(
        self,
        build: Callable[[], httpx.Request],
        classify: Callable[[httpx.Response], T],
        *,
        retry: bool = True,
    ) -> T:
        """Send what ``build`` makes and ``classify`` the answer; retried per policy when ``retry``
        (only for a call that is safe to repeat)."""
        if retry:
            return await send_idempotent(
                self.client,
                build,
                classify,
                source=self.source,
                policy=self.retry,
                limit=self._limit,
                budget=self.budget,
            )
        return classify(await self.send(build()))

    async def get(self, path: str, params: QueryParams, classify: Callable[[httpx.Response], T]) -> T:
        """The retrying GET of ``path`` with ``params`` (``client.get``)."""
        client, source = self.client, self.source
        return await self._retried(lambda: get(client, path, params, source=source), classify)

    async def get_decoded(
        self,
        path: str,
        params: QueryParams,
        decode: Callable[[bytes], D | None],
        classify: Callable[[httpx.Response], T],
        *,
        max_bytes: int | None = None,
    ) -> D | T:
        """:meth:`get`, with the answers ``decode`` can read from their bytes decoded so
        (``client.get_decoded``, up to ``max_bytes``) and the rest classified."""
        client, source = self.client, self.source

        def answer(response: D | httpx.Response) -> D | T:
            return classify(response) if isinstance(response, httpx.Response) else response

        return await self._retried(
            lambda: get_decoded(client, path, params, decode, source=source, max_bytes=max_bytes), answer
        )

    async def _retried(self, exchange: Callable[[], Awaitable[R]], classify: Callable[[R], T]) -> T:
        """``exchange`` and ``classify`` as one retrying call under this source's policy, cap and
        budget."""
        return await exchange_idempotent(
            exchange, classify, policy=self.retry, limit=self._limit, budget=self.budget
        )

    def error(
        self, response: httpx.Response, *, summary: str, errors: list[ErrorItem] | None = None
    ) -> SourceError:
        """The ``SourceError`` an unsuccessful ``response`` is (the status table)."""
        return status_error(response, source=self.source, vendor=self.vendor, summary=summary, errors=errors)

    def validate(self, adapter: TypeAdapter[T], data: Any, *, what: str) -> T:
        """``data`` validated by ``adapter``, or a ``SourceProtocolError`` naming the field."""
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            raise SourceProtocolError(
                f"{self.source}: invalid {what} from {self.vendor}: {validation_summary(exc)}",
                source=self.source,
                errors=[dict(item) for item in validation_items(exc)],
            ) from None

    def decode(self, adapter: TypeAdapter[T], response: httpx.Response, *, what: str) -> T:
        """The answer's JSON validated by ``adapter`` in one pass from its bytes (no untyped
        copy of every row first: a 10,000-row page was held three times over while mapped), or
        the ``SourceProtocolError`` :func:`parse_json` / :meth:`validate` would raise."""
        if not is_json(response):
            parse_json(response, source=self.source)  # raises: not a JSON answer
        try:
            return adapter.validate_json(response.content)
        except ValidationError as exc:
            broken = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
            if broken is not None:
                raise SourceProtocolError(
                    f"{self.source}: malformed JSON body (HTTP {response.status_code}): {broken['msg']}",
                    source=self.source,
                    upstream_status=response.status_code,
                ) from None
            raise SourceProtocolError(
                f"{self.source}: invalid {what} from {self.vendor}: {validation_summary(exc)}",
                source=self.source,
                errors=[dict(item) for item in validation_items(exc)],
            ) from None

    async def aclose(self) -> None:
        await self.client.aclose()
