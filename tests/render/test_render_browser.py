"""The report in real headless Chromium: hostile data runs no script, no console errors, no requests.

Needs Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it), driven through
Playwright without ``playwright install``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.render.report import bundle_from_input

from .conftest import HOSTILE, hostile_input

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="headless Chromium (/usr/bin/chromium) is not installed"
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield instance
        instance.close()


class Watched:
    """A page with every dialog, console message, page error and request recorded."""

    def __init__(self, browser: Any, viewport: dict[str, int] | None = None) -> None:
        self.page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
        self.dialogs: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.requests: list[str] = []

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)
        self.page.on("console", lambda message: self.console.append((message.type, message.text)))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")

    def close(self) -> None:
        self.page.close()


def test_hostile_report_runs_no_injected_script(browser: Any, tmp_path: Path) -> None:
    report = tmp_path / "hostile.html"
    report.write_text(bundle_from_input(hostile_input(tmp_path)).html, encoding="utf-8")
    watched = Watched(browser)
    try:
        watched.open(report)
        page = watched.page
        page.wait_for_timeout(300)  # give any injected onerror/onload handler time to fire
        assert page.evaluate("window.__pwned === undefined")
        assert watched.dialogs == []
        assert watched.errors == []
        assert [entry for entry in watched.console if entry[0] in ("error", "warning")] == []
        assert watched.requests == [report.as_uri()]
        # the hostile strings are on the page as text
        body_text = page.inner_text("main")
        for value in (HOSTILE[0], HOSTILE[1], HOSTILE[3]):
            assert value in body_text
        # our own script did run (it adds filter boxes and sort buttons): the CSP hash matches it
        assert page.locator("section#new .filter input[type=search]").count() == 1
        assert page.locator("th button.sort").count() > 0
        # the filter works on hostile text without executing it
        rows = page.locator("section#new tbody tr")
        total = rows.count()
        page.fill("section#new .filter input", "onerror")
        visible = page.locator("section#new tbody tr:not([hidden])").count()
        assert 0 < visible < total
        assert page.inner_text("section#new .filter-status") == f"{visible} of {total} rows shown"
        assert page.evaluate("window.__pwned === undefined")
        assert watched.dialogs == [] and watched.errors == []
    finally:
        watched.close()


def test_sorting_reorders_rows(browser: Any, sample: Any, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(bundle_from_input(sample.data).html, encoding="utf-8")
    watched = Watched(browser)
    try:
        watched.open(report)
        page = watched.page
        table = page.locator("section#changes-columns article.group", has_text="cluster-2").locator("table")

        def kinds() -> list[str]:
            return table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")

        assert kinds() == ["removed", "changed"]  # as rendered: added, removed, changed, moved
        table.locator("th button.sort").first.click()
        assert kinds() == ["changed", "removed"]
        assert table.locator("th").first.get_attribute("aria-sort") == "ascending"
        table.locator("th button.sort").first.click()
        assert kinds() == ["removed", "changed"]
        assert table.locator("th").first.get_attribute("aria-sort") == "descending"
        # severity sorts by rank, not alphabetically: critical above high above medium
        new = page.locator("section#new article.group").nth(1).locator("table")
        assert new.locator("tbody tr").count() == 2
        assert watched.errors == [] and watched.requests == [report.as_uri()]
    finally:
        watched.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _pixels(data: bytes) -> set[tuple[int, ...]]:
    """The distinct RGB colours of a non-interlaced 8-bit RGB/RGBA PNG (a small decoder: no Pillow here)."""
    chunks, offset, header = [], 8, b""
    while offset < len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + predictor) & 0xFF
        if y % 3 == 0:  # every third row is plenty to see what is on the image
            colours.update(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        previous = line
    return colours


def test_summary_screenshot(browser: Any, sample: Any, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(bundle_from_input(sample.data).html, encoding="utf-8")
    watched = Watched(browser, {"width": 1200, "height": 900})
    try:
        watched.open(report)
        summary = watched.page.locator("section#summary")
        shot = tmp_path / "summary.png"  # kept under tmp_path for a look when the test fails
        summary.screenshot(path=str(shot))
        width, height = _png_size(shot.read_bytes())
        box = summary.bounding_box()
        assert box is not None
        assert abs(width - box["width"]) <= 2 and abs(height - box["height"]) <= 2  # sub-pixel layout
        assert 800 <= width <= 1200 and 250 <= height <= 900
        colours = _pixels(shot.read_bytes())
        assert len(colours) > 50  # text, cards and charts, not a blank image
        assert (0xC6, 0x28, 0x28) in colours  # the "high" bars and card border
        assert (0x7A, 0x10, 0x20) in colours  # the "critical" bar
        assert watched.errors == [] and [c for c in watched.console if c[0] == "error"] == []
    finally:
        watched.close()


def test_print_media_shows_sign_off_and_hides_controls(browser: Any, sample: Any, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(bundle_from_input(sample.data).html, encoding="utf-8")
    watched = Watched(browser)
    try:
        watched.open(report)
        page = watched.page
        assert not page.locator("#signoff").is_visible()
        assert page.locator("section#new .filter").is_visible()
        page.emulate_media(media="print")
        assert page.locator("#signoff").is_visible()
        assert not page.locator("section#new .filter").is_visible()
        assert not page.locator("nav.toc").is_visible()
        # A 400-digit cluster id in a change group's heading ran off the printed page.
        overflow = page.evaluate(
            """() => {
                const heading = document.querySelector("section.changes h3 code");
                heading.textContent = "9".repeat(400);
                const h3 = heading.closest("h3");
                return h3.scrollWidth - h3.clientWidth;
            }"""
        )
        assert overflow <= 0
        pdf = page.pdf(format="A4")
        assert pdf[:5] == b"%PDF-" and len(pdf) > 10_000
    finally:
        watched.close()


def test_printed_tables_repeat_their_headings_with_text(browser: Any, tmp_path: Path) -> None:
    """Found by a probe: Chromium painted the sort buttons blank in the heading rows it repeats on
    each printed page, so most pages of a printed report had tables without column names."""
    import shutil
    import subprocess

    from .conftest import scale_input

    report = tmp_path / "report.html"
    report.write_text(bundle_from_input(scale_input(tmp_path, changes=8, findings_count=90)).html, "utf-8")
    watched = Watched(browser)
    try:
        watched.open(report)
        page = watched.page
        page.emulate_media(media="print")
        heads = page.eval_on_selector_all("section#new thead th", "ths => ths.map(th => th.innerText)")
        assert heads[:5] == ["Severity", "Cluster", "Column(s)", "Finding", "Status"]
        assert not page.locator("section#new thead th button.sort").first.is_visible()
        pdf = tmp_path / "report.pdf"
        pdf.write_bytes(page.pdf(format="A4"))
        page.emulate_media(media="screen")
        assert page.locator("section#new thead th button.sort").first.is_visible()  # sorting still works
    finally:
        watched.close()
    if shutil.which("pdftotext") is None:  # poppler-utils: the printed text is checked where it exists
        return
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
    pages = [p for p in text.stdout.split("\f") if "db.schema.table" in p]
    assert len(pages) >= 3  # the 90 new findings run over several pages
    assert all("Column(s)" in p and "Severity" in p for p in pages)
    # every printed page says what it is a page of, and which page (a probe printed with
    # --no-pdf-header-footer: pages 2 and later carried nothing)
    every = [p for p in text.stdout.split("\f") if p.strip()]
    for number, printed in enumerate(every, start=1):
        assert "cluster-auditor report, run 3 against run 2" in printed, number
        assert f"Page {number} of {len(every)}" in printed, number


SPACED = ("first name", "first  name", "first name ", " first name")


def test_names_that_differ_in_spaces_do_not_read_alike(browser: Any, tmp_path: Path) -> None:
    """Found by a probe: HTML collapsed runs of spaces and hid leading and trailing ones, so four
    different columns all read 'first name' in the report and its printed copy."""
    from .conftest import finding

    data = hostile_input(tmp_path)
    data.findings = [finding(i, status="existing", column=name) for i, name in enumerate(SPACED)]
    data.diff = None
    report = tmp_path / "report.html"
    report.write_text(bundle_from_input(data).html, encoding="utf-8")
    watched = Watched(browser)
    try:
        watched.open(report)
        page = watched.page
        for media in ("screen", "print"):
            page.emulate_media(media=media)
            shown = page.eval_on_selector_all(
                "section#open tbody tr td:nth-child(3)", "cells => cells.map(c => c.innerText)"
            )
            assert sorted(shown) == sorted(
                [
                    "first name",
                    "first  name",
                    "first name\u2420",
                    "\u2420first name",
                ]
            ), media
    finally:
        watched.close()


def test_the_email_body_keeps_its_width_whatever_the_catalog_names(browser: Any, tmp_path: Path) -> None:
    """Found by a probe: a finding's message naming a 300-character column (the demo's own catalog
    has such names) stretched the 680 px message body to 2,051 px; only the cluster / column
    cell could break its words."""
    from auditor.render.email import build_message

    data = hostile_input(tmp_path)
    long_name = "s3-exports.archive/" + "y" * 300  # one word, as a long fqn is
    for item in data.findings:
        item["message"] = f"{long_name} is tagged sensitivity=high: {item['message']}"
    message = build_message(bundle_from_input(data), to=["team@example.org"])
    body = message.get_body(("html",))
    assert body is not None
    page_file = tmp_path / "mail.html"
    page_file.write_text(body.get_content(), encoding="utf-8")
    watched = Watched(browser)  # 1280 px wide
    try:
        watched.open(page_file)
        page = watched.page
        assert page.evaluate("document.documentElement.scrollWidth") == 1280
        widest = page.evaluate(
            "Math.max(...[...document.querySelectorAll('table[data-section]')]"
            ".map(t => t.getBoundingClientRect().width))"
        )
        assert widest <= 680 - 2 * 20  # the body's 680 px, less its cells' padding
        assert long_name in page.inner_text("body").replace("\n", "")  # broken, not cut
    finally:
        watched.close()
