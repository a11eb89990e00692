"""The provider toolkit: what every vendor adapter shares, so each vendor's package holds only
what is really that vendor's.

Contract (one place for each concept; the modules say the details):

- :mod:`.transport` — the providers' own httpx transport on aiohttp (a refused connect is a
  ``ConnectError``, each body read in one call);
- :mod:`.client` — one source's pool (:func:`make_client`), :func:`get_request`, :func:`send`
  (transport failures → ``SourceError``, echoed credentials redacted), :func:`get` (the reads'
  GET, straight through the transport when httpx's client adds nothing), :func:`is_json`,
  :func:`parse_json`, :func:`chunk_values`;
- :mod:`.outcomes` — the status → error table (:data:`STATUS_ERRORS`, :func:`status_error`), the
  one ``Retry-After`` / ``X-RateLimit-Reset`` reader (:func:`retry_after_seconds`: ``Retry-After``
  wins) and the one ``errors[]`` item shape (:class:`ErrorItem`: ``{loc, msg, type}``);
- :mod:`.retry` — the one retrying call (:func:`send_idempotent`, :func:`exchange_idempotent`,
  :class:`RetryPolicy`);
- :mod:`.upstream` — :class:`Upstream`, the above bundled per source, which is how the Phoenix
  and Datadog packages talk to their vendors.

Nothing here knows a vendor's URL, header or body shape.
"""

from __future__ import annotations

from annotation_gateway.providers.http.client import (
    QueryParams,
    chunk_values,
    encode_query,
    get,
    get_request,
    is_json,
    make_client,
    param_len,
    parse_json,
    send,
)
from annotation_gateway.providers.http.outcomes import (
    STATUS_ERRORS,
    ErrorItem,
    body_summary,
    error_item,
    error_type,
    fastapi_items,
    jsonapi_items,
    loc_text,
    retry_after_seconds,
    status_error,
    validation_items,
)
from annotation_gateway.providers.http.retry import RetryPolicy, exchange_idempotent, send_idempotent
from annotation_gateway.providers.http.upstream import Upstream

__all__ = [
    "STATUS_ERRORS",
    "ErrorItem",
    "QueryParams",
    "RetryPolicy",
    "Upstream",
    "body_summary",
    "chunk_values",
    "encode_query",
    "error_item",
    "error_type",
    "exchange_idempotent",
    "fastapi_items",
    "get",
    "get_request",
    "is_json",
    "jsonapi_items",
    "loc_text",
    "make_client",
    "param_len",
    "parse_json",
    "retry_after_seconds",
    "send",
    "send_idempotent",
    "status_error",
    "validation_items",
]
