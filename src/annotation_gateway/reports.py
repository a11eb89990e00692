"""Renderers for a :class:`~annotation_gateway.compare.CompareResult`: JSON, CSV, rich, HTML.

Contract:
- :func:`to_json` - the result's JSON (``bytes``), exactly the pydantic model's shape;
- :func:`to_csv` - one RFC 4180 record per row (``\\r\\n`` line ends, quoting by the ``csv``
  module) under the header :data:`CSV_COLUMNS`; empty cell = absent value; numbers are written
  with ``repr`` (the shortest text that reads back as the same float), so they round-trip
  exactly. Cells are written as the vendors stored them (no spreadsheet-formula neutralising,
  which would corrupt e.g. negative scores);
- numbers: a stored score is written exactly as stored (never rounded). The computed ones -
  ``score_diff``, a group's mean score, the mean absolute difference - carry no binary-float
  artefact, because :mod:`annotation_gateway.compare` computes them in decimal on the stored
  scores' shortest ``repr`` and rounds once to the nearest float: 1.0 vs 0.95 gives
  ``score_diff`` ``-0.05`` in CSV and JSON alike, never ``-0.050000000000000044``. The rich
  tables and HTML show 4 significant digits;
- :func:`to_rich_table` - a summary table and a rows table for the terminal; every value coming
  from annotations is passed as plain :class:`rich.text.Text` (never parsed as markup) with
  control characters made visible, so a label cannot restyle or drive the terminal. Each table
  is a :class:`FittedTable`: no id, name or label is ever broken inside a word, whatever the
  width (see there);
- :func:`to_html` - one self-contained HTML file: inline CSS, no script, no external asset, font
  or URL, and a Content-Security-Policy that forbids loading anything; every value is escaped
  with :func:`html.escape`. It shows the overall figures, the summary per name, and the rows that
  differ (then the one-sided rows) with the left and right groups side by side.

All renderers are pure functions of the result; they never reorder or recompute the comparison.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import re
from collections.abc import Iterable, Sequence
from html import escape

from pydantic_core import to_json as _pydantic_to_json
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from annotation_gateway.compare import (
    CompareResult,
    CompareRow,
    GroupValue,
    NameSummary,
    OverallSummary,
    RowStatus,
)
from annotation_gateway.model import Annotation

__all__ = [
    "CSV_COLUMNS",
    "MIN_FREE_TEXT_WIDTH",
    "STATUS_STYLES",
    "FittedTable",
    "rows_table",
    "summary_table",
    "to_csv",
    "to_html",
    "to_json",
    "to_rich_table",
]

CSV_COLUMNS = (
    "subject_id",
    "right_subject_id",
    "name",
    "right_name",
    "status",
    "left_label",
    "right_label",
    "left_score",
    "right_score",
    "score_diff",
    "left_count",
    "right_count",
)
"""The CSV header. ``right_subject_id`` differs from ``subject_id`` only under a ``subject_map``."""

STATUS_STYLES: dict[RowStatus, str] = {
    RowStatus.AGREE: "green",
    RowStatus.LABEL_DIFFERS: "bold red",
    RowStatus.SCORE_DIFFERS: "yellow",
    RowStatus.ONLY_LEFT: "cyan",
    RowStatus.ONLY_RIGHT: "magenta",
}

_STATUS_TEXT = {
    RowStatus.AGREE: "agree",
    RowStatus.LABEL_DIFFERS: "label differs",
    RowStatus.SCORE_DIFFERS: "score differs",
    RowStatus.ONLY_LEFT: "only left",
    RowStatus.ONLY_RIGHT: "only right",
}


# --------------------------------------------------------------------------------------------- JSON


def to_json(result: CompareResult) -> bytes:
    """The result as JSON bytes (pydantic's serializer: no intermediate dict)."""
    return _pydantic_to_json(result)


# ---------------------------------------------------------------------------------------------- CSV


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that parses back to the same float
    return str(value)


def _csv_record(row: CompareRow) -> list[str]:
    left, right = row.left, row.right
    values: list[float | int | str | None] = [
        row.subject_id,
        row.right_subject_id,
        row.name,
        row.right_name,
        row.status.value,
        left.label if left else None,
        right.label if right else None,
        left.score if left else None,
        right.score if right else None,
        row.score_diff,
        left.count if left else 0,
        right.count if right else 0,
    ]
    return [_cell(value) for value in values]


def to_csv(result: CompareResult) -> str:
    """One CSV record per row, with a header (see :data:`CSV_COLUMNS`)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_record(row) for row in result.rows)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- rich

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

MIN_FREE_TEXT_WIDTH = 8
"""A free-text column is not cut below this many characters (or its own width, if smaller)."""
_UNBOUNDED = 1_000_000


class FittedTable:
    """A :class:`rich.table.Table` laid out so that no value is ever broken inside a word.

    Rich fits a table that is wider than the console by narrowing every column, which breaks ids
    mid-word (``suppor`` / ``t-07``). This renderable lays the columns out itself, for the width
    it is given:

    - if the table fits as it is, nothing changes;
    - a column is never narrower than its longest word, header included: a value wraps at its
      spaces only (``11-23`` / ``07:15:02``, ``label`` / ``differs``); an id or a label without
      spaces stays on one line, whole;
    - the free-text columns (``free``, e.g. an explanation) stay on one line each and are cut
      with ``…`` to the room left, down to :data:`MIN_FREE_TEXT_WIDTH` characters (or their
      header's width);
    - the room above that goes first to the columns that need the least of it to fit on one
      line, then to the free-text columns, then to the rest;
    - when the longest words do not fit the width - or, with ``one_line``, when the rows do not
      fit on one line each - the ``optional`` groups of columns are left out, in that order,
      until they do, and the caption names them ("not shown at this width: ..."); a column is
      shown whole or not at all;
    - if even the remaining columns do not fit, the table is drawn at the width they need, wider
      than asked (a console that crops, rich's default, cuts its right edge).
    """

    def __init__(
        self,
        table: Table,
        *,
        free: Iterable[int] = (),
        optional: Iterable[Iterable[int]] = (),
        one_line: bool = False,
    ) -> None:
        self.table = table
        self.one_line = one_line
        self.free = frozenset(free)
        self.optional = tuple(tuple(group) for group in optional)

    def _measure(self, console: Console, options: ConsoleOptions) -> tuple[list[int], list[int]]:
        """Per column: its width on one line, and its narrowest width that keeps words whole."""
        table = self.table
        wide = options.update_width(_UNBOUNDED)
        natural: list[int] = []
        words: list[int] = []
        for index, column in enumerate(table.columns):
            column.width = None
            cells = [column.header, *column.cells] if table.show_header else list(column.cells)
            sizes = [Measurement.get(console, wide, cell) for cell in cells] or [Measurement(1, 1)]
            full = max(1, *(size.maximum for size in sizes))
            natural.append(full)
            if index in self.free:  # cut with "…", but its header stays whole
                header = Measurement.get(console, wide, column.header).maximum if table.show_header else 0
                words.append(min(full, max(MIN_FREE_TEXT_WIDTH, header)))
            else:
                words.append(max(1, *(size.minimum for size in sizes)))
        return natural, words

    def _layout(
        self, console: Console, options: ConsoleOptions
    ) -> tuple[Table, list[int] | None, set[int], int]:
        """The table to draw (without the columns left out), its column widths (``None``: as
        they are), which of its columns are free text, and the width to draw it at."""
        natural, words = self._measure(console, options)
        wide = options.update_width(_UNBOUNDED)
        width = options.max_width
        table = self.table
        chrome = Measurement.get(console, wide, table).maximum - sum(natural)  # rules and padding
        if sum(natural) + chrome <= width:
            return table, None, set(self.free), width
        # What the shown columns need: their longest words, or (one_line) their whole values.
        least = [words[i] if i in self.free or not self.one_line else natural[i] for i in range(len(natural))]
        shown = list(range(len(natural)))
        for group in self.optional:
            if sum(least[i] for i in shown) + chrome <= width:
                break
            kept = [i for i in shown if i not in group]
            if kept and kept != shown:
                shown = kept
                table = self._without([i for i in range(len(natural)) if i not in shown])
                chrome = Measurement.get(console, wide, table).maximum - sum(natural[i] for i in shown)
        free = {shown.index(i) for i in self.free if i in shown}
        natural = [natural[i] for i in shown]
        words = [words[i] for i in shown]
        room = width - chrome - sum(words)
        if sum(natural) - sum(words) <= room:
            return table, natural, free, sum(natural) + chrome
        if room <= 0:
            return table, words, free, sum(words) + chrome
        widths = list(words)
        intact = [i for i in range(len(widths)) if i not in free]
        # 1. whole columns, the cheapest first: each one that fits is a column on one line.
        for i in sorted(intact, key=lambda i: natural[i] - words[i]):
            need = natural[i] - widths[i]
            if need <= room:
                widths[i], room = natural[i], room - need
        # 2. the free-text columns, in equal shares, up to their own width.
        hungry = [i for i in sorted(free) if widths[i] < natural[i]]
        while room > 0 and hungry:
            share = max(1, room // len(hungry))
            for i in list(hungry):
                give = min(share, natural[i] - widths[i], room)
                widths[i], room = widths[i] + give, room - give
                if widths[i] >= natural[i]:
                    hungry.remove(i)
        # 3. what is left: fewer wrapped lines in the columns that still wrap.
        for i in intact:
            give = min(room, natural[i] - widths[i])
            widths[i], room = widths[i] + give, room - give
        return table, widths, free, sum(widths) + chrome

    def _without(self, left_out: list[int]) -> Table:
        """A copy of the table without the columns ``left_out``; its caption names them."""
        table = copy.copy(self.table)
        kept = [c for i, c in enumerate(self.table.columns) if i not in left_out]
        table.columns = [dataclasses.replace(c, _index=i) for i, c in enumerate(kept)]
        names = ", ".join(_plain(self.table.columns[i].header) for i in left_out)
        note = f"not shown at this width: {names}"
        caption = self.table.caption
        table.caption = Text(note) if caption is None else Text.assemble(_as_text(caption), "\n", note)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, widths, free, width = self._layout(console, options)
        if widths is not None:
            for index, (column, column_width) in enumerate(zip(table.columns, widths, strict=True)):
                column.width = column_width
                if index in free:
                    column.no_wrap, column.overflow = True, "ellipsis"
        yield from console.render(table, options.update_width(width))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table)


def _as_text(renderable: RenderableType) -> Text:
    if isinstance(renderable, Text):
        return renderable
    return Text.from_markup(renderable) if isinstance(renderable, str) else Text("")


def _plain(renderable: RenderableType) -> str:
    return _as_text(renderable).plain


def _text(value: str | None, style: str = "") -> Text:
    # Text(), not a str: a str cell would be parsed as rich markup ("[red]..." or "[/]").
    # Rich keeps ESC and most C0/C1 codes, so they are shown escaped instead of reaching the tty.
    if value is None:
        return Text("-", style="dim")
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value), style=style)


def _num(value: float | None, fmt: str = ".4g") -> Text:
    return Text("-", style="dim") if value is None else Text(format(value, fmt))


def _rate(value: float | None) -> Text:
    return Text("-", style="dim") if value is None else Text(f"{value:.1%}")


def _status(status: RowStatus) -> Text:
    return Text(_STATUS_TEXT[status], style=STATUS_STYLES[status])


def _name_pair(name: str, right_name: str) -> Text:
    text = _text(name)
    if right_name != name:
        text.append(" → ", style="dim")
        text.append_text(_text(right_name))
    return text


def summary_table(result: CompareResult) -> FittedTable:
    """Per-name statistics, then an overall line."""
    table = Table(title=f"{result.left} vs {result.right}: summary per name", title_justify="left")
    table.add_column("name (left → right)")
    for header, style in (
        ("rows", ""),
        ("agree", STATUS_STYLES[RowStatus.AGREE]),
        ("label differs", STATUS_STYLES[RowStatus.LABEL_DIFFERS]),
        ("score differs", STATUS_STYLES[RowStatus.SCORE_DIFFERS]),
        ("only left", STATUS_STYLES[RowStatus.ONLY_LEFT]),
        ("only right", STATUS_STYLES[RowStatus.ONLY_RIGHT]),
        ("agreement", ""),
        ("kappa (n)", ""),
        ("MAE (n)", ""),
    ):
        table.add_column(header, justify="right", header_style=style or "bold")
    for entry in result.summary:
        kappa = _num(entry.cohen_kappa, ".3f").append(f" ({entry.n_labelled})", style="dim")
        mae = _num(entry.mean_abs_score_diff).append(f" ({entry.n_scored})", style="dim")
        table.add_row(
            _name_pair(entry.name, entry.right_name),
            *(Text(str(n)) for n in _counts(entry)),
            _rate(entry.agreement_rate),
            kappa,
            mae,
        )
    overall = result.overall
    table.add_section()
    table.add_row(
        Text("all names", style="bold"),
        *(Text(str(n), style="bold") for n in _counts(overall)),
        _rate(overall.agreement_rate),
        Text(""),
        _num(overall.mean_abs_score_diff).append(f" ({overall.n_scored})", style="dim"),
    )
    return FittedTable(table, optional=((9,), (8,)))  # too narrow: MAE, then kappa left out


def _counts(entry: NameSummary | OverallSummary) -> tuple[int, ...]:
    return (
        entry.n_rows,
        entry.agree,
        entry.label_differs,
        entry.score_differs,
        entry.only_left,
        entry.only_right,
    )


def rows_table(
    result: CompareResult, *, only_differences: bool = False, max_rows: int | None = None
) -> FittedTable:
    """One line per row (optionally only the non-agreeing ones, and at most ``max_rows``)."""
    rows = [r for r in result.rows if not only_differences or r.status is not RowStatus.AGREE]
    shown = rows if max_rows is None else rows[:max_rows]
    table = Table(title=f"rows ({len(shown)} of {len(rows)})", title_justify="left")
    for header, justify in (
        ("subject", "left"),
        ("name", "left"),
        ("status", "left"),
        (f"{result.left} label", "left"),
        (f"{result.right} label", "left"),
        (f"{result.left} score", "right"),
        (f"{result.right} score", "right"),
        ("diff", "right"),
        ("members L/R", "right"),
    ):
        table.add_column(_text(header), justify=justify)  # type: ignore[arg-type]
    for row in shown:
        subject = _text(row.subject_id)
        if row.right_subject_id != row.subject_id:
            subject.append(" → ", style="dim").append_text(_text(row.right_subject_id))
        left, right = row.left, row.right
        table.add_row(
            subject,
            _name_pair(row.name, row.right_name),
            _status(row.status),
            _text(left.label) if left else Text(""),
            _text(right.label) if right else Text(""),
            _num(left.score) if left else Text(""),
            _num(right.score) if right else Text(""),
            _num(row.score_diff, "+.4g"),
            Text(f"{left.count if left else 0}/{right.count if right else 0}"),
        )
    # Too narrow: members, then the two scores (the diff stays), then the diff are left out.
    return FittedTable(table, optional=((8,), (5, 6), (7,)))


def to_rich_table(
    result: CompareResult, *, only_differences: bool = False, max_rows: int | None = None
) -> Group:
    """The summary table and the rows table, ready for ``Console.print``."""
    return Group(
        summary_table(result), rows_table(result, only_differences=only_differences, max_rows=max_rows)
    )


# --------------------------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light; --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --l:#0969da; --r:#8250df;
        --line:#d0d7de; --muted:#57606a; --bg2:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:#1f2328;
       margin: 0 auto; padding: 24px; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: var(--muted); margin: 0 0 16px; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg2);
       padding: 1px 4px; border-radius: 4px; overflow-wrap: anywhere; }
td.nm { white-space: nowrap; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; min-width: 110px; }
.card b { display: block; font-size: 20px; } .card .lbl { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg2); font-weight: 600; font-size: 12.5px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600;
         color: #fff; white-space: nowrap; }
.st-agree { background: var(--ok); } .st-label_differs { background: var(--bad); }
.st-score_differs { background: var(--warn); } .st-only_left { background: var(--l); }
.st-only_right { background: var(--r); }
.c-agree { color: var(--ok); } .c-label_differs { color: var(--bad); }
.c-score_differs { color: var(--warn); }
.c-only_left { color: var(--l); } .c-only_right { color: var(--r); }
.row { border: 1px solid var(--line); border-radius: 8px; margin: 12px 0; overflow: hidden; }
.row > header { background: var(--bg2); padding: 8px 12px; display: flex; gap: 10px; flex-wrap: wrap;
                align-items: baseline; border-bottom: 1px solid var(--line); }
.sides { display: grid; grid-template-columns: 1fr 1fr; }
.side { padding: 10px 12px; min-width: 0; } .side + .side { border-left: 1px solid var(--line); }
.side h3 { margin: 0 0 6px; font-size: 13px; color: var(--muted); font-weight: 600; }
.group { margin: 0 0 8px; } .group .v { font-weight: 600; }
.hl { background: #fff1c2; border-radius: 3px; padding: 0 3px; }
.empty { color: var(--muted); font-style: italic; }
.members td, .members th { font-size: 12.5px; padding: 3px 6px; }
.expl { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 34em; }
.muted { color: var(--muted); } details summary { cursor: pointer; color: var(--muted); }
.note { border-left: 3px solid var(--warn); padding: 4px 10px; background: #fff8e5; }
@media print { .row { break-inside: avoid; } }
"""

# No request may leave the file: even if some value escaped its escaping, nothing could load or run.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _fmt(value: float | None, fmt: str = ".4g") -> str:
    return '<span class="muted">-</span>' if value is None else _e(format(value, fmt))


def _fmt_rate(value: float | None) -> str:
    return '<span class="muted">-</span>' if value is None else _e(f"{value:.1%}")


def _badge(status: RowStatus) -> str:
    return f'<span class="badge st-{status.value}">{_e(_STATUS_TEXT[status])}</span>'


def _html_card(value: str, label: str) -> str:
    return f'<div class="card"><b>{value}</b><span class="lbl">{_e(label)}</span></div>'


def _html_names(name: str, right_name: str) -> str:
    if name == right_name:
        return f"<code>{_e(name)}</code>"
    return f'<code>{_e(name)}</code> <span class="muted">↔</span> <code>{_e(right_name)}</code>'


def _html_subjects(entries: Sequence[str]) -> str:
    if not entries:
        return '<span class="muted">-</span>'
    items = ", ".join(f"<code>{_e(s)}</code>" for s in entries)
    return f"<details><summary>{len(entries)}</summary>{items}</details>"


def _html_stats(entry: NameSummary | OverallSummary) -> str:
    cells = [f'<td class="n">{entry.n_rows}</td>']
    for status, count in zip(_STATUS_TEXT, _counts(entry)[1:], strict=True):
        cells.append(f'<td class="n c-{status.value}">{count}</td>')
    cells.append(f'<td class="n">{_fmt_rate(entry.agreement_rate)}</td>')
    return "".join(cells)


def _html_mae(entry: NameSummary | OverallSummary) -> str:
    return (
        f'<td class="n">{_fmt(entry.mean_abs_score_diff)} <span class="muted">({entry.n_scored})</span></td>'
    )


def _html_summary(result: CompareResult) -> str:
    head = "".join(
        f'<th class="{cls}">{_e(h)}</th>'
        for h, cls in (
            ("name (left ↔ right)", ""),
            ("rows", "n"),
            ("agree", "n"),
            ("label differs", "n"),
            ("score differs", "n"),
            ("only left", "n"),
            ("only right", "n"),
            ("agreement", "n"),
            ("Cohen's kappa (n)", "n"),
            ("mean abs. score diff (n)", "n"),
            ("disagreeing subjects", ""),
            ("one-sided subjects", ""),
        )
    )
    body: list[str] = []
    for s in result.summary:
        body.append(
            f'<tr><td class="nm">{_html_names(s.name, s.right_name)}</td>{_html_stats(s)}'
            f'<td class="n">{_fmt(s.cohen_kappa, ".3f")} <span class="muted">({s.n_labelled})</span></td>'
            f"{_html_mae(s)}<td>{_html_subjects(s.disagreeing_subjects)}</td>"
            f"<td>{_html_subjects(s.one_sided_subjects)}</td></tr>"
        )
    o = result.overall
    body.append(
        f'<tr class="total"><td>all names</td>{_html_stats(o)}'
        f'<td class="n"><span class="muted">per name</span></td>{_html_mae(o)}<td></td><td></td></tr>'
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_member(member: Annotation) -> str:
    annotator = member.annotator.kind.value + (f" {member.annotator.id}" if member.annotator.id else "")
    label = '<span class="muted">-</span>' if member.label is None else _e(member.label)
    explanation = (
        '<span class="muted">-</span>'
        if member.explanation is None
        else f'<div class="expl">{_e(member.explanation)}</div>'
    )
    return (
        "<tr>"
        f"<td>{_e(annotator)}</td>"
        f"<td>{label}</td>"
        f'<td class="n">{_fmt(member.score, ".6g")}</td>'
        f"<td>{explanation}</td>"
        f'<td class="muted" title="{_e(member.id)}">{_e(member.updated_at.strftime("%Y-%m-%d %H:%M"))}</td>'
        "</tr>"
    )


def _html_side(side: str, source: str, group: GroupValue | None, row: CompareRow) -> str:
    heading = f"<h3>{_e(side)} · {_e(source)}</h3>"
    if group is None:
        return f'<div class="side">{heading}<p class="empty">no annotation on this side</p></div>'
    label_cls = ' class="v hl"' if row.status is RowStatus.LABEL_DIFFERS else ' class="v"'
    score_cls = ' class="v hl"' if row.status is RowStatus.SCORE_DIFFERS else ' class="v"'
    label = '<span class="muted">none</span>' if group.label is None else _e(group.label)
    score = '<span class="muted">none</span>' if group.score is None else _e(format(group.score, ".6g"))
    votes = ""
    if group.count > 1 and group.label_votes:
        votes = (
            " <span class='muted'>("
            + ", ".join(f"{_e(k)}: {v}" for k, v in group.label_votes.items())
            + ")</span>"
        )
    plural = "s" if group.count != 1 else ""
    where = f"<code>{_e(group.subject_id)}</code> · <code>{_e(group.name)}</code>"
    members = "".join(_html_member(m) for m in group.members)
    return (
        f'<div class="side">{heading}'
        f'<p class="group">label <span{label_cls}>{label}</span>{votes} · '
        f"score <span{score_cls}>{score}</span> · "
        f'{group.count} annotation{plural}<br><span class="muted">{where}</span></p>'
        '<table class="members"><thead><tr><th>annotator</th><th>label</th><th class="n">score</th>'
        f"<th>explanation</th><th>updated (UTC)</th></tr></thead><tbody>{members}</tbody></table></div>"
    )


def _html_row(row: CompareRow, result: CompareResult) -> str:
    subject = f"<code>{_e(row.subject_id)}</code>"
    if row.right_subject_id != row.subject_id:
        subject += f' <span class="muted">↔</span> <code>{_e(row.right_subject_id)}</code>'
    diff = (
        ""
        if row.score_diff is None
        else f' <span class="muted">Δscore {_e(format(row.score_diff, "+.4g"))}</span>'
    )
    return (
        f'<article class="row">'
        f"<header>{_badge(row.status)} {subject} {_html_names(row.name, row.right_name)}{diff}</header>"
        f'<div class="sides">{_html_side("left", result.left, row.left, row)}'
        f"{_html_side('right', result.right, row.right, row)}</div></article>"
    )


def _html_rows(rows: Sequence[CompareRow], result: CompareResult, limit: int | None) -> str:
    shown = rows if limit is None else rows[:limit]
    parts = [_html_row(row, result) for row in shown]
    if len(shown) < len(rows):
        parts.append(
            f'<p class="note">{len(rows) - len(shown)} more rows not shown here; '
            "the CSV or JSON output has every row.</p>"
        )
    if not rows:
        parts.append('<p class="empty">none</p>')
    return "".join(parts)


def _select(rows: Iterable[CompareRow], statuses: tuple[RowStatus, ...]) -> list[CompareRow]:
    return [row for row in rows if row.status in statuses]


def to_html(
    result: CompareResult, *, title: str = "Annotation comparison", max_rows: int | None = None
) -> str:
    """A self-contained HTML report (see the module docstring); ``max_rows`` bounds each row section."""
    o = result.overall
    differing = _select(result.rows, (RowStatus.LABEL_DIFFERS, RowStatus.SCORE_DIFFERS))
    one_sided = _select(result.rows, (RowStatus.ONLY_LEFT, RowStatus.ONLY_RIGHT))
    cards = "".join(
        (
            _html_card(_e(o.n_subjects), "subjects"),
            _html_card(_e(o.n_rows), "rows (subject, name)"),
            _html_card(_fmt_rate(o.agreement_rate), "agreement (paired rows)"),
            _html_card(f'<span class="c-agree">{o.agree}</span>', "agree"),
            _html_card(f'<span class="c-label_differs">{o.label_differs}</span>', "label differs"),
            _html_card(f'<span class="c-score_differs">{o.score_differs}</span>', "score differs"),
            _html_card(f'<span class="c-only_left">{o.only_left}</span>', f"only in {result.left}"),
            _html_card(f'<span class="c-only_right">{o.only_right}</span>', f"only in {result.right}"),
            _html_card(_fmt(o.mean_abs_score_diff), "mean abs. score diff"),
        )
    )
    ig = result.ignored
    ignored_total = (
        ig.left_subject_not_requested
        + ig.left_name_not_requested
        + ig.right_subject_not_requested
        + ig.right_name_not_requested
    )
    ignored = (
        f'<p class="note">{ignored_total} annotations outside the requested subjects/names were not '
        f"compared ({_e(result.left)}: {ig.left_subject_not_requested} by subject, "
        f"{ig.left_name_not_requested} by name; {_e(result.right)}: {ig.right_subject_not_requested} "
        f"by subject, {ig.right_name_not_requested} by name).</p>"
        if ignored_total
        else ""
    )
    if ig.left_copied_from_right or ig.right_copied_from_left:
        ignored += (
            f'<p class="note">Copies a migration made were not compared ({_e(result.left)}: '
            f"{ig.left_copied_from_right} copied from {_e(result.right)}; {_e(result.right)}: "
            f"{ig.right_copied_from_left} copied from {_e(result.left)}): a copy is not an "
            "independent judgement. include_copies (--include-copies) compares them.</p>"
        )
    rules = (
        "Rows pair annotations by subject and name. Several annotations of one name on one side form a "
        "group: majority label (ties: newest, then alphabetical), mean score. A label or score present on "
        f"one side only counts as a difference; scores within {result.score_tolerance:g} are equal. "
        "Kappa uses paired rows where both sides have a label."
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="sub">left <b>{_e(result.left)}</b> vs right <b>{_e(result.right)}</b> · {_e(rules)}</p>'
        f'<section class="cards">{cards}</section>{ignored}'
        f"<h2>Summary per name</h2>{_html_summary(result)}"
        f"<h2>Differences ({len(differing)})</h2>{_html_rows(differing, result, max_rows)}"
        f"<h2>On one side only ({len(one_sided)})</h2>{_html_rows(one_sided, result, max_rows)}"
        "</body></html>\n"
    )
