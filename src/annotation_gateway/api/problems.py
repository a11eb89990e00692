"""RFC 9457 problem responses: every error the API answers goes through here.

Contract:
- a :class:`~annotation_gateway.errors.GatewayError` becomes ``application/problem+json`` built
  from :meth:`GatewayError.problem` with its own status (so an upstream 4xx stays a 4xx);
- FastAPI's request validation failures become 422 ``validation_error`` with
  ``errors: [{loc, msg, type}]`` (never the offending input: it may be a secret or huge);
- Starlette's 404/405 become ``not_found`` / ``method_not_allowed`` problems (405 with an ``Allow``
  listing every method of the path); its 400 for a body it cannot parse is a 422
  ``validation_error``, like any other body that is not JSON;
- anything else becomes 500 ``internal_error`` with a fixed detail: the exception is logged
  server-side, never sent (it could carry a URL, a header or a vendor message).

``instance`` is the request path (without the query string, which may hold ids or cursors).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError as FastAPIValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from annotation_gateway.errors import (
    ClientRateLimitedError,
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ProblemCode,
    RequestValidationError,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "error_response",
    "install_problem_handlers",
    "problem_response",
    "validation_problem",
]

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Validation error messages are echoed to clients; cap each so a giant input cannot be mirrored.
MAX_ERROR_MESSAGE_CHARS = 300
# A body with thousands of invalid items would otherwise produce a multi-megabyte problem.
MAX_VALIDATION_ERRORS = 50


def problem_response(
    error: GatewayError, *, instance: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """The problem+json response for ``error``."""
    body = error.problem()
    if instance is not None:
        body["instance"] = instance
    out_headers = dict(headers or {})
    if error.code is ProblemCode.UNAUTHORIZED:
        out_headers["WWW-Authenticate"] = 'Bearer realm="annotation-gateway"'
    if isinstance(error, ClientRateLimitedError):
        out_headers.update(error.headers)  # RateLimit-Policy and RateLimit (api/ratelimit.py)
    retry_after = getattr(error, "retry_after", None)
    if error.status == 429 and isinstance(retry_after, int | float) and retry_after > 0:
        # A client throttled because an upstream throttled us should wait as long as it asked.
        out_headers["Retry-After"] = str(max(1, round(retry_after)))
    return Response(
        content=orjson.dumps(body),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=out_headers,
    )


def _loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in (loc or ())]


# pydantic prefixes the message of a ValueError raised in a validator; the client wants the message.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def _message(msg: object) -> str:
    text = str(msg)
    for prefix in _PYDANTIC_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return text[:MAX_ERROR_MESSAGE_CHARS]


def validation_problem(
    errors: list[Mapping[str, Any]], *, detail: str | None = None
) -> RequestValidationError:
    """A ``validation_error`` carrying ``[{loc, msg, type}]`` from pydantic-style errors."""
    items = [
        {
            "loc": _loc(err.get("loc")),
            "msg": _message(err.get("msg", "")),
            "type": str(err.get("type", "value_error")),
        }
        for err in errors[:MAX_VALIDATION_ERRORS]
    ]
    if detail is None:
        first = items[0] if items else None
        where = ".".join(str(p) for p in first["loc"]) if first else "request"
        detail = f"{where}: {first['msg']}" if first else "the request is invalid"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
    return RequestValidationError(detail, errors=items)


def error_response(error: GatewayError, path: str) -> Response:
    """The answer to a ``GatewayError`` raised while serving ``path`` (5xx ones are logged)."""
    if error.status >= 500:
        # Only the safe detail is logged: providers already scrub vendor messages of secrets.
        log.warning("answering %s %s on %s: %s", error.status, error.code.value, path, error.detail)
    return problem_response(error, instance=path)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FastAPIValidationError)
    errors = list(exc.errors())
    # A JSON body that is not JSON at all is a validation error of the body as a whole.
    return problem_response(validation_problem(errors), instance=request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error: GatewayError
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    if exc.status_code == 404:
        error = NotFoundError(f"no route {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}")
        # Starlette's Allow names only the first route matching the path (GET of /v1/annotations),
        # not every method the path has (GET, POST).
        allowed = _allowed_methods(request)
        if allowed:
            headers = {"Allow": ", ".join(allowed)}
    elif exc.status_code == 413:
        error = PayloadTooLargeError(str(exc.detail))
    elif exc.status_code == 400:
        # FastAPI's "There was an error parsing the body" (e.g. bytes that are not UTF-8): a body
        # that is not JSON, which is a validation_error (422) like any other malformed JSON.
        error = RequestValidationError(
            str(exc.detail), errors=[{"loc": ["body"], "msg": str(exc.detail), "type": "json_invalid"}]
        )
    elif 400 <= exc.status_code < 500:
        error = RequestValidationError(str(exc.detail), status=exc.status_code)
    else:
        error = GatewayError("internal error", status=exc.status_code)
    return problem_response(error, instance=request.url.path, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this path (the API's paths have no templates;
    FastAPI nests included routers, so the routes themselves are not a flat list to scan)."""
    item = request.app.openapi().get("paths", {}).get(request.url.path)
    return sorted(method.upper() for method in item) if isinstance(item, dict) else []


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(GatewayError("internal error"), instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Register every handler on ``app``."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(FastAPIValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
