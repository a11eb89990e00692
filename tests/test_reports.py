"""Tests for the compare renderers in :mod:`annotation_gateway.reports`.

Issue 15: computed numbers (score_diff, means) without binary-float artefacts in CSV and JSON;
rich tables that never break an id, name or label inside a word, whatever the width.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import re
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser

import orjson
import pytest
from rich.console import Console
from rich.table import Table

from annotation_gateway.compare import CompareRequest, CompareResult, compare
from annotation_gateway.model import Annotation, Annotator, AnnotatorKind, ProviderKind, Subject, SubjectKind
from annotation_gateway.reports import CSV_COLUMNS, FittedTable, to_csv, to_html, to_json, to_rich_table

HOSTILE = "<script>alert(1)</script>"
_ids = itertools.count()


def ann(
    source: str,
    subject: str,
    name: str,
    label: str | None = None,
    score: float | None = None,
    *,
    explanation: str | None = None,
    annotator: str | None = "alice",
    native_id: str | None = None,
) -> Annotation:
    return Annotation(
        id=native_id or f"{source}:{next(_ids)}",
        source=source,
        provider=ProviderKind.PHOENIX if source == "left-src" else ProviderKind.DATADOG,
        subject=Subject(kind=SubjectKind.SESSION, id=subject),
        name=name,
        label=label,
        score=score,
        explanation=explanation,
        annotator=Annotator(kind=AnnotatorKind.HUMAN, id=annotator),
        created_at=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        updated_at=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def result() -> CompareResult:
    left = [
        ann("left-src", "s1", "quality", "good", 0.9),
        ann("left-src", "s2", "quality", "good", 0.8),
        ann("left-src", "s2", "quality", "bad", 0.1, annotator="bob"),
        ann("left-src", "s3", "quality", HOSTILE, 0.5, explanation='He said "hi", then\nleft, 100%'),
        ann("left-src", "s4", "helpfulness", None, 0.2, native_id='left-src:"><img onerror=alert(1)>'),
        ann("left-src", "s5", "helpfulness", "yes"),
        ann("left-src", "s6", "tone", "[red]red[/red] [/] \x1b[2J", 1.0),
    ]
    right = [
        ann("right-src", "s1", "answer_quality", "good", 0.9),
        ann("right-src", "s2", "answer_quality", "bad", 0.15),
        ann("right-src", "s3", "answer_quality", "good, but", -0.5),
        ann("right-src", "s4", "helpfulness", None, 0.7),
        ann("right-src", "s7", "tone", "calm"),
        ann("right-src", "s6", "tone", "calm", 1.0),
    ]
    request = CompareRequest(
        subject_ids=["s1", "s2", "s3", "s4", "s5", "s6", "s7"],
        left="left-src",
        right="right-src",
        name_map={"quality": "answer_quality"},
    )
    return compare(left, right, request)


# --------------------------------------------------------------------------------------------- CSV


def test_csv_parses_back_and_matches_the_rows(result: CompareResult) -> None:
    text = to_csv(result)
    assert text.endswith("\r\n")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(records[0]) == CSV_COLUMNS
    assert CSV_COLUMNS == (
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
    body = [dict(zip(CSV_COLUMNS, record, strict=True)) for record in records[1:]]
    assert len(body) == len(result.rows)

    def opt(value: str) -> float | None:
        return None if value == "" else float(value)

    for line, row in zip(body, result.rows, strict=True):
        assert (line["subject_id"], line["right_subject_id"]) == (row.subject_id, row.right_subject_id)
        assert (line["name"], line["right_name"], line["status"]) == (
            row.name,
            row.right_name,
            row.status.value,
        )
        assert line["left_label"] == (row.left.label or "" if row.left else "")
        assert line["right_label"] == (row.right.label or "" if row.right else "")
        # repr() in the CSV: floats parse back to exactly the same value
        assert opt(line["left_score"]) == (row.left.score if row.left else None)
        assert opt(line["right_score"]) == (row.right.score if row.right else None)
        assert opt(line["score_diff"]) == row.score_diff
        assert int(line["left_count"]) == (row.left.count if row.left else 0)
        assert int(line["right_count"]) == (row.right.count if row.right else 0)


def test_csv_quotes_awkward_values(result: CompareResult) -> None:
    text = to_csv(result)
    # a comma inside a value is quoted, per RFC 4180
    assert '"good, but"' in text
    s2 = next(r for r in csv.DictReader(io.StringIO(text, newline="")) if r["subject_id"] == "s2")
    # s2 left group: good 0.8 / bad 0.1 tie at the same time -> "bad" (alphabetical); mean 0.45
    assert (s2["status"], s2["left_label"], s2["left_count"]) == ("score_differs", "bad", "2")
    assert float(s2["left_score"]) == pytest.approx(0.45)


# -------------------------------------------------------------------------------------------- JSON


def test_json_is_the_model(result: CompareResult) -> None:
    data = orjson.loads(to_json(result))
    assert data == result.model_dump(mode="json")
    assert data["rows"][0]["left"]["members"][0]["updated_at"] == "2026-11-20T09:00:00Z"
    assert "raw" not in data["rows"][0]["left"]["members"][0]
    assert CompareResult.model_validate_json(to_json(result)) == result


# -------------------------------------------------------------------------------------------- HTML

_CSP_META = '<meta http-equiv="Content-Security-Policy"'


class _TableRows(HTMLParser):
    """Collects the text of every <tr> of the first table (the per-name summary)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self._tables = 0
        self._in_row = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._tables += 1
        if tag == "tr" and self._tables == 1:
            self._in_row = True
            self.rows.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._in_row = False

    def handle_data(self, data: str) -> None:
        if self._in_row:
            self.rows[-1] += data + "|"


def test_html_is_self_contained(result: CompareResult) -> None:
    page = to_html(result, title="report")
    assert page.count(_CSP_META) == 1
    # The CSP meta itself is the only place "http" may appear ("http-equiv"): it forbids loading
    # anything, so it strengthens the no-external-reference guarantee rather than breaking it.
    lowered = page.replace(_CSP_META, "").lower()
    for forbidden in (
        "http",
        "src=",
        "href=",
        "<link",
        "<script",
        "url(",
        "@import",
        "<iframe",
        "<img",
        "//",
    ):
        assert forbidden not in lowered, forbidden
    assert "content=\"default-src 'none'; style-src 'unsafe-inline';" in html.unescape(page)


def test_html_escapes_everything(result: CompareResult) -> None:
    page = to_html(result, title=f"title {HOSTILE}")
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page
    assert "&quot;&gt;&lt;img onerror=alert(1)&gt;" in page  # the hostile id, in an attribute
    assert "He said &quot;hi&quot;, then\nleft, 100%" in page


def test_html_has_every_name_summary_and_the_differing_rows(result: CompareResult) -> None:
    page = to_html(result, title="report")
    parser = _TableRows()
    parser.feed(page)
    rows = parser.rows[1:]  # [0] is the header
    assert len(rows) == len(result.summary) + 1  # + the "all names" line
    for entry, text in zip(result.summary, rows, strict=False):
        cells = text.split("|")
        assert entry.name in cells
        assert entry.right_name in cells
        assert str(entry.n_rows) in cells
        assert str(entry.agree) in cells
        rate = "-" if entry.agreement_rate is None else f"{entry.agreement_rate:.1%}"
        assert rate in cells
        for subject in entry.disagreeing_subjects + entry.one_sided_subjects:
            assert subject in cells
    assert rows[-1].startswith("all names|")
    # Every non-agreeing row is shown side by side: its subject appears in a row header.
    for row in result.rows:
        if row.status.value != "agree":
            assert f"<code>{row.subject_id}</code>" in page
    differing = [r for r in result.rows if r.status.value in ("label_differs", "score_differs")]
    assert f"Differences ({len(differing)})" in page
    assert page.count('<article class="row">') == sum(r.status.value != "agree" for r in result.rows)


def test_html_max_rows_says_what_it_left_out(result: CompareResult) -> None:
    page = to_html(result, title="report", max_rows=1)
    assert re.search(r"\d+ more rows not shown here", page)


# -------------------------------------------------------------------------------------------- rich


def test_rich_tables_render_statuses_and_plain_labels(result: CompareResult) -> None:
    console = Console(record=True, width=220, color_system="truecolor")
    console.print(to_rich_table(result))
    text = console.export_text()
    for status in ("agree", "label differs", "score differs", "only left", "only right"):
        assert status in text
    for entry in result.summary:
        assert entry.name in text
    assert "all names" in text
    # labels are text, never markup, and control characters are shown, not sent to the terminal
    assert "[red]red[/red] [/] \\x1b[2J" in text
    assert "\x1b[2J" not in console.export_text(styles=True)


def test_rich_only_differences(result: CompareResult) -> None:
    console = Console(record=True, width=220)
    console.print(to_rich_table(result, only_differences=True, max_rows=2))
    text = console.export_text()
    n_diff = sum(r.status.value != "agree" for r in result.rows)
    assert f"rows (2 of {n_diff})" in text


# ------------------------------------------------------------------------------- numbers (issue 15)


def _scored(source: str, subject: str, *scores: float) -> list[Annotation]:
    return [ann(source, subject, "helpfulness", score=s, annotator=f"r{i}") for i, s in enumerate(scores)]


# The rule: the decimal difference of the stored scores' shortest reprs, rounded once to a float.
_S3_DIFF = float(Decimal("0.7") - Decimal("0.12345678901234568"))


@pytest.fixture(scope="module")
def scored() -> CompareResult:
    left = _scored("left-src", "s1", 0.95) + _scored("left-src", "s2", 0.1, 0.2)
    left += _scored("left-src", "s3", 0.12345678901234568)
    right = _scored("right-src", "s1", 1.0) + _scored("right-src", "s2", 0.15)
    right += _scored("right-src", "s3", 0.7)
    request = CompareRequest(
        subject_ids=["s1", "s2", "s3"], left="left-src", right="right-src", score_tolerance=0.05
    )
    return compare(left, right, request)


def test_csv_computed_numbers_are_what_the_vendors_stored_not_float_artefacts(scored: CompareResult) -> None:
    rows = {r["subject_id"]: r for r in csv.DictReader(io.StringIO(to_csv(scored), newline=""))}
    # 1.0 - 0.95 in binary floating point is 0.050000000000000044; the scores say 0.05.
    assert (rows["s1"]["left_score"], rows["s1"]["right_score"], rows["s1"]["score_diff"]) == (
        "0.95",
        "1.0",
        "0.05",
    )
    # The mean of 0.1 and 0.2 is 0.15 (binary: 0.15000000000000002), so it equals the right's 0.15.
    assert (rows["s2"]["left_score"], rows["s2"]["score_diff"]) == ("0.15", "0.0")
    # A stored score is written exactly, every digit kept; only the computed ones are clean.
    assert rows["s3"]["left_score"] == "0.12345678901234568"
    assert float(rows["s3"]["score_diff"]) == _S3_DIFF
    # ... and the status uses the same difference: 0.05 is within a tolerance of 0.05.
    assert [rows[s]["status"] for s in ("s1", "s2", "s3")] == ["agree", "agree", "score_differs"]


def test_json_computed_numbers_are_clean_too(scored: CompareResult) -> None:
    data = orjson.loads(to_json(scored))
    diffs = {row["subject_id"]: row["score_diff"] for row in data["rows"]}
    assert diffs == {"s1": 0.05, "s2": 0.0, "s3": _S3_DIFF}
    assert b"0.050000000000000044" not in to_json(scored)
    (summary,) = data["summary"]
    assert summary["mean_abs_score_diff"] == float((Decimal("0.05") + Decimal(repr(_S3_DIFF))) / 3)
    assert data["overall"]["mean_abs_score_diff"] == summary["mean_abs_score_diff"]


# --------------------------------------------------------------------------- table widths (issue 15)

_LONG = "trace:0123456789abcdef0123456789abcdef"


def _demo_like(*, with_trace: bool) -> CompareResult:
    """Ids, names and labels shaped like the demo's (support-07, helpfulness, unresolved...)."""
    left, right = [], []
    for n in range(1, 13):
        sid = f"support-{n:02d}"
        left.append(ann("phoenix-local", sid, "resolution", "resolved" if n % 3 else "escalated"))
        left.append(ann("phoenix-local", sid, "helpfulness", score=0.5 + n / 40))
        if n != 11:
            right.append(ann("datadog-sim", sid, "resolution", "unresolved" if n % 2 else "resolved"))
            right.append(ann("datadog-sim", sid, "helpfulness", score=0.75))
    if with_trace:
        left.append(ann("phoenix-local", _LONG, "correctness", "not quite right, see notes"))
    request = CompareRequest(
        subject_ids=[f"support-{n:02d}" for n in range(1, 13)] + [_LONG],
        left="phoenix-local",
        right="datadog-sim",
    )
    return compare(left, right, request)


@pytest.fixture(scope="module")
def demo_like() -> CompareResult:
    return _demo_like(with_trace=True)


def _tokens(text: str) -> set[str]:
    return set(re.split(r"[\s│┃|]+", text))


@pytest.mark.parametrize("width", [60, 80, 100, 120, 250])
def test_rich_tables_never_break_an_id_name_or_label(demo_like: CompareResult, width: int) -> None:
    # soft_wrap: like the CLI's console, which never crops a line at the terminal's edge.
    console = Console(record=True, width=width, soft_wrap=True)
    console.print(to_rich_table(demo_like))
    text = console.export_text()
    tokens = _tokens(text)
    for row in demo_like.rows:
        if row.status.value == "agree":
            continue
        assert row.subject_id in tokens, (row.subject_id, text)
        assert row.name in tokens, (row.name, text)
        for group in (row.left, row.right):
            if group is not None and group.label is not None:
                assert set(group.label.split()) <= tokens, (group.label, text)
    for source in ("phoenix-local", "datadog-sim"):
        assert source in tokens
    if width >= 100:  # the ids fit: the tables stay within the width, leaving columns out if needed
        assert max(len(line) for line in text.splitlines()) <= width, text
    if width >= 250:
        assert "not shown at this width" not in text
    else:
        assert "not shown at this width" in text


def test_session_tables_fit_80_columns_with_every_id_whole() -> None:
    result = _demo_like(with_trace=False)
    console = Console(record=True, width=80)  # crops at 80, like rich's default console
    console.print(to_rich_table(result, only_differences=True))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    tokens = _tokens(text)
    for row in result.rows:
        if row.status.value != "agree":
            assert {row.subject_id, row.name} <= tokens, (row, text)
    assert {"resolved", "unresolved", "escalated"} <= tokens
    assert "not shown at this width: phoenix-local score, datadog-sim score, members L/R" in text


def test_fitted_table_cuts_only_free_text_and_names_what_it_leaves_out() -> None:
    def table() -> FittedTable:
        t = Table(title="t")
        for header in ("id", "name", "note", "extra"):
            t.add_column(header)
        t.add_row(_LONG, "helpfulness", "a long free-text explanation of the verdict", "x" * 12)
        t.add_row("support-07", "resolution", "short", "y")
        return FittedTable(t, free=[2], optional=[[3]])

    wide = Console(record=True, width=200)
    wide.print(table())
    assert "a long free-text explanation of the verdict" in wide.export_text()
    # 80 columns: "extra" is left out, the note is cut with an ellipsis, the ids stay whole.
    narrow = Console(record=True, width=80)
    narrow.print(table())
    text = narrow.export_text()
    assert {_LONG, "helpfulness", "support-07", "resolution", "note"} <= _tokens(text)
    assert "…" in text
    assert "x" * 12 not in text
    assert "not shown at this width: extra" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    # Too narrow even for the ids: drawn wider than asked, never breaking one.
    tiny = Console(record=True, width=30, soft_wrap=True)
    tiny.print(table())
    assert _LONG in _tokens(tiny.export_text())


def test_fitted_table_one_line_leaves_columns_out_rather_than_wrap_rows() -> None:
    def table(*, one_line: bool) -> FittedTable:
        t = Table()
        for header in ("updated_at", "subject", "name", "annotator"):
            t.add_column(header)
        t.add_row("11-23 07:15:02", "support-07", "resolution", "HUMAN 607a8037…")
        return FittedTable(t, optional=[[3]], one_line=one_line)

    wrapped, single = Console(record=True, width=55), Console(record=True, width=55)
    wrapped.print(table(one_line=False))  # the words fit: every column, the row on two lines
    single.print(table(one_line=True))  # the annotator left out, the row on one line
    assert "607a8037…" in wrapped.export_text()
    assert "11-23 07:15:02" not in wrapped.export_text()
    text = single.export_text()
    assert "11-23 07:15:02" in text
    assert "607a8037…" not in text
    assert "not shown at this width: annotator" in text
