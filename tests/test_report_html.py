"""report.html: one self-contained page, checked in a real headless Chromium (the system's,
driven by playwright): every figure renders, nothing logs an error, nothing is fetched,
the page is not blank, hover values are the data, and the trials table sorts."""

from __future__ import annotations

import io
import math
import os
import re
import shutil
from html import escape

import numpy as np
import pytest

from analysis import figures
from analysis.cli import main
from analysis.load import load_study
from analysis.report import write_study_report
from tests.test_analysis_stores import (LM_CROSSING_STEP, SEEDS, lm_loss, vision_error, write_lm_store,
                                        write_vision_store)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The vision store reported through ``python -m analysis report``, the LM store through
    ``write_study_report`` (which the CLI calls), keeping its in-memory Report."""
    root = str(tmp_path_factory.mktemp("html"))
    write_vision_store(root)
    write_lm_store(root)
    assert main(["report", "vision", "--storage", root]) == 0
    lm_report, _ = write_study_report(load_study("lm", root))
    return root, lm_report


@pytest.fixture(scope="module")
def store(built):
    return built[0]


def page_path(store, name):
    return os.path.join(store, name, "report.html")


def read(store, name):
    with open(page_path(store, name), encoding="utf-8") as f:
        return f.read()


def hover_data(html, key):
    """The hover points of figure ``key`` as embedded in the page."""
    import json

    block = re.search(r'<div class="plot" data-key="%s">.*?<script type="application/json" class="points">(.*?)</script>'
                      % re.escape(key), html, flags=re.S)
    assert block, key
    return json.loads(block.group(1).replace("<\\/", "</"))


def point(data, series, x_text):
    """The one hover point of ``series`` whose x reads ``x_text``."""
    index = [i for i, s in enumerate(data["series"]) if s["name"] == series]
    found = [p for p in data["points"] if p[2] in index and p[3] == x_text]
    assert len(found) == 1, (series, x_text, [s["name"] for s in data["series"]])
    return found[0]


# ------------------------------------------------------------------ the file itself

def test_report_html_is_written_beside_report_md_and_needs_no_network(store):
    folder = os.path.join(store, "vision")
    assert os.path.isfile(os.path.join(folder, "report.md")) and os.path.isfile(page_path(store, "vision"))
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]  # written under a temporary name, then moved
    for name in ("vision", "lm"):
        html = read(store, name)
        assert html.startswith("<!DOCTYPE html>")
        assert "Content-Security-Policy" in html and "default-src 'none'" in html
        # nothing that a browser would fetch: no external script, style, image, font or frame
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", html, flags=re.I)
        assert not re.search(r"<link\b|@import|url\(\s*['\"]?(?:https?:|//)|<iframe\b", html, flags=re.I)
        assert "<img" not in html  # the figures are inline SVG


def test_html_holds_the_reports_verdicts_first_and_every_drawn_figure(built):
    store, report = built
    study = report.study
    html = read(store, "lm")
    assert html == report.html  # the file is the page the Report renders
    applicable = [v for v in report.verdicts if v.applicable]
    skipped = [v for v in report.verdicts if not v.applicable]
    assert applicable and skipped
    table = html.split('<table class="verdicts">')[1].split("</table>")[0]
    assert table.count("<tr class=") == len(applicable)
    for v in applicable:
        assert f'<tr class="{v.status}"><td>{escape(v.claim)}</td><td><span class="badge {v.status}">' in table
    not_applicable = html.split('<ul class="not-applicable">')[1].split("</ul>")[0]
    assert not_applicable.count("<li>") == len(skipped)
    # the verdicts come before the facts, the figures and the trials
    assert html.index('id="verdicts"') < html.index('id="study"') < html.index('id="figures"') < html.index('id="trials"')
    drawn = [item.key for item in report.figures if item.draw is not None]
    assert re.findall(r'<figure id="figure-([^"]+)">', html) == drawn
    not_drawn = html.split("<h3>Not drawn</h3>")[1].split("</ul>")[0]
    assert not_drawn.count("<li>") == len([i for i in report.figures if i.draw is None])
    # every trial is in the sortable table, finished ones ranked by the study's metric
    rows = html.split('<table class="sortable trials">')[1].split("</table>")[0].count("<tr>") - 1
    assert rows == len(study.trials) == 2 * 2 * len(SEEDS)  # schedule × weight decay × seed


def test_hover_points_sit_on_the_markers_matplotlib_drew(store):
    """Each hover point of the U-shape is at a marker of its line in the inline SVG, and reads
    the data values: the seed mean of the final test error, in percent."""
    html = read(store, "vision")
    data = hover_data(html, "ushape")
    mean = np.mean([vision_error(0.03, 1e-3, s) + 0.01 for s in SEEDS])  # the run's final test_error
    p = point(data, "WD 0.001", "0.03")
    assert p[4] == f"{100 * mean:.4g}%" == "4%"
    series = data["series"][p[2]]
    assert (series["x"], series["y"]) == ("learning rate", "test error (%)")
    # the markers matplotlib drew for this line in figures/ushape.svg: <use x= y=> in the group of its gid
    import xml.etree.ElementTree as ET

    root = ET.parse(os.path.join(store, "vision", "figures", "ushape.svg")).getroot()
    group = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("id") == series["gid"]]
    assert len(group) == 1
    markers = [(float(u.get("x")), float(u.get("y"))) for u in group[0].iter("{http://www.w3.org/2000/svg}use")]
    ours = [(q[0], q[1]) for q in data["points"] if q[2] == p[2]]
    assert len(markers) == len(ours) == 5
    np.testing.assert_allclose(sorted(ours), sorted(markers), atol=0.05)


# ------------------------------------------------------------------ in the browser

def chromium_path():
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """The system Chromium under playwright; skipped where either is missing, except in CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    executable = chromium_path()
    if sync_playwright is None or executable is None:
        message = ("no playwright (pip install -e '.[dev]')" if sync_playwright is None else
                   "no system Chromium (apt-get install chromium; .ci/run installs it)")
        (pytest.fail if os.environ.get("CI") else pytest.skip)(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


class Visit:
    """A page opened from a file, with every request and console message it made recorded.

    Requests other than the file itself are recorded and aborted, so a test never reaches
    the network even when the page tries to."""

    def __init__(self, browser, path):
        self.url = "file://" + os.path.abspath(path)
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.requests, self.console, self.errors = [], [], []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(self.url, wait_until="load")

    def _route(self, route):
        self.requests.append(route.request.url)
        if route.request.url == self.url:
            route.continue_()
        else:
            route.abort()

    @property
    def outside(self):
        return [u for u in self.requests if u != self.url]

    @property
    def console_errors(self):
        return [text for kind, text in self.console if kind in ("error", "warning")] + self.errors

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser):
    opened = []

    def open_page(path):
        opened.append(Visit(browser, path))
        return opened[-1]

    yield open_page
    for v in opened:
        v.close()


def pixel_spread(png: bytes) -> float:
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).std())


@pytest.mark.parametrize("name", ["vision", "lm"])
def test_every_figure_renders_without_errors_or_requests(store, visit, name):
    v = visit(page_path(store, name))
    page = v.page
    figures_shown = page.locator("figure .plot svg")
    count = figures_shown.count()
    assert count == len(re.findall(r'<figure id="figure-', read(store, name))) >= 7
    for i in range(count):
        svg = figures_shown.nth(i)
        svg.scroll_into_view_if_needed()
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 150, (i, box)
        assert pixel_spread(svg.screenshot()) > 5, f"figure {i} is blank"
    assert pixel_spread(page.screenshot(full_page=True)) > 5
    assert v.console_errors == []
    assert v.outside == [] and v.requests == [v.url]


def test_the_checks_catch_a_request_and_a_console_error(store, visit, tmp_path):
    """The guards above can fail: a page that loads a remote image and logs an error is caught,
    by the page's own Content-Security-Policy (a console error) and, without it, by the route."""
    html = read(store, "lm").replace("</main>", '<img src="https://example.com/x.png"></main>', 1)
    blocked = tmp_path / "blocked.html"
    blocked.write_text(html, encoding="utf-8")
    v = visit(str(blocked))
    assert any("Content Security Policy" in e and "example.com" in e for e in v.console_errors)
    no_policy = tmp_path / "fetched.html"
    no_policy.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
                         .replace("<script>", "<script>console.error('boom');", 1), encoding="utf-8")
    v = visit(str(no_policy))
    assert v.outside == ["https://example.com/x.png"]
    assert "boom" in v.console_errors


def show_point(page, key, p):
    """Move the mouse onto hover point ``p`` of figure ``key``; return the tooltip's text."""
    plot = page.locator(f'.plot[data-key="{key}"] svg')
    plot.scroll_into_view_if_needed()
    x, y = page.evaluate("""([key, x, y]) => {
        const svg = document.querySelector(`.plot[data-key="${key}"] svg`);
        const q = new DOMPoint(x, y).matrixTransform(svg.getScreenCTM());
        return [q.x, q.y];
    }""", [key, p[0], p[1]])
    page.mouse.move(x + 2, y + 1)  # near the point, not on it: the nearest point is shown
    tip = page.locator("#tip")
    assert tip.is_visible()
    return tip.inner_text()


def test_hovering_a_curve_shows_its_values(store, visit):
    vision = visit(page_path(store, "vision")).page
    p = point(hover_data(read(store, "vision"), "ushape"), "WD 0.001", "0.03")
    assert show_point(vision, "ushape", p) == "WD 0.001\nlearning rate: 0.03\ntest error (%): 4%"
    vision.mouse.move(2, 2)
    assert not vision.locator("#tip").is_visible()

    lm_html = read(store, "lm")
    lm = visit(page_path(store, "lm")).page
    data = hover_data(lm_html, "chinchilla_val_loss")
    expected = np.mean([lm_loss(500, 0.3, "cosine", s) + 0.01 for s in SEEDS])  # step 500 = 512k tokens
    cosine = [i for i, s in enumerate(data["series"]) if s["gid"] == "data:weight_decay=0.3"][0]  # the cosine column
    p = [q for q in data["points"] if q[2] == cosine and q[3] == "512k"][0]
    assert show_point(lm, "chinchilla_val_loss", p) == (f"AdamW WD 0.3\ntokens seen: 512k\n"
                                                        f"validation loss (nats): {expected:.5g}")
    # the isolation plot's categories read as their names
    iso = hover_data(lm_html, "isolation")
    cosine_best = 1.5 + 3.0 * math.exp(-1000 / 250) + 0.1 * 0.3 * (LM_CROSSING_STEP - 1000) / LM_CROSSING_STEP + 0.01
    p = point(iso, "best validation loss (nats)", "cosine")
    assert show_point(lm, "isolation", p) == f"best validation loss (nats)\nLR schedule: cosine\n" \
                                             f"validation loss (nats): {cosine_best:.5g}"


def column_values(page, column):
    return page.evaluate("""(column) => {
        const table = document.querySelector("table.trials");
        const col = Array.from(table.tHead.rows[0].cells).findIndex(th => th.dataset.column === column);
        return Array.from(table.tBodies[0].rows, r => {
            const c = r.cells[col];
            return c.dataset.v !== undefined ? c.dataset.v : c.textContent;
        });
    }""", column)


def test_the_trials_table_sorts_when_a_header_is_clicked(store, visit):
    page = visit(page_path(store, "vision")).page
    header = page.locator('table.trials th[data-column="test_error"]')
    ranks = column_values(page, "rank")
    assert ranks[:3] == ["1", "2", "3"] and ranks[-1] == ""  # best first; unranked (failed, diverged) last
    header.click()
    values = column_values(page, "test_error")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers) and len(numbers) == len(SEEDS) * 10  # the failed trial has none
    assert values[-1] == "" and header.get_attribute("aria-sort") == "ascending"
    header.click()
    values = column_values(page, "test_error")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers, reverse=True) and values[-1] == ""  # blanks stay last
    assert header.get_attribute("aria-sort") == "descending"
    # a text column sorts as text, and only the clicked column is marked
    status = page.locator('table.trials th[data-column="status"]')
    status.click()
    assert column_values(page, "status") == sorted(column_values(page, "status"))
    assert header.get_attribute("aria-sort") is None
    # the rows move whole: each trial keeps its own values
    ids = column_values(page, "trial_id")
    errors = column_values(page, "test_error")
    row = ids.index("lr0.03_wd0.001_s0")
    assert float(errors[row]) == pytest.approx(vision_error(0.03, 1e-3, 0) + 0.01)


def test_figure_axes_in_the_page_are_words(store):
    """The hover labels come from the figures' axes: words from the one label map."""
    data = hover_data(read(store, "vision"), "norms")
    names = {(s["x"], s["y"]) for s in data["series"]}
    assert ("epoch", figures.axis_label("weight_norm")) in names


def test_a_search_reports_page_renders_its_search_tables(visit, tmp_path):
    """A random/Optuna search: its own figures and the Search section's tables (from report.md's
    markdown) render in the page as well."""
    from tests.test_search_analysis import _write_study

    storage = str(tmp_path / "store")
    spec = {"name": "s", "trainable": "probe", "config": {"steps": 9}, "search": "random", "num_samples": 3,
            "search_seed": 0, "axes": {"weight_decay": [0.0], "lr": {"loguniform": [0.01, 1.0]}},
            "metric": "loss", "mode": "min"}
    _write_study(storage, "s", spec, [
        ("t1", {"steps": 9, "weight_decay": 0.0, "lr": 0.02}, "diverged", [3.0]),
        ("t2", {"steps": 9, "weight_decay": 0.0, "lr": 0.2}, "finished", [1.0, 0.5, 0.3]),
        ("t3", {"steps": 9, "weight_decay": 0.0, "lr": 0.5}, "finished", [1.0, 0.6, 0.4])])
    assert main(["report", "s", "--storage", storage]) == 0
    v = visit(os.path.join(storage, "s", "report.html"))
    section = v.page.locator("section#search")
    assert section.locator("table").count() >= 1 and "random" in section.inner_text()
    shown = v.page.locator("figure .plot svg")
    keys = v.page.eval_on_selector_all("figure .plot", "els => els.map(e => e.dataset.key)")
    assert {"search_progress", "search_trials"} <= set(keys)
    for i in range(shown.count()):
        box = shown.nth(i).bounding_box()
        assert box and box["width"] > 200 and box["height"] > 150
    assert v.console_errors == [] and v.outside == []
    # the trials table ranks the finished trials by loss: t2 (0.3) then t3 (0.4), the diverged one last
    assert column_values(v.page, "trial_id") == ["t2", "t3", "t1"]
