"""Content negotiation: which of the media types a route can produce the client accepts.

Contract:
- :func:`choose` reads an ``Accept`` header (RFC 9110 §12.5.1: media ranges, ``type/*``, ``*/*``
  and ``q`` weights; the most specific range that matches a type decides its weight) and
  returns the offered media type with the highest weight, then the most specific match, then
  the first offered. No header, or an empty one, accepts the first offered type;
- a header that admits none of them is a :class:`~annotation_gateway.errors.NotAcceptableError`
  (406) naming what the route offers; ``q=0`` excludes a type, an unreadable ``q`` counts as 0;
- :func:`require_json` is the check of every route that answers only JSON;
- :class:`ReportFormat` and :func:`negotiate_report` are the JSON / CSV / HTML choice of the
  report routes (compare, metrics, agreement): ``?format=`` wins, else the ``Accept`` header.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from annotation_gateway.errors import NotAcceptableError

__all__ = [
    "JSON_MEDIA_TYPE",
    "REPORT_MEDIA_TYPES",
    "ReportFormat",
    "choose",
    "negotiate_report",
    "require_json",
]

JSON_MEDIA_TYPE = "application/json"


class ReportFormat(enum.StrEnum):
    """What a report route answers: JSON (the default), CSV or a self-contained HTML page."""

    JSON = "json"
    CSV = "csv"
    HTML = "html"


REPORT_MEDIA_TYPES: dict[ReportFormat, str] = {
    ReportFormat.JSON: JSON_MEDIA_TYPE,
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.HTML: "text/html; charset=utf-8",
}


def negotiate_report(accept: str | None, explicit: ReportFormat | None = None) -> ReportFormat:
    """``explicit`` (the ``format`` parameter) when given, else what ``Accept`` prefers; 406 if
    the header admits none of JSON, CSV and HTML."""
    if explicit is not None:
        return explicit
    offered = [REPORT_MEDIA_TYPES[f].split(";")[0] for f in ReportFormat]
    chosen = choose(accept, offered, hint=" (or use ?format=json|csv|html)")
    return list(ReportFormat)[offered.index(chosen)]


def _ranges(accept: str) -> list[tuple[str, float]]:
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in pieces[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((pieces[0].lower(), q))
    return ranges


def choose(accept: str | None, offered: Sequence[str], *, hint: str = "") -> str:
    """The offered media type (without parameters) the ``Accept`` header prefers; 406 if none.

    ``hint`` is appended to the 406 detail (e.g. how to ask for a format by parameter).
    """
    if accept is None or not accept.strip():
        return offered[0]
    ranges = _ranges(accept)
    best: tuple[tuple[float, int, int], str] | None = None
    for order, media in enumerate(offered):
        wildcard = media.split("/")[0] + "/*"
        levels = {media: 2, wildcard: 1, "*/*": 0}
        matching = [(levels[r], q) for r, q in ranges if r in levels]
        if not matching:
            continue
        specificity, q = max(matching, key=lambda m: m[0])
        if q <= 0:
            continue
        rank = (q, specificity, -order)
        if best is None or rank > best[0]:
            best = (rank, media)
    if best is None:
        listed = ", ".join(offered[:-1]) + (" or " if len(offered) > 1 else "") + offered[-1]
        raise NotAcceptableError(f"this answer is available as {listed}{hint}")
    return best[1]


def require_json(accept: str | None) -> None:
    """406 unless the client accepts ``application/json`` (a route that answers only JSON)."""
    if accept is not None and accept != "*/*" and accept != JSON_MEDIA_TYPE:
        choose(accept, (JSON_MEDIA_TYPE,))
