"""Pictures of the dashboards' answers (SPEC §8): self-contained HTML pages with inline SVG charts.

Contract:
- :func:`metrics_html` draws the rows of ``/v1/annotations/metrics`` and :func:`agreement_html`
  the answer of ``/v1/annotations/agreement``; each returns one HTML page as UTF-8 ``bytes``;
- a page is self-contained, like the compare report (:func:`annotation_gateway.reports.to_html`):
  inline CSS and inline SVG only, no script, no external asset, font or URL (the one URL in it is
  the SVG namespace), and a Content-Security-Policy that forbids loading anything; every value
  that comes from annotations (names, labels, sources, annotator ids, subject ids, bucket
  strings) is escaped with :func:`html.escape`, in text and in attributes alike;
- both are pure functions of their input: no I/O, no clock, no global state; the same input
  gives the same bytes. They never recompute a statistic: they draw and print the numbers they
  are given, and show a missing (``None``) one as "—";
- every chart is ``<svg class="chart" data-chart="...">`` with explicit ``width``, ``height`` and
  ``viewBox`` (it scales down with the page). Each drawn series is one
  ``<g class="series" data-series="<its legend text>">``; the heat map's cells are
  ``<rect class="cell">``, one per cell of the matrix.

The metrics page (``data-chart`` ``counts``, ``score_mean``, ``labels``):

- a *group* is one combination of the ``group_by`` values (the bucket is not part of it); each
  group is one series, named ``key=value · key=value`` (just the value for one key; "all
  annotations" without ``group_by``);
- with an ``interval``: line charts over time. ``counts`` has every group at every bucket from
  the first to the last (a bucket where a group has no row is a true 0: rows exist only where
  there is an annotation); ``score_mean`` joins a group's means and leaves a gap where it has no
  score - a missing mean is not 0. The x axis is proportional to time (buckets are parsed as
  RFC 3339; if one cannot be, the buckets are spaced evenly in sorted order);
- without an ``interval``: horizontal bars, one per group;
- ``score_mean`` leaves out the groups without any score, and is omitted when no group has one;
- ``labels``: one stacked bar per group, the sum of its ``label_counts`` over all buckets, one
  series per label (the :data:`MAX_LABELS` most frequent; the rest are drawn as one "other
  labels" series, ``data-other="true"``);
- at most :data:`MAX_SERIES` groups are drawn per chart (those with the most annotations, or
  the most scores for ``score_mean``); the page says how many were left out. The table under the
  charts has every row, or the first ``max_rows`` and a note saying how many more there are;
- no rows: a page that says "no annotations match".

The agreement page, per result (one per annotation name): a summary table (raters, subjects
rated by at least two raters, percent agreement, kappa and its kind, Krippendorff's alpha and
its level), the confusion matrix of the first two raters as a heat map (the first rater's labels
down the side, the second's across the top; colour intensity by count, the count written in the
cell, the diagonal - where they agree - outlined), and the disagreeing subjects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

__all__ = ["MAX_LABELS", "MAX_SERIES", "agreement_html", "metrics_html"]

MAX_SERIES = 20
"""At most this many groups are drawn in one chart; the rows table has them all."""

MAX_LABELS = 12
"""The label chart draws this many labels by name; the others are summed into one series."""

_MAX_BUCKETS = 2000
"""Filling the bucket range with zeros stops here (it then uses the buckets present)."""

_MARKERS_UP_TO = 200
"""Above this many buckets the count lines are drawn without a dot per bucket."""

NONE = "—"
"""How a missing value is shown."""

_SVG_NS = "http://www.w3.org/2000/svg"

# No request may leave the file: even if some value escaped its escaping, nothing could load or run.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'"

_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_DASHES = ("", "6 3", "2 3")
_OTHER_COLOUR = "#8c959f"

_CSS = """
:root { color-scheme: light; --line:#d0d7de; --muted:#57606a; --bg2:#f6f8fa; --warn:#9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:#1f2328;
       margin: 0 auto; padding: 24px; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg2);
       padding: 1px 4px; border-radius: 4px; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg2); font-weight: 600; font-size: 12.5px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted { color: var(--muted); } details summary { cursor: pointer; color: var(--muted); }
.note { border-left: 3px solid var(--warn); padding: 4px 10px; background: #fff8e5; }
.empty { color: var(--muted); font-style: italic; }
figure { margin: 8px 0 20px; }
svg.chart { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
            border-radius: 6px; background: #fff; }
svg.chart text { font: 11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #1f2328; }
svg.chart .axis line, svg.chart .axis path { stroke: #8c959f; }
svg.chart .grid line { stroke: #eaeef2; }
svg.chart .tick text, svg.chart .ax-title { fill: var(--muted); }
svg.chart .series path { fill: none; stroke-width: 2; }
svg.chart text.in-cell { font-weight: 600; }
.legend { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap; gap: 4px 14px;
          font-size: 12.5px; }
.legend li { display: flex; align-items: center; gap: 6px; }
.legend .sw { display: inline-block; width: 22px; height: 0; border-top: 3px solid; }
.legend .sw.box { height: 10px; border-top: 0; }
@media print { figure { break-inside: avoid; } }
"""

_CHART_WIDTH = 960


# -------------------------------------------------------------------------------------------- values


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _number(value: object) -> float | None:
    """A finite number, or ``None`` (missing, not a number, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: object) -> int:
    number = _number(value)
    return int(number) if number is not None and number > 0 else 0


def _fmt(value: object, fmt: str = ".4g") -> str:
    number = _number(value)
    return f'<span class="muted">{NONE}</span>' if number is None else _e(format(number, fmt))


def _fmt_int(value: object) -> str:
    number = _number(value)
    return f'<span class="muted">{NONE}</span>' if number is None else _e(f"{number:,.0f}")


def _fmt_rate(value: object) -> str:
    number = _number(value)
    return f'<span class="muted">{NONE}</span>' if number is None else _e(f"{number:.1%}")


def _text(value: object) -> str:
    """A vendor value as display text (``None`` as "—")."""
    return NONE if value is None else str(value)


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num_text(value: float) -> str:
    return format(value, ".4g")


# ------------------------------------------------------------------------------------------- scales


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(1, ticks)
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def _nice_range(lo: float, hi: float, ticks: int = 5) -> tuple[float, float, list[float]]:
    """A rounded domain that holds ``lo..hi`` and its tick values."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, ticks)
    start = math.floor(lo / step) * step
    stop = math.ceil(hi / step) * step
    count = round((stop - start) / step)
    values = [start + i * step for i in range(count + 1)]
    return start, stop, [0.0 if abs(v) < step * 1e-9 else v for v in values]


def _score_range(values: Sequence[float]) -> tuple[float, float, list[float]]:
    lo, hi = min(values), max(values)
    if lo >= 0 and hi <= 1:  # the common 0..1 score: a fixed axis reads better across pages
        return 0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    return _nice_range(lo, hi)


def _colour(index: int) -> tuple[str, str]:
    return _PALETTE[index % len(_PALETTE)], _DASHES[(index // len(_PALETTE)) % len(_DASHES)]


def _px(value: float) -> str:
    return f"{value:.1f}"


def _svg_open(kind: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{_e(kind)}" xmlns="{_SVG_NS}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'
    )


def _legend(entries: Sequence[tuple[str, str, str]], *, boxes: bool = False) -> str:
    """An HTML legend: (text, colour, dash) per entry."""
    items = []
    for text, colour, dash in entries:
        style = f"border-color:{colour}" if not boxes else f"background:{colour}"
        if dash and not boxes:
            style += ";border-top-style:dashed" if dash.startswith("6") else ";border-top-style:dotted"
        cls = "sw box" if boxes else "sw"
        items.append(f'<li><span class="{cls}" style="{style}"></span>{_e(text)}</li>')
    return f'<ul class="legend">{"".join(items)}</ul>'


# ------------------------------------------------------------------------------------------ buckets


def _parse_bucket(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _next_bucket(moment: datetime, interval: str) -> datetime | None:
    if interval == "hour":
        return moment + timedelta(hours=1)
    if interval == "day":
        return moment + timedelta(days=1)
    if interval == "week":
        return moment + timedelta(days=7)
    if interval == "month":
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        return moment.replace(year=year, month=month)
    return None


def _bucket_text(moment: datetime | None, raw: str, interval: str | None) -> str:
    if moment is None:
        return raw
    moment = moment.astimezone(UTC)
    if interval == "hour":
        return moment.strftime("%Y-%m-%d %H:%M")
    if interval == "month":
        return moment.strftime("%Y-%m")
    return moment.strftime("%Y-%m-%d")


class _Axis:
    """The x axis of the line charts: every bucket from the first to the last, and where it is."""

    def __init__(self, buckets: Sequence[str], interval: str) -> None:
        present = sorted(set(buckets))
        parsed = [_parse_bucket(b) for b in present]
        self.keys: list[str] = present
        self.positions: list[float] = [float(i) for i in range(len(present))]
        self.labels: list[str] = list(present)
        moments = [p for p in parsed if p is not None]
        if present and len(moments) == len(present):
            by_moment = {m: raw for m, raw in zip(moments, present, strict=True)}
            ordered = sorted(by_moment)
            filled = self._fill(ordered, interval)
            steps = filled if filled is not None and set(ordered) <= set(filled) else ordered
            self.keys = [by_moment.get(m, m.isoformat()) for m in steps]
            first = steps[0]
            self.positions = [(m - first).total_seconds() for m in steps]
            self.labels = [_bucket_text(m, raw, interval) for m, raw in zip(steps, self.keys, strict=True)]
            # A row's bucket string maps to its slot even if it is spelled differently.
            where = {m: i for i, m in enumerate(steps)}
            self.slot = {raw: where[m] for m, raw in by_moment.items()}
        else:
            self.slot = {raw: i for i, raw in enumerate(present)}

    @staticmethod
    def _fill(ordered: Sequence[datetime], interval: str) -> list[datetime] | None:
        steps = [ordered[0]]
        while steps[-1] < ordered[-1]:
            nxt = _next_bucket(steps[-1], interval)
            if nxt is None or len(steps) >= _MAX_BUCKETS:
                return None
            steps.append(nxt)
        return steps

    def __len__(self) -> int:
        return len(self.keys)


# ------------------------------------------------------------------------------------------- groups


class _Group:
    def __init__(self, key: tuple[object, ...], name: str) -> None:
        self.key = key
        self.name = name
        self.colour = 0  # the same colour in every chart of the page
        self.count = 0
        self.score_count = 0
        self.counts: dict[int, int] = {}
        self.means: dict[int, float] = {}
        self.labels: dict[str, int] = {}
        self.bar_count: int = 0
        self.bar_mean: float | None = None


def _sort_key(value: object) -> tuple[int, str]:
    return (0, "") if value is None else (1, str(value))


def _group_name(keys: Sequence[str], values: Sequence[object]) -> str:
    if not keys:
        return "all annotations"
    if len(keys) == 1:
        return _text(values[0])
    return " · ".join(f"{k}={_text(v)}" for k, v in zip(keys, values, strict=True))


def _groups(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], axis: _Axis | None) -> list[_Group]:
    found: dict[tuple[tuple[int, str], ...], _Group] = {}
    for row in rows:
        values = tuple(row.get(k) for k in keys)
        sort = tuple(_sort_key(v) for v in values)
        group = found.get(sort)
        if group is None:
            group = found[sort] = _Group(values, _group_name(keys, values))
        count = _count(row.get("count"))
        group.count += count
        group.score_count += _count(row.get("score_count"))
        labels = row.get("label_counts")
        if isinstance(labels, Mapping):
            for label, n in labels.items():
                group.labels[str(label)] = group.labels.get(str(label), 0) + _count(n)
        mean = _number(row.get("score_mean"))
        bucket = row.get("bucket")
        if axis is not None:
            if bucket is None or str(bucket) not in axis.slot:
                continue
            slot = axis.slot[str(bucket)]
            group.counts[slot] = group.counts.get(slot, 0) + count
            if mean is not None:
                group.means[slot] = mean
        else:
            group.bar_count += count
            if mean is not None:
                group.bar_mean = mean
    ordered = [found[k] for k in sorted(found)]
    for index, group in enumerate(ordered):
        group.colour = index
    return ordered


def _top(groups: Sequence[_Group], weight: Callable[[_Group], float]) -> tuple[list[_Group], int]:
    """At most :data:`MAX_SERIES` groups (the heaviest), in their original order; and how many
    were left out."""
    if len(groups) <= MAX_SERIES:
        return list(groups), 0
    ranked = sorted(range(len(groups)), key=lambda i: (-weight(groups[i]), i))[:MAX_SERIES]
    return [groups[i] for i in sorted(ranked)], len(groups) - MAX_SERIES


def _left_out(count: int, what: str) -> str:
    if not count:
        return ""
    plural = "s" if count != 1 else ""
    return (
        f'<p class="note">{count} more group{plural} not drawn in this chart ({_e(what)}); '
        "the table below has every row.</p>"
    )


# -------------------------------------------------------------------------------------- line charts

_LINE_H = 300
_M_LEFT, _M_RIGHT, _M_TOP, _M_BOTTOM = 64, 24, 16, 48


def _x_ticks(axis: _Axis, x: Callable[[int], float], plot_bottom: float) -> str:
    n = len(axis)
    stride = max(1, math.ceil(n / 8))
    indices = list(range(0, n, stride))
    parts = []
    for i in indices:
        px = x(i)
        # A label at the right end of the axis ends there, so the chart's edge never cuts it.
        anchor = "end" if n > 1 and i == n - 1 else "middle"
        parts.append(
            f'<g class="tick"><line x1="{_px(px)}" x2="{_px(px)}" y1="{_px(plot_bottom)}" '
            f'y2="{_px(plot_bottom + 5)}"></line><text x="{_px(px)}" y="{_px(plot_bottom + 18)}" '
            f'text-anchor="{anchor}">{_e(axis.labels[i])}</text></g>'
        )
    return "".join(parts)


def _y_ticks(ticks: Sequence[float], y: Callable[[float], float], left: float, right: float) -> str:
    parts = []
    for value in ticks:
        py = y(value)
        parts.append(
            f'<g class="grid"><line x1="{_px(left)}" x2="{_px(right)}" y1="{_px(py)}" y2="{_px(py)}">'
            f'</line></g><g class="tick"><text x="{_px(left - 6)}" y="{_px(py + 4)}" text-anchor="end">'
            f"{_e(_num_text(value))}</text></g>"
        )
    return "".join(parts)


def _line_chart(
    kind: str,
    title: str,
    axis: _Axis,
    series: Sequence[tuple[str, int, dict[int, float]]],
    *,
    fill_zero: bool,
    y_title: str,
) -> str:
    """One line per series over the axis' buckets; ``fill_zero``: a missing bucket is 0 (else a gap)."""
    width, height = _CHART_WIDTH, _LINE_H
    left, right, top, bottom = _M_LEFT, width - _M_RIGHT, _M_TOP, height - _M_BOTTOM
    values = [v for _, _, points in series for v in points.values()]
    if fill_zero:
        lo, hi, ticks = _nice_range(0.0, max([1.0, *values]))
    else:
        lo, hi, ticks = _score_range(values or [0.0])
    span_pos = (axis.positions[-1] - axis.positions[0]) or 1.0
    single = len(axis) == 1

    def x(i: int) -> float:
        if single:
            return (left + right) / 2
        return left + (axis.positions[i] - axis.positions[0]) / span_pos * (right - left)

    def y(value: float) -> float:
        return bottom - (value - lo) / (hi - lo) * (bottom - top)

    markers = len(axis) <= _MARKERS_UP_TO or not fill_zero
    groups = []
    legend = []
    for name, colour_index, points in series:
        colour, dash = _colour(colour_index)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        commands: list[str] = []
        pen_down = False
        for i in range(len(axis)):
            value = points.get(i, 0.0) if fill_zero else points.get(i)
            if value is None:
                pen_down = False
                continue
            commands.append(f"{'L' if pen_down else 'M'}{_px(x(i))} {_px(y(value))}")
            pen_down = True
        dots = ""
        if markers:
            dots = "".join(
                f'<circle cx="{_px(x(i))}" cy="{_px(y(v))}" r="3" fill="{colour}">'
                f"<title>{_e(name)} · {_e(axis.labels[i])}: {_e(_num_text(v))}</title></circle>"
                for i, v in sorted(points.items())
            )
        groups.append(
            f'<g class="series" data-series="{_e(name)}"><title>{_e(name)}</title>'
            f'<path d="{" ".join(commands)}" stroke="{colour}"{dash_attr}></path>{dots}</g>'
        )
        legend.append((name, colour, dash))
    svg = (
        _svg_open(kind, width, height, title)
        + _y_ticks(ticks, y, left, right)
        + f'<g class="axis"><line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"></line>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"></line></g>'
        + _x_ticks(axis, x, bottom)
        + f'<text class="ax-title" x="14" y="{_px((top + bottom) / 2)}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_px((top + bottom) / 2)})">{_e(y_title)}</text>'
        + "".join(groups)
        + "</svg>"
    )
    return f"<figure>{svg}{_legend(legend)}</figure>"


# --------------------------------------------------------------------------------------- bar charts

_BAR_ROW = 26
_BAR_LEFT = 230


def _bar_chart(kind: str, title: str, bars: Sequence[tuple[str, int, float]], *, x_title: str) -> str:
    """Horizontal bars, one series each (negative values grow left of 0)."""
    width = _CHART_WIDTH
    top, left, right = 12, _BAR_LEFT, width - 70
    height = top + _BAR_ROW * len(bars) + 44
    bottom = top + _BAR_ROW * len(bars)
    values = [v for _, _, v in bars]
    if kind == "score_mean":
        lo, hi, ticks = _score_range([*values, 0.0])
    else:
        lo, hi, ticks = _nice_range(0.0, max([1.0, *values]))

    def x(value: float) -> float:
        return left + (value - lo) / (hi - lo) * (right - left)

    parts = [_svg_open(kind, width, height, title)]
    for value in ticks:
        px = x(value)
        parts.append(
            f'<g class="grid"><line x1="{_px(px)}" x2="{_px(px)}" y1="{top}" y2="{bottom}"></line></g>'
            f'<g class="tick"><text x="{_px(px)}" y="{bottom + 16}" text-anchor="middle">'
            f"{_e(_num_text(value))}</text></g>"
        )
    zero = x(min(max(0.0, lo), hi))
    for index, (name, colour_index, value) in enumerate(bars):
        colour, _ = _colour(colour_index)
        y0 = top + index * _BAR_ROW + 4
        x0, x1 = sorted((zero, x(value)))
        parts.append(
            f'<g class="series" data-series="{_e(name)}"><title>{_e(name)}: {_e(_num_text(value))}</title>'
            f'<text x="{left - 8}" y="{y0 + 13}" text-anchor="end">{_e(_short(name))}</text>'
            f'<rect x="{_px(x0)}" y="{y0}" width="{_px(max(x1 - x0, 1.0))}" height="{_BAR_ROW - 8}" '
            f'fill="{colour}"></rect>'
            f'<text x="{_px(max(x0, x1) + 6)}" y="{y0 + 13}">{_e(_num_text(value))}</text></g>'
        )
    parts.append(
        f'<g class="axis"><line x1="{_px(zero)}" x2="{_px(zero)}" y1="{top}" y2="{bottom}"></line></g>'
        f'<text class="ax-title" x="{_px((left + right) / 2)}" y="{height - 6}" text-anchor="middle">'
        f"{_e(x_title)}</text></svg>"
    )
    return f"<figure>{''.join(parts)}</figure>"


def _labels_chart(title: str, groups: Sequence[_Group]) -> str:
    """One stacked bar per group (its label counts), one series per label."""
    totals: dict[str, int] = {}
    for group in groups:
        for label, n in group.labels.items():
            totals[label] = totals.get(label, 0) + n
    ranked = sorted(totals, key=lambda label: (-totals[label], label))
    named = sorted(ranked[:MAX_LABELS])
    others = set(ranked[MAX_LABELS:])
    width = _CHART_WIDTH
    top, left, right = 12, _BAR_LEFT, width - 70
    bottom = top + _BAR_ROW * len(groups)
    height = bottom + 44
    biggest = max([1, *(sum(g.labels.values()) for g in groups)])
    lo, hi, ticks = _nice_range(0.0, float(biggest))

    def x(value: float) -> float:
        return left + (value - lo) / (hi - lo) * (right - left)

    parts = [_svg_open("labels", width, height, title)]
    for value in ticks:
        px = x(value)
        parts.append(
            f'<g class="grid"><line x1="{_px(px)}" x2="{_px(px)}" y1="{top}" y2="{bottom}"></line></g>'
            f'<g class="tick"><text x="{_px(px)}" y="{bottom + 16}" text-anchor="middle">'
            f"{_e(_num_text(value))}</text></g>"
        )
    for index, group in enumerate(groups):
        y0 = top + index * _BAR_ROW + 4
        total = sum(group.labels.values())
        parts.append(
            f'<g class="tick"><text x="{left - 8}" y="{y0 + 13}" text-anchor="end">'
            f"<title>{_e(group.name)}</title>{_e(_short(group.name))}</text>"
            f'<text x="{_px(x(total) + 6)}" y="{y0 + 13}">{total}</text></g>'
        )
    # The x offset of the next segment of each group's bar, as the series are drawn in turn.
    offsets = [0] * len(groups)
    legend: list[tuple[str, str, str]] = []
    series: list[tuple[str, str, dict[int, int], bool]] = []
    for index, label in enumerate(named):
        counts = {i: g.labels[label] for i, g in enumerate(groups) if g.labels.get(label)}
        series.append((label, _colour(index)[0], counts, False))
    if others:
        counts = {}
        for i, g in enumerate(groups):
            n = sum(v for k, v in g.labels.items() if k in others)
            if n:
                counts[i] = n
        plural = "s" if len(others) != 1 else ""
        series.append((f"{len(others)} other label{plural}", _OTHER_COLOUR, counts, True))
    for name, colour, counts, other in series:
        rects = []
        for i, n in sorted(counts.items()):
            y0 = top + i * _BAR_ROW + 4
            x0, x1 = x(offsets[i]), x(offsets[i] + n)
            offsets[i] += n
            rects.append(
                f'<rect x="{_px(x0)}" y="{y0}" width="{_px(max(x1 - x0, 0.5))}" height="{_BAR_ROW - 8}" '
                f'fill="{colour}" stroke="#fff" stroke-width="0.5"><title>{_e(groups[i].name)} · '
                f"{_e(name)}: {n}</title></rect>"
            )
        mark = ' data-other="true"' if other else ""
        parts.append(f'<g class="series" data-series="{_e(name)}"{mark}>{"".join(rects)}</g>')
        legend.append((name, colour, ""))
    parts.append(
        f'<g class="axis"><line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"></line></g>'
        f'<text class="ax-title" x="{_px((left + right) / 2)}" y="{height - 6}" text-anchor="middle">'
        "annotations with a label</text></svg>"
    )
    return f"<figure>{''.join(parts)}{_legend(legend, boxes=True)}</figure>"


# -------------------------------------------------------------------------------------------- pages

_ROW_NUMBERS = (
    ("count", "count", _fmt_int),
    ("score_count", "scores", _fmt_int),
    ("score_mean", "mean", _fmt),
    ("score_stdev", "stdev", _fmt),
    ("score_min", "min", _fmt),
    ("score_max", "max", _fmt),
    ("score_p50", "p50", _fmt),
    ("score_p90", "p90", _fmt),
)


def _label_counts_text(value: object) -> str:
    if not isinstance(value, Mapping) or not value:
        return f'<span class="muted">{NONE}</span>'
    return ", ".join(f"<code>{_e(k)}</code>&nbsp;{_fmt_int(v)}" for k, v in value.items())


def _rows_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], interval: str | None) -> str:
    head = []
    if interval is not None:
        head.append("<th>bucket (UTC)</th>")
    head += [f"<th>{_e(k)}</th>" for k in keys]
    head += [f'<th class="n">{_e(h)}</th>' for _, h, _ in _ROW_NUMBERS]
    head.append("<th>labels</th>")
    body = []
    for row in rows:
        cells = []
        if interval is not None:
            bucket = row.get("bucket")
            cells.append(f"<td>{_e(_text(bucket))}</td>")
        for k in keys:
            value = row.get(k)
            cells.append(
                f'<td><span class="muted">{NONE}</span></td>' if value is None else f"<td>{_e(value)}</td>"
            )
        cells += [f'<td class="n">{fmt(row.get(field))}</td>' for field, _, fmt in _ROW_NUMBERS]
        cells.append(f"<td>{_label_counts_text(row.get('label_counts'))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _problem_text(error: object) -> str:
    if isinstance(error, Mapping):
        parts = [str(error[k]) for k in ("title", "detail") if error.get(k)]
        return " - ".join(parts) or str(dict(error))
    return _text(error)


def _sources_note(partial: bool, sources: Sequence[Mapping[str, Any]]) -> str:
    failed = [s for s in sources if isinstance(s, Mapping) and s.get("status") not in (None, "ok")]
    if not partial and not failed:
        return ""
    items = "".join(
        f"<li><code>{_e(_text(s.get('source')))}</code> {_e(_text(s.get('status')))}"
        + (f": {_e(_problem_text(s.get('error')))}" if s.get("error") else "")
        + "</li>"
        for s in failed
    )
    head = "Partial answer: not every source answered; these numbers leave it out." if partial else ""
    return f'<div class="note">{_e(head)}<ul>{items}</ul></div>' if items or head else ""


def _page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{body}</body></html>\n"
    ).encode()


def metrics_html(
    rows: Sequence[Mapping[str, Any]],
    *,
    group_by: Sequence[str],
    interval: str | None,
    title: str,
    partial: bool = False,
    sources: Sequence[Mapping[str, Any]] = (),
    max_rows: int | None = None,
) -> bytes:
    """The metrics page (see the module docstring). ``partial`` and ``sources`` (as in the JSON
    answer) are optional: with them, the page names the sources that did not answer.
    ``max_rows`` bounds the rows *table* (the page then says how many it leaves out); the charts
    always draw every row."""
    keys = [k for k in group_by if k != "bucket"]
    grouping = ", ".join(keys) if keys else "nothing (all annotations together)"
    sub = (
        f'<p class="sub">grouped by {_e(grouping)} · '
        f"{_e('per ' + interval if interval else 'no time buckets')} · {len(rows)} rows</p>"
    )
    note = _sources_note(partial, sources)
    if not rows:
        return _page(title, f'{sub}{note}<p class="empty">no annotations match</p>')
    axis: _Axis | None = None
    if interval is not None:
        axis = _Axis([str(r["bucket"]) for r in rows if r.get("bucket") is not None], interval)
        if not len(axis):
            axis = None
    groups = _groups(rows, keys, axis)
    parts = [sub, note]
    shown, hidden = _top(groups, lambda g: g.count)
    scored, hidden_scored = _top([g for g in groups if g.score_count], lambda g: g.score_count)
    if axis is not None:
        parts.append(f"<h2>Annotations per {_e(interval)}</h2>")
        parts.append(_left_out(hidden, "the fewest annotations"))
        counts = [(g.name, g.colour, {i: float(n) for i, n in g.counts.items()}) for g in shown]
        parts.append(
            _line_chart(
                "counts", "annotations per bucket", axis, counts, fill_zero=True, y_title="annotations"
            )
        )
        means = [(g.name, g.colour, dict(g.means)) for g in scored if g.means]
        if means:
            parts.append(f"<h2>Mean score per {_e(interval)}</h2>")
            parts.append(_left_out(hidden_scored, "the fewest scores"))
            parts.append(
                _line_chart(
                    "score_mean", "mean score per bucket", axis, means, fill_zero=False, y_title="mean"
                )
            )
    else:
        parts.append("<h2>Annotations per group</h2>")
        parts.append(_left_out(hidden, "the fewest annotations"))
        parts.append(
            _bar_chart(
                "counts",
                "annotations per group",
                [(g.name, g.colour, float(g.bar_count)) for g in shown],
                x_title="annotations",
            )
        )
        bars = [(g.name, g.colour, g.bar_mean) for g in scored if g.bar_mean is not None]
        if bars:
            parts.append("<h2>Mean score per group</h2>")
            parts.append(_left_out(hidden_scored, "the fewest scores"))
            parts.append(_bar_chart("score_mean", "mean score per group", bars, x_title="mean score"))
    labelled = [g for g in groups if g.labels and sum(g.labels.values())]
    parts.append("<h2>Label distribution</h2>")
    if labelled:
        shown_labelled, hidden_labelled = _top(labelled, lambda g: sum(g.labels.values()))
        parts.append(_left_out(hidden_labelled, "the fewest labels"))
        parts.append(_labels_chart("label counts per group", shown_labelled))
    else:
        parts.append('<p class="empty">no labels in these annotations</p>')
    shown_rows = rows if max_rows is None else rows[: max(0, max_rows)]
    parts.append(f"<h2>Rows ({len(rows)})</h2>{_rows_table(shown_rows, keys, interval)}")
    if len(shown_rows) < len(rows):
        parts.append(
            f'<p class="note">{len(rows) - len(shown_rows)} more rows not shown here; '
            "the CSV or JSON output has every row.</p>"
        )
    return _page(title, "".join(parts))


# ---------------------------------------------------------------------------------------- agreement

_CELL_MAX, _CELL_MIN = 64, 22


def _heat(t: float) -> str:
    """White-ish (0) to a strong blue (1)."""
    lo, hi = (246, 248, 250), (9, 105, 218)
    r, g, b = (round(a + (z - a) * t) for a, z in zip(lo, hi, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _confusion_svg(name: str, confusion: Mapping[str, Any]) -> str:
    raters = [str(r) for r in confusion.get("raters") or ()]
    labels = [str(label) for label in confusion.get("labels") or ()]
    matrix = [list(row) for row in confusion.get("matrix") or ()]
    n = len(labels)
    if n == 0 or len(matrix) != n or any(len(row) != n for row in matrix):
        return '<p class="empty">no confusion matrix to draw</p>'
    first = raters[0] if raters else "rater 1"
    second = raters[1] if len(raters) > 1 else "rater 2"
    cell = max(_CELL_MIN, min(_CELL_MAX, 640 // n))
    longest = max(len(_short(label, 18)) for label in labels)
    left, top = 200, 44 + round(longest * 4.6)  # the column labels are written at 45 degrees
    width = left + cell * n + max(24, round(longest * 4.6))
    height = top + cell * n + 24
    biggest = max([1, *(_count(v) for row in matrix for v in row)])
    parts = [_svg_open("confusion", width, height, f"{name}: {first} vs {second}")]
    parts.append(
        f'<text class="ax-title" x="{left + cell * n / 2:.1f}" y="16" text-anchor="middle">'
        f"{_e(_short(second, 60))} →</text>"
        f'<text class="ax-title" x="14" y="{top + cell * n / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + cell * n / 2:.1f})">{_e(_short(first, 40))} →</text>'
    )
    for j, label in enumerate(labels):
        cx = left + j * cell + cell / 2
        parts.append(
            f'<g class="tick"><text x="{cx:.1f}" y="{top - 8}" text-anchor="start" '
            f'transform="rotate(-45 {cx:.1f} {top - 8})"><title>{_e(label)}</title>{_e(_short(label, 18))}'
            "</text></g>"
        )
    for i, label in enumerate(labels):
        cy = top + i * cell + cell / 2 + 4
        parts.append(
            f'<g class="tick"><text x="{left - 8}" y="{cy:.1f}" text-anchor="end"><title>{_e(label)}</title>'
            f"{_e(_short(label, 24))}</text></g>"
        )
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            count = _count(value)
            t = count / biggest
            x0, y0 = left + j * cell, top + i * cell
            ink = "#fff" if t > 0.55 else "#1f2328"
            parts.append(
                f'<rect class="cell" x="{x0}" y="{y0}" width="{cell}" height="{cell}" fill="{_heat(t)}"'
                f' stroke="#fff" stroke-width="1" data-count="{count}"><title>{_e(first)}: {_e(labels[i])} · '
                f"{_e(second)}: {_e(labels[j])} · {count}</title></rect>"
                f'<text class="in-cell" x="{x0 + cell / 2:.1f}" y="{y0 + cell / 2 + 4:.1f}" '
                f'text-anchor="middle" style="fill:{ink}">{count}</text>'
            )
    # The diagonal (where the two raters agree), outlined over the cells.
    parts.extend(
        f'<rect class="diagonal" x="{left + i * cell + 1}" y="{top + i * cell + 1}" width="{cell - 2}" '
        f'height="{cell - 2}" fill="none" stroke="#1f2328" stroke-width="2"></rect>'
        for i in range(n)
    )
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}</figure>"


def _agreement_summary(result: Mapping[str, Any]) -> str:
    raters = result.get("raters") or ()
    rater_cells = ", ".join(f"<code>{_e(r)}</code>" for r in raters) or f'<span class="muted">{NONE}</span>'
    kind = result.get("kappa_kind")
    level = result.get("alpha_level")
    kappa = _fmt(result.get("kappa"), ".3f") + (f' <span class="muted">({_e(kind)})</span>' if kind else "")
    alpha = _fmt(result.get("alpha"), ".3f") + (f' <span class="muted">({_e(level)})</span>' if level else "")
    return (
        '<table><thead><tr><th>raters</th><th class="n">subjects rated by ≥ 2</th>'
        '<th class="n">percent agreement</th><th class="n">kappa</th>'
        '<th class="n">Krippendorff\'s alpha</th></tr></thead><tbody><tr>'
        f'<td>{rater_cells}</td><td class="n">{_fmt_int(result.get("subjects"))}</td>'
        f'<td class="n">{_fmt_rate(result.get("percent_agreement"))}</td>'
        f'<td class="n">{kappa}</td><td class="n">{alpha}</td></tr></tbody></table>'
    )


def _disagreements(subjects: object) -> str:
    items = (
        [str(s) for s in subjects] if isinstance(subjects, Sequence) and not isinstance(subjects, str) else []
    )
    if not items:
        return '<p class="empty">none</p>'
    codes = ", ".join(f"<code>{_e(s)}</code>" for s in items)
    plural = "s" if len(items) != 1 else ""
    return f"<details open><summary>{len(items)} subject{plural}</summary><p>{codes}</p></details>"


def agreement_html(answer: Mapping[str, Any], *, title: str) -> bytes:
    """The agreement page (see the module docstring)."""
    by = answer.get("by")
    results = [r for r in answer.get("results") or () if isinstance(r, Mapping)]
    sources = [s for s in answer.get("sources") or () if isinstance(s, Mapping)]
    sub = (
        f'<p class="sub">raters compared by <b>{_e(_text(by))}</b> · {len(results)} '
        f"annotation name{'s' if len(results) != 1 else ''}</p>"
    )
    parts = [sub, _sources_note(bool(answer.get("partial")), sources)]
    if not results:
        parts.append('<p class="empty">no annotations match</p>')
    for result in results:
        name = _text(result.get("name"))
        parts.append(f"<h2>{_e(name)}</h2>{_agreement_summary(result)}")
        confusion = result.get("confusion")
        if isinstance(confusion, Mapping):
            raters = [str(r) for r in confusion.get("raters") or ()]
            pair = " vs ".join(f"<code>{_e(r)}</code>" for r in raters[:2])
            parts.append(f"<h3>Label confusion: {pair}</h3>{_confusion_svg(name, confusion)}")
        else:
            parts.append(
                '<h3>Label confusion</h3><p class="empty">no confusion matrix (scores, not labels, '
                "or no two raters with labels on the same subjects)</p>"
            )
        parts.append(f"<h3>Subjects where raters disagree</h3>{_disagreements(result.get('disagreements'))}")
    return _page(title, "".join(parts))
