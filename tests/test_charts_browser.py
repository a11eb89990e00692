"""The pictures of :mod:`annotation_gateway.charts`, opened in a real headless Chromium (issue 12).

Debian's ``chromium`` and ``chromium-driver`` (``make chromium`` installs them; same Debian
source package, so the driver always matches the browser) are driven with selenium. The pages
are written to a temporary directory and loaded from ``file://`` - nothing touches the network,
and the test asserts the browser fetched no resource at all. If Chromium cannot start, the tests
fail (never skip).

What is checked, in the browser's own layout: every ``svg.chart`` is there with a non-zero box,
each chart has the expected number of ``g.series`` (each with a non-zero box), the heat map has
one ``rect.cell`` per matrix cell coloured by its count, no script exists or ran; and a screenshot
of the window and of each chart decodes as a PNG of the right size that is not one flat colour
and shows the series' colours.
"""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from annotation_gateway.charts import agreement_html, metrics_html
from tests.test_charts import HOSTILE, agreement, answer, day, row

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1200, 900)


# ----------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: `make chromium` installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the suite runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    # An explicit driver path: selenium never runs its driver manager (which would download).
    service = Service(executable_path=CHROMEDRIVER, log_output=subprocess.DEVNULL)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start: {exc.msg or exc}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: WebDriver, path: Path, page: bytes) -> None:
    path.write_bytes(page)
    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"


_LAYOUT = """
const box = (el) => { const r = el.getBoundingClientRect(); return {w: r.width, h: r.height}; };
return {
  scripts: document.scripts.length,
  resources: performance.getEntriesByType('resource').map((e) => e.name),
  title: document.title,
  view: {w: window.innerWidth, h: window.innerHeight, dpr: window.devicePixelRatio},
  charts: Array.from(document.querySelectorAll('svg.chart')).map((svg) => ({
    kind: svg.dataset.chart,
    box: box(svg),
    series: Array.from(svg.querySelectorAll('g.series')).map((g) => {
      const b = g.getBBox();
      return {name: g.dataset.series, w: b.width, h: b.height, marks: g.querySelectorAll('path,rect').length};
    }),
    cells: Array.from(svg.querySelectorAll('rect.cell')).map((c) => ({
      count: Number(c.dataset.count), box: box(c), fill: getComputedStyle(c).fill,
    })),
  })),
};
"""


def layout(browser: WebDriver) -> dict[str, Any]:
    result = browser.execute_script(_LAYOUT)
    assert isinstance(result, dict)
    assert result["scripts"] == 0
    assert result["resources"] == []  # nothing was fetched: no asset, font or URL
    return result


# --------------------------------------------------------------------------------------------- PNG


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """A PNG (8-bit RGB or RGBA, not interlaced, as Chromium writes them): width, height and
    its pixels as RGB, row by row. Checks the signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, header, idat = 8, b"", bytearray()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), (depth, interlace)
    assert colour in (2, 6), colour
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    assert len(raw) == height * (stride + 1)
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + predictor) & 0xFF
        else:
            assert kind == 0, f"filter {kind}"
        pixels.extend(zip(line[0::channels], line[1::channels], line[2::channels], strict=True))
        previous = line
    return width, height, pixels


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def shows(pixels: list[tuple[int, int, int]], colour: str, *, at_least: int = 4) -> bool:
    """Whether at least ``at_least`` pixels have this colour (within anti-aliasing of 6 a channel)."""
    r, g, b = hex_rgb(colour)
    near = sum(1 for p in pixels if abs(p[0] - r) <= 6 and abs(p[1] - g) <= 6 and abs(p[2] - b) <= 6)
    return near >= at_least


def assert_picture(png: bytes, width: float, height: float) -> list[tuple[int, int, int]]:
    got_w, got_h, pixels = decode_png(png)
    assert abs(got_w - width) <= 1, (got_w, width)
    assert abs(got_h - height) <= 1, (got_h, height)
    colours = set(pixels)
    assert len(colours) >= 16, f"{len(colours)} colours: a flat picture"
    return pixels


def screenshot_window(browser: WebDriver, view: dict[str, Any]) -> None:
    png = browser.get_screenshot_as_png()
    assert_picture(png, view["w"] * view["dpr"], view["h"] * view["dpr"])


def chart_picture(browser: WebDriver, kind: str) -> list[tuple[int, int, int]]:
    element = browser.find_element(By.CSS_SELECTOR, f'svg.chart[data-chart="{kind}"]')
    size = element.size
    return assert_picture(element.screenshot_as_png, size["width"], size["height"])


# ----------------------------------------------------------------------------------------- metrics


def metrics_rows() -> list[dict[str, Any]]:
    rows = []
    for d in range(1, 11):
        for name in ("resolution", HOSTILE):
            for source in ("datadog-sim", "phoenix-local"):
                if d == 4 and source == "datadog-sim":
                    continue  # no annotation that day: drawn as 0
                n = (d * 3 + len(name) + len(source)) % 9 + 1
                scored = name == "resolution" or source == "phoenix-local"  # one group has no score
                scores = [((d + i) % 10) / 10 for i in range(n)] if scored else []
                labels = {"resolved": n // 2, "escalated": n - n // 2} if name == "resolution" else {"x": n}
                rows.append(row(day(d), n, scores=scores, labels=labels, name=name, source=source))
    return rows


def test_metrics_page_renders_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    rows = metrics_rows()
    page = metrics_html(rows, group_by=["name", "source"], interval="day", title=HOSTILE)
    open_page(browser, tmp_path / "metrics.html", page)
    seen = layout(browser)
    assert seen["title"] == HOSTILE  # shown as text; it never ran
    charts = {c["kind"]: c for c in seen["charts"]}
    assert [c["kind"] for c in seen["charts"]] == ["counts", "score_mean", "labels"]
    for chart in seen["charts"]:
        assert chart["box"]["w"] > 100, chart
        assert chart["box"]["h"] > 100, chart
        for series in chart["series"]:
            assert series["w"] > 0, (chart["kind"], series)
            assert series["marks"] >= 1, (chart["kind"], series)
    assert len(charts["counts"]["series"]) == 4
    assert len(charts["score_mean"]["series"]) == 3  # HOSTILE on datadog-sim has no score
    assert sorted(s["name"] for s in charts["labels"]["series"]) == ["escalated", "resolved", "x"]
    # Lines run across the plot: the count lines span the ten days.
    widths = {round(s["w"]) for s in charts["counts"]["series"]}
    assert min(widths) > 0.8 * charts["counts"]["box"]["w"]

    screenshot_window(browser, seen["view"])
    counts = chart_picture(browser, "counts")
    for colour in ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2"):  # the four groups' colours
        assert shows(counts, colour), colour
    labels = chart_picture(browser, "labels")
    for colour in ("#4e79a7", "#f28e2b", "#e15759"):  # the three labels' colours
        assert shows(labels, colour, at_least=50), colour


def test_metrics_bars_render_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    rows = [
        row(None, 12, scores=[0.5, 0.7], labels={"resolved": 7, "escalated": 5}, name="resolution"),
        row(None, 3, labels={"note": 3}, name="note"),
    ]
    open_page(
        browser, tmp_path / "bars.html", metrics_html(rows, group_by=["name"], interval=None, title="t")
    )
    seen = layout(browser)
    charts = {c["kind"]: c for c in seen["charts"]}
    assert list(charts) == ["counts", "score_mean", "labels"]
    assert [s["name"] for s in charts["counts"]["series"]] == ["note", "resolution"]
    assert [s["name"] for s in charts["score_mean"]["series"]] == ["resolution"]
    assert all(s["w"] > 0 and s["h"] > 0 for c in charts.values() for s in c["series"])
    screenshot_window(browser, seen["view"])
    assert shows(chart_picture(browser, "counts"), "#f28e2b", at_least=200)  # the "resolution" bar


def test_empty_metrics_page_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    open_page(browser, tmp_path / "empty.html", metrics_html([], group_by=[], interval="day", title="t"))
    seen = layout(browser)
    assert seen["charts"] == []
    assert "no annotations match" in browser.find_element(By.TAG_NAME, "body").text


# --------------------------------------------------------------------------------------- agreement


def test_agreement_heat_map_renders_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    three = {
        "raters": ["HUMAN", "LLM"],
        "labels": ["bad", "good", HOSTILE],
        "matrix": [[5, 1, 0], [0, 4, 2], [1, 0, 9]],
    }
    page = agreement_html(
        answer(agreement(), agreement(name="tone", confusion=three), agreement(name="none", confusion=None)),
        title="Agreement",
    )
    open_page(browser, tmp_path / "agreement.html", page)
    seen = layout(browser)
    assert [c["kind"] for c in seen["charts"]] == ["confusion", "confusion"]
    two_by_two, three_by_three = seen["charts"]
    assert len(two_by_two["cells"]) == 4
    assert len(three_by_three["cells"]) == 9
    for chart in seen["charts"]:
        assert chart["box"]["w"] > 100
        assert chart["box"]["h"] > 100
        sizes = {(round(c["box"]["w"]), round(c["box"]["h"])) for c in chart["cells"]}
        assert len(sizes) == 1
        assert min(next(iter(sizes))) > 10
    # Intensity by count: the more, the darker (the blue channel stays high, red falls).
    by_count = sorted(three_by_three["cells"], key=lambda c: c["count"])
    reds = [int(c["fill"].removeprefix("rgb(").split(",")[0]) for c in by_count]
    assert reds == sorted(reds, reverse=True)
    assert reds[0] > reds[-1]
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "sess-3" in body
    assert "85.0%" in body

    screenshot_window(browser, seen["view"])
    heat = chart_picture(browser, "confusion")  # the first heat map
    assert shows(heat, "#0969da", at_least=500)  # the largest cell (27), fully saturated
    assert shows(heat, "#1f2328", at_least=20)  # the diagonal's outline and the counts
