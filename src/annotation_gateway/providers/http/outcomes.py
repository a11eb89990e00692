"""What a vendor's answer amounts to: the status table, the wait a 429 asks for, and ``errors[]``.

Contract:

- :data:`STATUS_ERRORS` is the one table from a vendor's HTTP status to the gateway's error, for
  every provider (as httpx's ``map_httpcore_exceptions`` maps exceptions by a dict). An exact
  status wins over the class it belongs to:

  ==============  ===============================  =============================================
  vendor status   error                            problem code (gateway status)
  ==============  ===============================  =============================================
  401, 403        :class:`SourceAuthError`         ``source_unauthorized`` (403)
  404             :class:`SourceNotFoundError`     ``not_found`` (404)
  429             :class:`SourceRateLimitedError`  ``rate_limited`` (429), retryable
  other 4xx       :class:`SourceRequestError`      ``source_rejected`` (422)
  5xx             :class:`SourceUnavailableError`  ``source_unavailable`` (502), retryable
  anything else   :class:`SourceProtocolError`     ``source_error`` (502): 1xx, 3xx (redirects
                                                   are never followed), a 2xx other than the
                                                   success the call expects
  ==============  ===============================  =============================================

  :func:`status_error` builds that error with one detail wording per class (the vendor's own
  message included), the vendor's status as ``upstream_status``, the wait a 429 asks for, and
  the vendor's error items on a 4xx.

- :func:`retry_after_seconds` is the one reader of the wait a 429 asks for.
  **Precedence: ``Retry-After`` first, then ``X-RateLimit-Reset``.** ``Retry-After`` is the
  standard header (RFC 9110 §10.2.3) and means exactly "wait this long before retrying";
  ``X-RateLimit-Reset`` is a vendor convention that says when a quota *window* resets, and not
  even the same thing everywhere (seconds until the reset at Datadog, a Unix time at GitHub and
  in many proxies). When an answer carries both, the one whose meaning is certain wins. A header
  that is absent or cannot be read leaves the choice to the other. ``Retry-After`` is seconds
  (decimals accepted) or an HTTP date; ``X-RateLimit-Reset`` is seconds, or a Unix time when it
  is at least :data:`EPOCH_THRESHOLD_S` (no quota window is 30 years long). A past date or a
  negative number means "now" (0); NaN, infinities and anything unreadable are ignored; a wait
  longer than :data:`MAX_RETRY_AFTER_S` is capped to it (a source's retries cap their own wait
  much lower, ``max_retry_after_s``; this cap bounds what is reported and passed on to clients).

- **One ``errors[]`` item shape** — the gateway's own ``validation_error`` shape, so a client
  reads every problem's items one way (:class:`ErrorItem`)::

      {"loc": ["query", "limit"], "msg": "limit must be > 0", "type": "bad_request"}

  ``loc`` is where the error is, as a list of keys and indexes: for an error the vendor reports
  about the gateway's request, the part of that request (``query``/``body``/``header``, then the
  parameter, JSON pointer segments or header name; ``[]`` when the vendor names no place); for
  an answer the gateway could not read, ``["response", ...]`` and the path in the answer's body
  (as FastAPI locates response validation errors); for the caller's own items,
  ``["annotations", index, field]``. ``msg`` is a sentence for a person (at most
  :data:`MAX_MESSAGE_CHARS`). ``type`` is a machine-readable kind: the vendor's own when it has
  one (pydantic/FastAPI ``type``, JSON:API ``code``, else its ``title``, in snake case), else
  the vendor's HTTP status phrase in snake case (``bad_request``); the gateway's own kinds are
  ``value_error`` (an item the vendor would refuse) and ``unknown_subject``. An item of some
  kinds carries members of its own, each declared in :class:`ErrorItem` (RFC 9457's extension
  members, one level down): ``unknown_subject`` → ``subject_kind`` and ``subject_id``, so a
  caller (``migrate``) can tell which subjects to leave out. The offending input value is not
  repeated otherwise (it may be a secret or huge). At most :data:`MAX_ERROR_ITEMS` items.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, NotRequired, TypedDict

import httpx
import orjson
from pydantic import ValidationError

from annotation_gateway.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceRequestError,
    SourceUnavailableError,
)
from annotation_gateway.providers.http.client import is_json

__all__ = [
    "EPOCH_THRESHOLD_S",
    "MAX_ERROR_ITEMS",
    "MAX_MESSAGE_CHARS",
    "MAX_RETRY_AFTER_S",
    "STATUS_ERRORS",
    "ErrorItem",
    "body_summary",
    "clip",
    "error_item",
    "error_type",
    "fastapi_items",
    "jsonapi_items",
    "loc_text",
    "pointer_loc",
    "retry_after_seconds",
    "status_error",
    "unknown_subject_item",
    "validation_items",
]

STATUS_ERRORS: Mapping[int | range, type[SourceError]] = {
    401: SourceAuthError,
    403: SourceAuthError,
    404: SourceNotFoundError,
    429: SourceRateLimitedError,
    range(400, 500): SourceRequestError,
    range(500, 600): SourceUnavailableError,
}
"""A vendor's HTTP status (exact, else its class) → the error it is; anything else is a
:class:`SourceProtocolError` (module docstring)."""

_DETAILS: Mapping[type[SourceError], str] = {
    SourceAuthError: "{vendor} refused the gateway's credentials (HTTP {status} on {where}): {summary}",
    SourceNotFoundError: "{vendor} does not know what was asked for (HTTP 404 on {where}): {summary}",
    SourceRateLimitedError: "{vendor} is rate limiting (HTTP 429 on {where}): {summary}",
    SourceRequestError: "{vendor} rejected the request (HTTP {status} on {where}): {summary}",
    SourceUnavailableError: "{vendor} failed (HTTP {status} on {where}): {summary}",
    SourceProtocolError: "unexpected HTTP {status} from {vendor} on {where}: {summary}",
}
"""The detail of each error :func:`status_error` builds, after ``{source}: ``."""

MAX_RETRY_AFTER_S = 86_400.0
"""Longest wait reported for a 429 (one day); longer requests are capped to it."""
EPOCH_THRESHOLD_S = 1e9
"""An ``X-RateLimit-Reset`` at least this big is a Unix time (2001-09-09 onwards), not seconds."""
MAX_ERROR_ITEMS = 20
MAX_MESSAGE_CHARS = 300
"""Vendor text kept in a detail or an item, so a huge HTML page cannot flood a log line."""


# --- the status table ---------------------------------------------------------------------------


def error_type(status: int) -> type[SourceError]:
    """The error a vendor's ``status`` is (not for the success the caller expected)."""
    exact = STATUS_ERRORS.get(status)
    if exact is not None:
        return exact
    for key, error in STATUS_ERRORS.items():
        if isinstance(key, range) and status in key:
            return error
    return SourceProtocolError


def status_error(
    response: httpx.Response,
    *,
    source: str,
    vendor: str,
    summary: str,
    errors: list[ErrorItem] | None = None,
) -> SourceError:
    """The error ``response`` (an unsuccessful answer) amounts to, per :data:`STATUS_ERRORS`.

    ``summary`` is the vendor's own message (see :func:`body_summary`); ``errors`` its error
    items, kept on a 4xx rejection.
    """
    status = response.status_code
    error = error_type(status)
    where = f"{response.request.method} {response.request.url.path}"
    detail = f"{source}: " + _DETAILS[error].format(
        vendor=vendor, status=status, where=where, summary=summary
    )
    if error is SourceRateLimitedError:
        return SourceRateLimitedError(
            detail, source=source, retry_after=retry_after_seconds(response.headers)
        )
    items: list[dict[str, Any]] | None = None
    if errors and issubclass(error, SourceRequestError):
        items = [dict(item) for item in errors[:MAX_ERROR_ITEMS]]
    return error(detail, source=source, upstream_status=status, errors=items)


# --- Retry-After / X-RateLimit-Reset ------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The wait, in seconds, an answer asks for before a retry; None when it names none.

    ``Retry-After`` first, then ``X-RateLimit-Reset`` (the module docstring says why and how each
    is read). ``headers`` is case-insensitive (``httpx.Headers``) or has lower-case keys.
    """
    current = now or datetime.now(UTC)
    for name, read in (("retry-after", _retry_after), ("x-ratelimit-reset", _ratelimit_reset)):
        value = headers.get(name)
        if value is None:
            continue
        seconds = read(value.strip(), current)
        if seconds is not None:
            return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
    return None


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _retry_after(value: str, now: datetime) -> float | None:
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - now).total_seconds()


def _ratelimit_reset(value: str, now: datetime) -> float | None:
    seconds = _number(value)
    if seconds is None:
        return None
    if seconds >= EPOCH_THRESHOLD_S:
        return seconds - now.timestamp()
    return seconds


# --- the one errors[] item shape ----------------------------------------------------------------


class ErrorItem(TypedDict):
    """One item of a problem's ``errors`` (module docstring)."""

    loc: list[str | int]
    msg: str
    type: str
    subject_kind: NotRequired[str]
    """``unknown_subject`` only: the kind of the subject the vendor does not have."""
    subject_id: NotRequired[str]
    """``unknown_subject`` only: its id."""


def error_item(loc: Sequence[str | int], msg: str, type_: str) -> ErrorItem:
    return ErrorItem(loc=list(loc), msg=clip(msg), type=type_)


def unknown_subject_item(
    loc: Sequence[str | int], msg: str, *, subject_kind: str, subject_id: str
) -> ErrorItem:
    """An ``unknown_subject`` item: a subject the vendor does not have, named by its members."""
    item = error_item(loc, msg, "unknown_subject")
    item["subject_kind"] = subject_kind
    item["subject_id"] = subject_id
    return item


def clip(text: str) -> str:
    """``text`` on one line, at most :data:`MAX_MESSAGE_CHARS` characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def loc_text(loc: Iterable[Any]) -> str:
    """A location for a sentence: ``("data", 3, "created_at")`` → ``data[3].created_at``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _status_type(status: int) -> str:
    try:
        return _snake(HTTPStatus(status).phrase)
    except ValueError:
        return f"http_{status}"


def _loc_part(part: Any) -> str | int:
    return part if isinstance(part, int) and not isinstance(part, bool) else str(part)


def validation_items(exc: ValidationError, *, root: str = "response") -> list[ErrorItem]:
    """The items of a failed validation of a vendor's answer (``loc`` under ``root``)."""
    return [
        error_item([root, *(_loc_part(p) for p in e["loc"])], e["msg"], e["type"])
        for e in exc.errors(include_url=False, include_input=False)[:MAX_ERROR_ITEMS]
    ]


def validation_summary(exc: ValidationError) -> str:
    """``field data[1].created_at: Field required`` (and how many more), for a detail."""
    problems = exc.errors(include_url=False, include_input=False)
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"field {loc_text(first['loc'])}: {first['msg']}{more}"


def fastapi_items(body: Any) -> list[ErrorItem]:
    """The items of a FastAPI error body ``{"detail": [{loc, msg, type}, ...]}`` (Phoenix)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, list):
        return []
    return [
        error_item(
            [_loc_part(p) for p in e.get("loc", ()) if isinstance(p, str | int)],
            str(e.get("msg", "")),
            str(e.get("type", "") or "value_error"),
        )
        for e in detail[:MAX_ERROR_ITEMS]
        if isinstance(e, dict)
    ]


def pointer_loc(pointer: str) -> list[str | int]:
    """A JSON pointer (RFC 6901) as ``loc`` parts: ``/data/0/value`` → ``["data", 0, "value"]``."""
    parts: list[str | int] = []
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        parts.append(int(token) if token.isdigit() else token)
    return parts


def jsonapi_items(body: Any, status: int) -> list[ErrorItem]:
    """The items of a JSON:API error body ``{"errors": [...]}`` (Datadog): error objects
    (``source.pointer`` → ``["body", ...]``, ``source.parameter`` → ``["query", name]``,
    ``source.header`` → ``["header", name]``) or bare strings (``{"errors": ["Forbidden"]}``)."""
    raw_errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(raw_errors, list):
        return []
    fallback = _status_type(status)
    items: list[ErrorItem] = []
    for raw in raw_errors[:MAX_ERROR_ITEMS]:
        if isinstance(raw, str):
            items.append(error_item([], raw, fallback))
            continue
        if not isinstance(raw, dict):
            continue
        title, detail, code = raw.get("title"), raw.get("detail"), raw.get("code")
        found = raw.get("source")
        where: dict[str, Any] = found if isinstance(found, dict) else {}
        loc: list[str | int] = []
        if isinstance(where.get("pointer"), str):
            loc = ["body", *pointer_loc(where["pointer"])]
        elif isinstance(where.get("parameter"), str):
            loc = ["query", where["parameter"]]
        elif isinstance(where.get("header"), str):
            loc = ["header", where["header"]]
        kind = code if isinstance(code, str) and code else _snake(title) if isinstance(title, str) else ""
        items.append(error_item(loc, str(detail or title or raw), kind or fallback))
    return items


def body_summary(response: httpx.Response) -> str:
    """A short safe description of a body that is not a vendor's structured error: its text when
    it is text, else what it is (an HTML page, an empty body, a body of some content type)."""
    content = response.content
    if not content.strip():
        return "empty body"
    ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "text/html":
        return "an HTML page"
    if ctype.startswith("text/"):
        return clip(response.text)
    if is_json(response):
        try:
            return clip(orjson.dumps(orjson.loads(content)).decode())
        except orjson.JSONDecodeError:
            return "malformed JSON error body"
    return f"a {ctype or 'body without content type'}"
