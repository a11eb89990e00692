"""Unit tests of the pictures in :mod:`annotation_gateway.charts` (issue 12, SPEC §8).

The pages are parsed (``html.parser`` for the page, ``xml.etree`` for each SVG, which must be
well-formed XML) and their structure checked: one ``<g class="series">`` per series, the heat
map's cells, escaping of every vendor value, no script and no URL, the empty answers.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from typing import Any

import pytest

from annotation_gateway.charts import MAX_LABELS, MAX_SERIES, NONE, agreement_html, metrics_html

HOSTILE = "<script>alert(1)</script>"
HOSTILE_ATTR = "\"><img src=x onerror=alert(1)>'"
HOSTILE_URL = "javascript:fetch('https://evil.example/x')"
SVG = "{http://www.w3.org/2000/svg}"
_SCORE_FIELDS = ("score_stdev", "score_min", "score_max", "score_p50", "score_p90")


# ------------------------------------------------------------------------------------------ helpers


def row(
    bucket: str | None,
    count: int,
    *,
    scores: Sequence[float] = (),
    labels: Mapping[str, int] | None = None,
    **group: object,
) -> dict[str, Any]:
    """One SPEC §8 metrics row (the score fields from ``scores``, as the gateway computes them)."""
    values = sorted(scores)
    out: dict[str, Any] = {"bucket": bucket, **group, "count": count, "score_count": len(values)}
    if values:
        mean = sum(values) / len(values)
        out["score_mean"] = mean
        out["score_stdev"] = (
            (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
        )
        out["score_min"], out["score_max"] = values[0], values[-1]
        out["score_p50"] = out["score_p90"] = values[len(values) // 2]
    else:
        out["score_mean"] = None
        out.update(dict.fromkeys(_SCORE_FIELDS))
    out["label_counts"] = dict(labels or {})
    return out


def day(n: int) -> str:
    return f"2026-12-{n:02d}T00:00:00Z"


def generated_rows(
    names: Sequence[str], sources: Sequence[str], days: Iterable[int], *, scored: bool = True
) -> list[dict[str, Any]]:
    """Rows grouped by name x source per day, ordered as the API orders them."""
    rows = []
    counter = itertools.count(1)
    for d in days:
        for name in sorted(names):
            for source in sorted(sources):
                n = next(counter) % 7 + 1
                scores = [((n * i) % 10) / 10 for i in range(n)] if scored else []
                labels = {"good": n // 2, "bad": n - n // 2}
                rows.append(row(day(d), n, scores=scores, labels=labels, name=name, source=source))
    return rows


@dataclass
class Chart:
    kind: str
    attrs: dict[str, str]
    series: list[dict[str, str]] = field(default_factory=list)
    cells: list[dict[str, str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


class PageParser(HTMLParser):
    """Collects the charts (and their series and cells), the tags and the text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charts: list[Chart] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self._chart: Chart | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "svg" and "chart" in values.get("class", "").split():
            self._chart = Chart(values.get("data-chart", ""), values)
            self.charts.append(self._chart)
        elif self._chart is not None and tag == "g" and values.get("class") == "series":
            self._chart.series.append(values)
        elif self._chart is not None and tag == "rect" and values.get("class") == "cell":
            self._chart.cells.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._chart is not None:
            self._chart.texts.append(data)

    def chart(self, kind: str) -> Chart:
        found = [c for c in self.charts if c.kind == kind]
        assert len(found) == 1, f"{len(found)} charts {kind!r}"
        return found[0]

    def kinds(self) -> list[str]:
        return [c.kind for c in self.charts]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def parse(page: bytes) -> PageParser:
    text = page.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>\n")
    assert text.rstrip().endswith("</html>")
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


def svgs(page: bytes) -> list[ET.Element]:
    """Every chart as XML: the SVG markup must be well-formed (balanced, quoted, escaped)."""
    text = page.decode("utf-8")
    return [
        ET.fromstring(m.group(0))  # noqa: S314 - our own output, parsed to check it is well-formed
        for m in re.finditer(r'<svg class="chart".*?</svg>', text, re.S)
    ]


_LOADING_TAGS = {"script", "img", "link", "iframe", "object", "embed", "image", "use", "a", "foreignobject"}
_LOADING_ATTRS = {"src", "href", "xlink:href", "action", "formaction", "srcset", "background", "poster"}


class _Attrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []
        self.style: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.extend((tag, k, v or "") for k, v in attrs)
        self.found.append((tag, "", ""))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style.append(data)


def assert_self_contained(page: bytes, *, urls_in_values: bool = False) -> None:
    """No script, nothing that loads anything; the only URL is the SVG namespace (unless the
    vendor values themselves hold URLs: then they may appear as text, never in an attribute that
    loads)."""
    text = page.decode("utf-8")
    attrs = _Attrs()
    attrs.feed(text)
    attrs.close()
    for tag, name, value in attrs.found:
        assert tag not in _LOADING_TAGS, tag
        assert name not in _LOADING_ATTRS, (tag, name)
        assert not name.startswith("on"), (tag, name)
        assert "url(" not in value.lower(), (tag, name)
        if name == "xmlns":
            assert value == "http://www.w3.org/2000/svg"
        elif not name.startswith(("data-", "aria-")) and name not in ("content", "title"):
            assert not re.match(r"\s*(https?|javascript|data):", value, re.I), (tag, name, value)
    style = "".join(attrs.style).lower()
    for forbidden in ("url(", "@import", "http", "@font-face"):
        assert forbidden not in style
    assert "<script" not in text.lower()
    if not urls_in_values:
        assert set(re.findall(r"(?:https?|javascript):[^\s\"'<>]*", text)) <= {"http://www.w3.org/2000/svg"}
    assert "default-src &#x27;none&#x27;" in text  # the Content-Security-Policy
    for svg in svgs(page):
        for attr in ("width", "height", "viewBox"):
            assert svg.get(attr), attr
        assert svg.get("viewBox") == f"0 0 {svg.get('width')} {svg.get('height')}"


def path_points(series: ET.Element) -> tuple[int, int]:
    """(points, sub-paths) of a line series' path."""
    path = series.find(f"{SVG}path")
    assert path is not None
    d = path.get("d", "")
    return len(re.findall(r"[ML]", d)), d.count("M")


def series_of(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if g.get("class") == "series"]


# ---------------------------------------------------------------------------------------- metrics


def test_metrics_line_charts_one_series_per_group() -> None:
    rows = generated_rows(
        ["resolution", "helpfulness", "tone"], ["phoenix-local", "datadog-sim"], range(1, 8)
    )
    page = metrics_html(rows, group_by=["name", "source"], interval="day", title="Metrics")
    parsed = parse(page)
    assert_self_contained(page)
    assert parsed.kinds() == ["counts", "score_mean", "labels"]
    groups = {(r["name"], r["source"]) for r in rows}
    for kind in ("counts", "score_mean"):
        chart = parsed.chart(kind)
        assert len(chart.series) == len(groups) == 6
        assert {s["data-series"] for s in chart.series} == {f"name={n} · source={s}" for n, s in groups}
    assert {s["data-series"] for s in parsed.chart("labels").series} == {"good", "bad"}
    # The x axis names the buckets' dates.
    counts = parsed.chart("counts")
    assert "2026-12-01" in counts.texts
    assert all(re.fullmatch(r"2026-12-\d\d", t) for t in counts.texts if t.startswith("2026"))
    # Every row is in the table.
    assert parsed.tags.count("tr") == len(rows) + 1
    for svg in svgs(page):
        for series in series_of(svg):
            if svg.get("data-chart") != "labels":
                assert path_points(series) == (7, 1)  # seven days, one unbroken line


def test_metrics_counts_fill_missing_buckets_with_zero_and_means_leave_gaps() -> None:
    rows = [
        row(day(1), 3, scores=[0.5], name="a"),
        row(day(2), 2, scores=[], name="a"),  # no score on day 2: a gap, not a 0
        row(day(2), 4, scores=[1.0], name="b"),
        # day 3: no annotation at all; day 4: only "a"
        row(day(4), 5, scores=[0.25], name="a"),
    ]
    page = metrics_html(rows, group_by=["name"], interval="day", title="gaps")
    counts, means, *_ = svgs(page)
    a_count, b_count = series_of(counts)
    assert a_count.get("data-series") == "a"
    assert path_points(a_count) == (4, 1)  # days 1-4, day 3 drawn as 0
    assert path_points(b_count) == (4, 1)  # b has a row on day 2 only; 0 elsewhere
    a_mean, b_mean = series_of(means)
    assert path_points(a_mean) == (2, 2)  # day 1, then a new line from day 4
    assert path_points(b_mean) == (1, 1)
    assert len(a_mean.findall(f"{SVG}circle")) == 2  # a dot on each mean, so a lone one shows


@pytest.mark.parametrize(
    ("interval", "buckets", "ticks", "slots"),
    [
        ("hour", ["2026-12-31T22:00:00Z", "2027-01-01T01:00:00Z"], "2026-12-31 22:00", 4),
        ("week", ["2026-11-30T00:00:00Z", "2026-12-28T00:00:00Z"], "2026-11-30", 5),
        ("month", ["2026-11-01T00:00:00Z", "2027-02-01T00:00:00Z"], "2026-11", 4),
    ],
)
def test_metrics_buckets_filled_per_interval(
    interval: str, buckets: list[str], ticks: str, slots: int
) -> None:
    rows = [row(b, 1, scores=[0.5], labels={"x": 1}, name="n") for b in buckets]
    page = metrics_html(rows, group_by=["name"], interval=interval, title="t")
    counts = svgs(page)[0]
    (series,) = series_of(counts)
    assert path_points(series) == (slots, 1)
    assert ticks in [t.text for t in counts.iter(f"{SVG}text")]


def test_metrics_unparseable_buckets_are_spaced_evenly() -> None:
    rows = [row("week 2", 1, name="n"), row("week 1", 2, name="n")]
    page = metrics_html(rows, group_by=["name"], interval="week", title="t")
    (series,) = series_of(svgs(page)[0])
    assert path_points(series) == (2, 1)
    assert_self_contained(page)


def test_metrics_without_interval_draws_bars() -> None:
    rows = [
        row(None, 12, scores=[0.5, 0.7], labels={"resolved": 7, "escalated": 5}, name="resolution"),
        row(None, 3, scores=[], labels={}, name="note"),
        row(None, 4, scores=[-2.0, 6.0], labels={"resolved": 4}, name="quality"),
    ]
    page = metrics_html(rows, group_by=["name"], interval=None, title="bars")
    parsed = parse(page)
    assert_self_contained(page)
    assert parsed.kinds() == ["counts", "score_mean", "labels"]
    counts, means, labels = svgs(page)
    assert [s.get("data-series") for s in series_of(counts)] == ["note", "quality", "resolution"]
    assert all(len(s.findall(f"{SVG}rect")) == 1 for s in series_of(counts))
    assert [s.get("data-series") for s in series_of(means)] == ["quality", "resolution"]  # "note": no score
    # The label chart: one stacked bar per labelled group, one series per label.
    assert [s.get("data-series") for s in series_of(labels)] == ["escalated", "resolved"]
    escalated, resolved = series_of(labels)
    assert len(escalated.findall(f"{SVG}rect")) == 1
    assert len(resolved.findall(f"{SVG}rect")) == 2
    assert "bucket (UTC)" not in parsed.all_text  # no bucket column without an interval


def test_metrics_no_scores_means_no_score_chart() -> None:
    rows = generated_rows(["a", "b"], ["s"], range(1, 4), scored=False)
    parsed = parse(metrics_html(rows, group_by=["name", "source"], interval="day", title="t"))
    assert parsed.kinds() == ["counts", "labels"]
    assert len(parsed.chart("counts").series) == 2
    assert NONE in parsed.all_text  # the score columns of the table


def test_metrics_no_labels_says_so() -> None:
    rows = [row(day(1), 2, scores=[0.1], name="a")]
    parsed = parse(metrics_html(rows, group_by=["name"], interval="day", title="t"))
    assert parsed.kinds() == ["counts", "score_mean"]
    assert "no labels in these annotations" in parsed.all_text


def test_metrics_without_group_by_is_one_series() -> None:
    rows = [row(day(1), 2, scores=[0.1], labels={"a": 2}), row(day(2), 3, scores=[0.3], labels={"b": 1})]
    parsed = parse(metrics_html(rows, group_by=[], interval="day", title="t"))
    assert [s["data-series"] for s in parsed.chart("counts").series] == ["all annotations"]
    assert [s["data-series"] for s in parsed.chart("score_mean").series] == ["all annotations"]


def test_metrics_null_group_values_show_a_dash() -> None:
    rows = [
        row(day(1), 2, name="a", queue=None),
        row(day(1), 1, name="a", queue="triage"),
    ]
    parsed = parse(metrics_html(rows, group_by=["name", "queue"], interval="day", title="t"))
    assert [s["data-series"] for s in parsed.chart("counts").series] == [
        f"name=a · queue={NONE}",
        "name=a · queue=triage",
    ]


def test_metrics_group_by_label() -> None:
    rows = [
        row(day(1), 2, labels={}, name="a", label=None),
        row(day(1), 3, labels={"bad": 3}, name="a", label="bad"),
        row(day(1), 4, labels={"good": 4}, name="a", label="good"),
    ]
    parsed = parse(metrics_html(rows, group_by=["name", "label"], interval="day", title="t"))
    assert len(parsed.chart("counts").series) == 3
    assert [s["data-series"] for s in parsed.chart("labels").series] == ["bad", "good"]


def test_metrics_series_are_capped_and_the_page_says_so() -> None:
    rows = [row(day(1), i + 1, scores=[0.5], name=f"name-{i:02d}") for i in range(MAX_SERIES + 5)]
    parsed = parse(metrics_html(rows, group_by=["name"], interval="day", title="t"))
    chart = parsed.chart("counts")
    assert len(chart.series) == MAX_SERIES
    # The groups with the most annotations are drawn; the table still has every row.
    assert {s["data-series"] for s in chart.series} == {f"name-{i:02d}" for i in range(5, MAX_SERIES + 5)}
    assert "5 more groups not drawn" in parsed.all_text
    assert parsed.tags.count("tr") == MAX_SERIES + 5 + 1


def test_metrics_table_can_be_bounded() -> None:
    rows = generated_rows(["a", "b"], ["x"], range(1, 11))
    page = metrics_html(rows, group_by=["name", "source"], interval="day", title="t", max_rows=5)
    parsed = parse(page)
    assert parsed.tags.count("tr") == 5 + 1
    assert "15 more rows not shown here" in parsed.all_text
    # The charts still draw every row: two series of ten days each.
    counts = svgs(page)[0]
    assert [path_points(s) for s in series_of(counts)] == [(10, 1), (10, 1)]


def test_metrics_labels_beyond_the_cap_are_one_series() -> None:
    labels = {f"label-{i:02d}": i + 1 for i in range(MAX_LABELS + 3)}
    page = metrics_html(
        [row(None, 200, labels=labels, name="a")], group_by=["name"], interval=None, title="t"
    )
    series = parse(page).chart("labels").series
    assert len(series) == MAX_LABELS + 1
    assert [s for s in series if s.get("data-other") == "true"] == [
        {"class": "series", "data-series": "3 other labels", "data-other": "true"}
    ]


def test_metrics_escapes_every_vendor_value() -> None:
    rows = [
        row(
            day(1),
            3,
            scores=[0.5],
            labels={HOSTILE: 2, HOSTILE_ATTR: 1},
            name=HOSTILE,
            source=HOSTILE_ATTR,
            queue=HOSTILE_URL,
        ),
        row(day(2), 1, scores=[0.5], labels={"ok": 1}, name="plain", source="s", queue=None),
    ]
    page = metrics_html(rows, group_by=["name", "source", "queue"], interval="day", title=HOSTILE)
    text = page.decode()
    assert_self_contained(page, urls_in_values=True)
    assert escape(HOSTILE) in text
    parsed = parse(page)
    assert parsed.tags.count("script") == 0
    assert parsed.tags.count("img") == 0
    # The values read back exactly, as text and as attribute values.
    names = {s["data-series"] for s in parsed.chart("counts").series}
    assert f"name={HOSTILE} · source={HOSTILE_ATTR} · queue={HOSTILE_URL}" in names
    assert {s["data-series"] for s in parsed.chart("labels").series} == {HOSTILE, HOSTILE_ATTR, "ok"}
    assert f"{HOSTILE} Metrics".split()[0] in parsed.all_text
    svgs(page)  # still well-formed


def test_metrics_ignores_non_numbers() -> None:
    rows = [row(day(1), 2, name="a")]
    rows[0]["score_mean"] = float("nan")
    rows[0]["score_count"] = True
    rows[0]["label_counts"] = {"x": "7"}
    parsed = parse(metrics_html(rows, group_by=["name"], interval="day", title="t"))
    assert parsed.kinds() == ["counts", "labels"] or parsed.kinds() == ["counts"]
    assert "nan" not in parsed.all_text.lower()


def test_metrics_empty() -> None:
    for interval in (None, "day"):
        page = metrics_html([], group_by=["name"], interval=interval, title="Nothing")
        parsed = parse(page)
        assert_self_contained(page)
        assert "no annotations match" in parsed.all_text
        assert parsed.charts == []


def test_metrics_partial_names_the_failing_source() -> None:
    sources = [
        {"source": "phoenix-local", "status": "ok", "error": None},
        {"source": HOSTILE, "status": "error", "error": {"title": "upstream down", "detail": HOSTILE_ATTR}},
    ]
    page = metrics_html(
        [row(day(1), 1, name="a")],
        group_by=["name"],
        interval="day",
        title="t",
        partial=True,
        sources=sources,
    )
    parsed = parse(page)
    assert_self_contained(page)
    assert "Partial answer" in parsed.all_text
    assert f"{HOSTILE} error: upstream down - {HOSTILE_ATTR}" in parsed.all_text
    assert "phoenix-local" not in parsed.all_text


def test_metrics_is_deterministic() -> None:
    rows = generated_rows(["a", "b"], ["x", "y"], range(1, 5))
    first = metrics_html(rows, group_by=["name", "source"], interval="day", title="t")
    assert first == metrics_html(list(rows), group_by=["name", "source"], interval="day", title="t")


# -------------------------------------------------------------------------------------- agreement


def agreement(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": "resolution",
        "raters": ["HUMAN", "LLM"],
        "subjects": 40,
        "percent_agreement": 0.85,
        "kappa": 0.7,
        "kappa_kind": "cohen",
        "alpha": 0.69,
        "alpha_level": "nominal",
        "confusion": {"raters": ["HUMAN", "LLM"], "labels": ["bad", "good"], "matrix": [[10, 2], [1, 27]]},
        "disagreements": ["sess-3", "sess-9"],
    }
    result.update(overrides)
    return result


def answer(*results: Mapping[str, Any], partial: bool = False) -> dict[str, Any]:
    return {"by": "annotator_kind", "results": list(results), "partial": partial, "sources": []}


def test_agreement_page() -> None:
    three = {
        "raters": ["HUMAN", "LLM"],
        "labels": ["a", "b", "c"],
        "matrix": [[5, 1, 0], [0, 4, 2], [1, 0, 9]],
    }
    page = agreement_html(
        answer(agreement(), agreement(name="tone", confusion=three, disagreements=["t1"])), title="Agreement"
    )
    parsed = parse(page)
    assert_self_contained(page)
    assert parsed.kinds() == ["confusion", "confusion"]
    first, second = parsed.charts
    assert len(first.cells) == 4
    assert len(second.cells) == 9
    assert [c["data-count"] for c in first.cells] == ["10", "2", "1", "27"]
    assert [c["data-count"] for c in second.cells] == ["5", "1", "0", "0", "4", "2", "1", "0", "9"]
    # The counts are written in the cells, the labels on both axes, the raters named.
    for count in ("10", "2", "1", "27"):
        assert count in first.texts
    assert first.texts.count("bad") >= 2  # down the side and across the top
    assert first.texts.count("good") >= 2
    assert any(t.startswith("LLM") for t in first.texts)
    assert any(t.startswith("HUMAN") for t in first.texts)
    # Colour intensity follows the count: the largest cell is the darkest, the empty one the lightest.
    fills = {c["data-count"]: c["fill"] for c in second.cells}
    assert fills["9"] == "#0969da"
    assert fills["0"] == "#f6f8fa"
    text = parsed.all_text
    for expected in ("85.0%", "0.700", "(cohen)", "0.690", "(nominal)", "40", "sess-3", "sess-9", "t1"):
        assert expected in text
    svgs(page)


def test_agreement_missing_values_show_a_dash() -> None:
    result = agreement(
        name="quality",
        raters=["HUMAN", "LLM", "CODE"],
        percent_agreement=None,
        kappa=None,
        kappa_kind="fleiss",
        alpha=None,
        alpha_level="interval",
        confusion=None,
        disagreements=[],
    )
    parsed = parse(agreement_html(answer(result), title="t"))
    assert parsed.charts == []
    cells = re.findall(r"<td[^>]*>(.*?)</td>", agreement_html(answer(result), title="t").decode())
    assert sum(NONE in c for c in cells) == 3  # percent agreement, kappa, alpha
    assert "no confusion matrix" in parsed.all_text
    assert "(fleiss)" in parsed.all_text


def test_agreement_escapes_every_vendor_value() -> None:
    result = agreement(
        name=HOSTILE,
        raters=[HOSTILE_ATTR, HOSTILE_URL],
        confusion={
            "raters": [HOSTILE_ATTR, HOSTILE_URL],
            "labels": [HOSTILE, "ok"],
            "matrix": [[1, 0], [0, 1]],
        },
        disagreements=[HOSTILE, HOSTILE_ATTR],
    )
    page = agreement_html(
        {
            "by": HOSTILE,
            "results": [result],
            "partial": True,
            "sources": [{"source": HOSTILE, "status": "error", "error": HOSTILE_ATTR}],
        },
        title=HOSTILE,
    )
    assert_self_contained(page, urls_in_values=True)
    parsed = parse(page)
    assert parsed.tags.count("script") == 0
    assert parsed.tags.count("img") == 0
    assert len(parsed.chart("confusion").cells) == 4
    assert HOSTILE in parsed.chart("confusion").texts
    assert parsed.all_text.count(HOSTILE) >= 4
    svgs(page)


def test_agreement_empty() -> None:
    page = agreement_html(answer(), title="t")
    parsed = parse(page)
    assert_self_contained(page)
    assert "no annotations match" in parsed.all_text
    assert parsed.charts == []


def test_agreement_malformed_matrix_is_not_drawn() -> None:
    bad = {"raters": ["a", "b"], "labels": ["x", "y"], "matrix": [[1, 2]]}
    parsed = parse(agreement_html(answer(agreement(confusion=bad)), title="t"))
    assert parsed.charts == []
    assert "no confusion matrix to draw" in parsed.all_text
