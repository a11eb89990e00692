"""The gateway's error hierarchy and its closed list of problem codes.

Every error the gateway reports is one of these; the API turns each into an RFC 9457
``application/problem+json`` body whose ``code`` comes from :class:`ProblemCode` (a closed list).
Provider adapters translate every lower-level failure (httpx exceptions, vendor status codes,
malformed bodies) into a :class:`SourceError` at their edge with ``raise ... from exc``, so
nothing after a provider ever sees an httpx exception or a vendor payload.

Errors are *permanent* unless marked ``retryable`` (the OpenTelemetry Collector's rule): only a
retryable error is retried, served stale from the cache, or counted against a circuit breaker.

    GatewayError                      base; carries code, HTTP status, detail
    ├── ClientError                   the caller's request is wrong (4xx, never retried)
    │   ├── RequestValidationError    validation_error 422: a parameter or body field is invalid
    │   ├── InvalidCursorError        invalid_cursor 422: cursor tampered or bound to another query
    │   ├── PayloadTooLargeError      payload_too_large 413: more ids/items/results than the limit
    │   ├── UnauthorizedError         unauthorized 401: no or unknown gateway key
    │   ├── ForbiddenError            forbidden 403: the key may not use that source
    │   ├── NotFoundError             not_found 404: unknown route, source or resource
    │   ├── MethodNotAllowedError     method_not_allowed 405: the route exists, not with this method
    │   ├── NotAcceptableError        not_acceptable 406: no representation the client accepts
    │   ├── UnsupportedMediaTypeError unsupported_media_type 415: a body that is not (declared) JSON
    │   ├── RequestTimeoutError       request_timeout 408: the request's head did not arrive in time
    │   ├── ClientRateLimitedError    rate_limited 429: the key exceeded its own rate_limit
    │   └── UnsupportedError          not_supported 400: the source cannot do that (e.g. write)
    └── SourceError                   one upstream source failed; names the source
        ├── SourceRequestError        source_rejected 4xx: the vendor refused what we sent (permanent)
        │   ├── SourceAuthError       source_unauthorized: the vendor rejected the gateway's key
        │   └── SourceNotFoundError   not_found: unknown project / subject at the vendor
        ├── SourceTimeoutError        source_timeout 504: no answer in time (retryable)
        ├── SourceUnavailableError    source_unavailable 502: connect error, reset, 5xx (retryable)
        ├── SourceRateLimitedError    rate_limited 429: the vendor throttled us (retryable)
        │   └── SourceBudgetExhaustedError  rate_limited: the source's own budget is spent, no call made
        ├── SourceProtocolError       source_error 502: HTML, malformed JSON, missing field, wrong type
        └── CircuitOpenError          source_unavailable 502: the breaker is open, no call was made

An upstream 4xx is never reported as the gateway's 5xx: :class:`SourceRequestError` keeps a 4xx
status; only failures of the vendor itself (5xx, timeouts, garbage) become 502/504. Never 503: that
would tell a load balancer the *gateway* is down during one vendor's outage (``/readyz`` is the
one place that answers 503).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = [
    "CircuitOpenError",
    "ClientError",
    "ClientRateLimitedError",
    "ForbiddenError",
    "GatewayError",
    "InvalidCursorError",
    "MethodNotAllowedError",
    "NotAcceptableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProblemCode",
    "RequestTimeoutError",
    "RequestValidationError",
    "SourceAuthError",
    "SourceBudgetExhaustedError",
    "SourceError",
    "SourceNotFoundError",
    "SourceProtocolError",
    "SourceRateLimitedError",
    "SourceRequestError",
    "SourceTimeoutError",
    "SourceUnavailableError",
    "UnauthorizedError",
    "UnsupportedError",
    "UnsupportedMediaTypeError",
]


class ProblemCode(StrEnum):
    """The closed list of ``code`` values in problem details. Adding one is an API change."""

    VALIDATION_ERROR = "validation_error"
    INVALID_CURSOR = "invalid_cursor"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    NOT_SUPPORTED = "not_supported"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    REQUEST_TIMEOUT = "request_timeout"
    RATE_LIMITED = "rate_limited"
    SOURCE_REJECTED = "source_rejected"
    SOURCE_UNAUTHORIZED = "source_unauthorized"
    SOURCE_ERROR = "source_error"
    SOURCE_TIMEOUT = "source_timeout"
    SOURCE_UNAVAILABLE = "source_unavailable"
    INTERNAL_ERROR = "internal_error"


PROBLEM_TITLES: dict[ProblemCode, str] = {
    ProblemCode.VALIDATION_ERROR: "The request is invalid",
    ProblemCode.INVALID_CURSOR: "The cursor is invalid for this query",
    ProblemCode.UNAUTHORIZED: "Authentication required",
    ProblemCode.FORBIDDEN: "Not allowed for this key",
    ProblemCode.NOT_FOUND: "Not found",
    ProblemCode.METHOD_NOT_ALLOWED: "Method not allowed",
    ProblemCode.NOT_ACCEPTABLE: "No acceptable representation",
    ProblemCode.NOT_SUPPORTED: "Not supported by this source",
    ProblemCode.PAYLOAD_TOO_LARGE: "Request exceeds a limit",
    ProblemCode.UNSUPPORTED_MEDIA_TYPE: "Unsupported media type",
    ProblemCode.REQUEST_TIMEOUT: "The request did not arrive in time",
    ProblemCode.RATE_LIMITED: "Rate limited",
    ProblemCode.SOURCE_REJECTED: "The source rejected the request",
    ProblemCode.SOURCE_UNAUTHORIZED: "The source rejected the gateway's credentials",
    ProblemCode.SOURCE_ERROR: "The source sent an invalid answer",
    ProblemCode.SOURCE_TIMEOUT: "The source did not answer in time",
    ProblemCode.SOURCE_UNAVAILABLE: "The source is unavailable",
    ProblemCode.INTERNAL_ERROR: "Internal error",
}


class GatewayError(Exception):
    """Base of every error the gateway reports. ``detail`` is safe to show a client."""

    code: ProblemCode = ProblemCode.INTERNAL_ERROR
    status: int = 500
    retryable: bool = False

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        if status is not None:
            self.status = status

    @property
    def title(self) -> str:
        return PROBLEM_TITLES[self.code]

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem object (without ``instance``)."""
        body: dict[str, Any] = {
            "type": f"https://annotation-gateway.dev/problems/{self.code.value}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code.value,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


# --- the caller's mistakes -------------------------------------------------------------------


class ClientError(GatewayError):
    """The caller's request is wrong; retrying it unchanged cannot help."""

    status = 400


class RequestValidationError(ClientError):
    """A parameter or body field is invalid; ``errors`` lists each one with its location."""

    code = ProblemCode.VALIDATION_ERROR
    status = 422


class InvalidCursorError(ClientError):
    """The cursor was tampered with, is malformed, or belongs to another query."""

    code = ProblemCode.INVALID_CURSOR
    status = 422


class PayloadTooLargeError(ClientError):
    """More subject ids, items or results than a named limit allows; the detail says the limit."""

    code = ProblemCode.PAYLOAD_TOO_LARGE
    status = 413


class NotAcceptableError(ClientError):
    """No representation the client accepts (406); the detail names what is offered."""

    code = ProblemCode.NOT_ACCEPTABLE
    status = 406


class MethodNotAllowedError(ClientError):
    """The route exists but not with this method (405; the answer carries ``Allow``)."""

    code = ProblemCode.METHOD_NOT_ALLOWED
    status = 405


class UnsupportedMediaTypeError(ClientError):
    """The request body is not declared as JSON (415)."""

    code = ProblemCode.UNSUPPORTED_MEDIA_TYPE
    status = 415


class RequestTimeoutError(ClientError):
    """The client did not send its request line and headers in time (408; the server closes)."""

    code = ProblemCode.REQUEST_TIMEOUT
    status = 408


class ClientRateLimitedError(ClientError):
    """The gateway key made more requests than its ``rate_limit`` allows (429). ``retry_after``
    (whole seconds) becomes ``Retry-After``; ``headers`` are the ``RateLimit-Policy`` and
    ``RateLimit`` fields the answer carries."""

    code = ProblemCode.RATE_LIMITED
    status = 429

    def __init__(self, detail: str, *, retry_after: int, headers: Mapping[str, str]) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.headers = dict(headers)


class UnauthorizedError(ClientError):
    """No gateway key, or a key the gateway does not know."""

    code = ProblemCode.UNAUTHORIZED
    status = 401


class ForbiddenError(ClientError):
    """The gateway key is valid but may not use the source asked for."""

    code = ProblemCode.FORBIDDEN
    status = 403


class NotFoundError(ClientError):
    """Unknown route, source or resource."""

    code = ProblemCode.NOT_FOUND
    status = 404


class UnsupportedError(ClientError):
    """The source exists but cannot do what was asked (e.g. writing to a read-only vendor)."""

    code = ProblemCode.NOT_SUPPORTED
    status = 400


# --- an upstream source failed ---------------------------------------------------------------


class SourceError(GatewayError):
    """One upstream source failed. ``source`` names it; ``upstream_status`` is the vendor's."""

    code = ProblemCode.SOURCE_ERROR
    status = 502

    def __init__(
        self,
        detail: str,
        *,
        source: str,
        upstream_status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail, errors=errors, status=status)
        self.source = source
        self.upstream_status = upstream_status

    def problem(self) -> dict[str, Any]:
        body = super().problem()
        body["source"] = self.source
        if self.upstream_status is not None:
            body["upstream_status"] = self.upstream_status
        return body


class SourceRequestError(SourceError):
    """The vendor refused what the gateway sent (a 4xx). Permanent; reported as a 4xx."""

    code = ProblemCode.SOURCE_REJECTED
    status = 422


class SourceAuthError(SourceRequestError):
    """The vendor rejected the gateway's credentials for this source (401/403 upstream)."""

    code = ProblemCode.SOURCE_UNAUTHORIZED
    status = 403


class SourceNotFoundError(SourceRequestError):
    """The vendor does not know the project (or other resource) the source is configured with."""

    code = ProblemCode.NOT_FOUND
    status = 404


class SourceTimeoutError(SourceError):
    """The vendor did not answer within the source's timeout."""

    code = ProblemCode.SOURCE_TIMEOUT
    status = 504
    retryable = True


class SourceUnavailableError(SourceError):
    """Connection refused or reset, or a 5xx from the vendor."""

    code = ProblemCode.SOURCE_UNAVAILABLE
    status = 502
    retryable = True


class SourceRateLimitedError(SourceError):
    """The vendor answered 429; ``retry_after`` is the wait it asked for, in seconds."""

    code = ProblemCode.RATE_LIMITED
    status = 429
    retryable = True

    def __init__(
        self, detail: str, *, source: str, retry_after: float | None = None, upstream_status: int | None = 429
    ) -> None:
        super().__init__(detail, source=source, upstream_status=upstream_status)
        self.retry_after = retry_after


class SourceBudgetExhaustedError(SourceRateLimitedError):
    """The source's own ``rate_limit`` (the vendor's budget, shared by the replicas) allows no
    request within the wait the source allows; no request was sent (no ``upstream_status``)."""

    def __init__(self, detail: str, *, source: str, retry_after: float | None = None) -> None:
        super().__init__(detail, source=source, retry_after=retry_after, upstream_status=None)


class SourceProtocolError(SourceError):
    """The vendor answered, but not with what its API promises (HTML, bad JSON, wrong fields)."""

    code = ProblemCode.SOURCE_ERROR
    status = 502


class CircuitOpenError(SourceUnavailableError):
    """The source's circuit breaker is open; no request was sent."""

    retryable = False
