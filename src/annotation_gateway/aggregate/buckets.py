"""Time buckets of SPEC §8: the UTC start of the hour, day, ISO week (Monday) or month of an
instant given in microseconds since the epoch.

Contract: :func:`bucket_of` maps µs to the bucket's start in µs, with integer arithmetic for
hour, day and week (no datetime per annotation: a metrics query over 100,000 annotations pays
for a division, not an object) and one ``datetime`` per *day* for months, remembered;
:func:`bucket_label` formats a start as RFC 3339 (``2026-12-01T00:00:00Z``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Literal

__all__ = [
    "DAY_US",
    "EPOCH_ORDINAL",
    "HOUR_US",
    "INTERVALS",
    "MONDAY_OFFSET_DAYS",
    "MONDAY_OFFSET_US",
    "WEEK_US",
    "Interval",
    "bucket_label",
    "bucket_of",
]

Interval = Literal["hour", "day", "week", "month"]
INTERVALS: tuple[Interval, ...] = ("hour", "day", "week", "month")

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
MONDAY_OFFSET_DAYS = 3
"""1970-01-01 was a Thursday: the Monday of its ISO week is 3 days earlier."""
MONDAY_OFFSET_US = MONDAY_OFFSET_DAYS * DAY_US
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
"""So that a UTC datetime's bucket *index* — ``(µs + shift) // step`` — is also, without its µs,
``t.toordinal() - EPOCH_ORDINAL`` (day), that times 24 plus ``t.hour`` (hour), or that plus
``MONDAY_OFFSET_DAYS``, ``// 7`` (week): what the metrics loop computes."""

_MONTH_OF_DAY: dict[int, int] = {}


def bucket_of(us: int, interval: Interval) -> int:
    """The start (µs since the epoch, UTC) of the bucket holding ``us``."""
    if interval == "day":
        return us - us % DAY_US
    if interval == "hour":
        return us - us % HOUR_US
    if interval == "week":
        shifted = us + MONDAY_OFFSET_US
        return shifted - shifted % WEEK_US - MONDAY_OFFSET_US
    day = us // DAY_US
    start = _MONTH_OF_DAY.get(day)
    if start is None:
        moment = datetime.fromtimestamp(day * 86_400, tz=UTC)
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        start = int(first.timestamp()) * 1_000_000
        if len(_MONTH_OF_DAY) > 100_000:  # ~270 years of days: only a pathological spread
            _MONTH_OF_DAY.clear()
        _MONTH_OF_DAY[day] = start
    return start


def bucket_label(start_us: int) -> str:
    """RFC 3339 UTC text of a bucket start (whole seconds: buckets start on them)."""
    return datetime.fromtimestamp(start_us // 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
