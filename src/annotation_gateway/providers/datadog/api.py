"""One Datadog JSON:API exchange, shared by the reads (:mod:`.client`) and the queue writes
(:mod:`.queues`).

Contract: :meth:`DatadogApi.call` sends one request through the toolkit's
:class:`~annotation_gateway.providers.http.Upstream` (retried only when the caller says the call
is idempotent), and returns the parsed body of the *expected* success status (``None`` for a
204). Any other status is the error the toolkit's status table says, with Datadog's message and
its JSON:API errors as ``errors[]``; a success that is not JSON, or a success body holding only
``errors``, is a :class:`~annotation_gateway.errors.SourceProtocolError`.
:meth:`DatadogApi.validate` checks a body against a :mod:`.wire` model;
:meth:`DatadogApi.read_page` decodes a read page straight from its bytes (strictly, else through
:meth:`DatadogApi.decode_page`, whose errors name the field). Paths and the
``Accept`` media type are here; keys travel only in the client's headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from annotation_gateway.errors import SourceError, SourceProtocolError
from annotation_gateway.providers.datadog.wire import (
    PAGE,
    PageBody,
    ReadPage,
    error_summary,
    lenient_page,
    strict_page,
)
from annotation_gateway.providers.http import Upstream, is_json, parse_json

__all__ = [
    "ANNOTATED_INTERACTIONS_PATH",
    "API_PREFIX",
    "QUEUES_PATH",
    "VENDOR",
    "DatadogApi",
    "segment",
]

T = TypeVar("T")

VENDOR = "Datadog"
API_PREFIX = "/api/v2/llm-obs/v1"
ANNOTATED_INTERACTIONS_PATH = f"{API_PREFIX}/annotated-interactions"
QUEUES_PATH = f"{API_PREFIX}/annotation-queues"


def segment(value: str) -> str:
    """A path segment: ids are opaque, so escape anything that would change the path."""
    return quote(value, safe="")


class DatadogApi:
    """Datadog's JSON:API over one source's :class:`Upstream` (module docstring)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    @property
    def source(self) -> str:
        return self.upstream.source

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
        expect: int = 200,
        retry: bool,
    ) -> Any:
        """The parsed body of the ``expect``-ed answer to ``method path`` (module docstring)."""
        where = f"{method} {path}"
        client = self.upstream.client

        def build() -> httpx.Request:
            return client.build_request(method, path, params=list(params), json=json)

        def classify(response: httpx.Response) -> Any:
            return self.success_body(response, where=where, expect=expect)

        return await self.upstream.call(build, classify, retry=retry)

    def success_body(self, response: httpx.Response, *, where: str, expect: int = 200) -> Any:
        """The parsed body of an expected success, or the SourceError the answer amounts to."""
        status = response.status_code
        if status != expect:
            raise self.error(response)
        if status == 204:
            return None
        body = parse_json(response, source=self.source)
        if isinstance(body, dict) and "errors" in body and "data" not in body:
            summary, items = error_summary(response)
            raise SourceProtocolError(
                f"{self.source}: {where} answered {status} with errors: {summary}",
                source=self.source,
                upstream_status=status,
                errors=[dict(item) for item in items] or None,
            )
        return body

    def error(self, response: httpx.Response) -> SourceError:
        """The error an unexpected answer is (the toolkit's status table)."""
        summary, items = error_summary(response)
        return self.upstream.error(response, summary=summary, errors=items)

    def validate(self, adapter: TypeAdapter[T], body: Any, *, where: str) -> T:
        return self.upstream.validate(adapter, body, what=f"answer to {where}")

    def read_page(self, response: httpx.Response, *, where: str, strict_tried: bool = False) -> ReadPage:
        """A read page's interactions: decoded strictly when the answer has exactly today's
        shape (the common case, ~4x cheaper), else validated by :meth:`decode_page` — which
        keeps unknown fields as extras or raises the error the answer amounts to.
        ``strict_tried``: the strict decoder already refused these bytes (not run again)."""
        if not strict_tried and response.status_code == 200 and is_json(response):
            page = strict_page(response.content)
            if page is not None:
                return page
        return lenient_page(self.decode_page(response, where=where))

    def decode_page(self, response: httpx.Response, *, where: str) -> PageBody:
        """A read page validated from its bytes in one pass (the hot path: no untyped copy of
        the rows first), or the error the answer amounts to — an unexpected status, a body
        that is not JSON, a 200 that carries only ``errors`` — as :meth:`success_body` says,
        else the validation error naming the field."""
        if response.status_code != 200:
            raise self.error(response)
        try:
            return self.upstream.decode(PAGE, response, what=f"answer to {where}")
        except SourceProtocolError:
            self.success_body(response, where=where)  # raises its own error when it has one
            raise
