"""``report.html``: a report as one self-contained page, rendered from the ``Report`` that
``report.md`` is made of (``analysis.report``); nothing here computes a verdict or a figure.

The page needs no network: the figures are the report's own SVGs inlined (text drawn as
paths, so no font is fetched), the styles and scripts are inline, and a Content-Security-Policy
forbids every other source, so a stray link would be blocked and logged, not fetched. It holds,
in order: the verdicts (applicable ones in a table, the others one line each), the study's
facts, the figures, a sortable table of every trial, then the remaining sections of report.md.

Hover values: for each drawn figure, every data point of its ``gid``-tagged lines (the
figures' contract, ``analysis.figures``) is placed where matplotlib drew it in the SVG and
carried as JSON beside it; a small script shows the nearest point's series and values, in the
axes' own words and units, under the pointer. No plotting library is shipped with the page.
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt
from matplotlib.colors import to_hex
from matplotlib.ticker import EngFormatter

from analysis.figures import Percent, axis_label

if TYPE_CHECKING:
    from analysis.report import Report

MAX_POINTS_PER_LINE = 400  # hover points kept per line (evenly spaced): long curves stay small
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in a spec is shown, not run


def _esc(text) -> str:
    return _html.escape(str(text), quote=True)


# ------------------------------------------------------------------ figures

def _axis_name(ax, which: str) -> str:
    """The axis label's first line, or a shared sibling's when this panel leaves it blank."""
    get = (lambda a: a.get_xlabel()) if which == "x" else (lambda a: a.get_ylabel())
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    for candidate in [ax, *shared.get_siblings(ax)]:
        text = get(candidate).strip()
        if text:
            return text.splitlines()[0]
    return which


def _value_text(axis, value: float) -> str:
    """A data value as the axis shows it: percent on error axes, the tick's own label on
    categorical and grid-ticked axes, engineering notation for tokens."""
    formatter = axis.get_major_formatter()
    if isinstance(formatter, Percent):
        return f"{100 * value:.4g}%"
    for loc, tick in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
        text = tick.get_text()
        if text and "$" not in text and math.isclose(loc, value, rel_tol=1e-9, abs_tol=1e-12):
            return text
    if isinstance(formatter, EngFormatter):
        return formatter(value)
    return f"{value:.5g}"


def _series_name(line) -> str:
    label = line.get_label()
    return label if label and not label.startswith("_") else line.get_gid()


def hover_points(fig) -> dict:
    """Every data point of the figure's ``gid``-tagged lines in SVG coordinates (points, origin
    top left), with its series and its values as the axes label them.

    Call after the figure was saved (its layout and tick labels are then final). Lines drawn
    in other coordinates (``axhline``, ``axvline``: thresholds, the LR decay) and points outside
    their axes are left out.
    """
    width, height = fig.get_size_inches() * 72.0
    to_figure = fig.transFigure.inverted()
    series, points = [], []
    for ax in fig.axes:
        xname, yname = _axis_name(ax, "x"), _axis_name(ax, "y")
        box = ax.bbox
        for line in ax.lines:
            if not line.get_gid() or line.get_transform() is not ax.transData:
                continue
            xy = np.asarray(line.get_xydata(), dtype=float)
            if len(xy) == 0:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                shown = ax.transData.transform(xy)
            keep = np.isfinite(xy).all(axis=1) & np.isfinite(shown).all(axis=1)
            keep &= ((shown[:, 0] >= box.x0 - 1) & (shown[:, 0] <= box.x1 + 1)
                     & (shown[:, 1] >= box.y0 - 1) & (shown[:, 1] <= box.y1 + 1))
            index = np.flatnonzero(keep)
            if len(index) == 0:
                continue
            if len(index) > MAX_POINTS_PER_LINE:
                index = index[np.unique(np.linspace(0, len(index) - 1, MAX_POINTS_PER_LINE).round().astype(int))]
            frac = to_figure.transform(shown[index])
            series.append({"name": _series_name(line), "color": to_hex(line.get_color()), "x": xname, "y": yname,
                           "gid": line.get_gid()})
            s = len(series) - 1
            for (fx, fy), i in zip(frac, index):
                points.append([round(float(fx) * width, 2), round(float(1 - fy) * height, 2), s,
                               _value_text(ax.xaxis, xy[i, 0]), _value_text(ax.yaxis, xy[i, 1])])
    return {"width": round(float(width), 2), "height": round(float(height), 2), "series": series, "points": points}


_ID_REF = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def _prefix_ids(svg: str, prefix: str) -> str:
    """Prefix the SVG's ids and references to them: several figures share one HTML document."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    return _ID_REF.sub(lambda m: m.group(1) + prefix + m.group(2) if m.group(2) in ids else m.group(0), svg)


def inline_figure(fig, svg: bytes, key: str) -> str:
    """A figure's SVG (as written to ``figures/<key>.svg``) ready to inline, with its hover points."""
    text = svg.decode()
    text = text[text.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML
    text = _prefix_ids(text, f"{key}-")
    data = json.dumps(hover_points(fig), separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    return (f'<div class="plot" data-key="{_esc(key)}">{text}'
            f'<script type="application/json" class="points">{data}</script></div>')


# ------------------------------------------------------------------ tables

def _verdicts(report: Report) -> str:
    from analysis.report import VERDICTS_KEY, seeds_to_decide, thresholds_text  # report imports this module

    applicable = [v for v in report.verdicts if v.applicable]
    skipped = [v for v in report.verdicts if not v.applicable]
    out = [f'<p class="summary"><b>{_esc(report.summary())}</b></p>', _markdown.render(VERDICTS_KEY)]
    if applicable:
        out.append('<table class="verdicts"><thead><tr><th>claim</th><th>verdict</th><th>evidence</th>'
                   "<th>thresholds</th></tr></thead><tbody>")
        for v in applicable:
            word = "FAIL" if v.failed else v.status
            note = seeds_to_decide(v)
            out.append(f'<tr class="{_esc(v.status)}"><td>{_esc(v.claim)}</td>'
                       f'<td><span class="badge {_esc(v.status)}">{_esc(word)}</span>'
                       + (f"<br><small>{_esc(note)}</small>" if note else "")
                       + f"</td><td>{_esc(v.reason)}</td><td><code>{_esc(thresholds_text(v))}</code></td></tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p><i>no claim applies</i></p>")
    if skipped:
        out.append('<p>Not applicable to this study:</p><ul class="not-applicable">')
        out += [f"<li>{_esc(v.claim)}: {_esc(v.reason)}</li>" for v in skipped]
        out.append("</ul>")
    return "\n".join(out)


def _cell(column: str, value) -> str:
    """A table cell: shown as the report writes it, sorted by ``data-v`` (the raw number)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return '<td data-v=""></td>'
    if isinstance(value, (bool, np.bool_)):
        return f'<td data-v="{int(value)}">{value}</td>'
    if isinstance(value, (int, np.integer)):
        return f'<td class="num" data-v="{int(value)}">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if not math.isfinite(number):
            return f'<td data-v="">{_esc(number)}</td>'
        shown = f"{100 * number:.4g}" if "error" in column else f"{number:.5g}"
        return f'<td class="num" data-v="{number!r}">{shown}</td>'
    return f"<td>{_esc(value)}</td>"


def _trials(report: Report) -> str:
    table = report.trials
    if table.empty:
        return "<p><i>none</i></p>"
    heads = []
    for c in table.columns:
        name = {"rank": "rank", "trial_id": "trial", "status": "status", "error": "error"}.get(c) or axis_label(c)
        heads.append(f'<th scope="col" data-column="{_esc(c)}"><button type="button">{_esc(name)}</button></th>')
    rows = []
    for record in table.itertuples(index=False, name=None):
        rows.append("<tr>" + "".join(_cell(c, v) for c, v in zip(table.columns, record)) + "</tr>")
    metric = report.study.metric
    return (f"<p>{len(table)} trials, ranked by final <code>{_esc(metric)}</code> ({_esc(report.study.mode)}) among "
            "finished trials; click a column to sort by it, again to reverse. Errors are in percent.</p>"
            '<div class="scroll"><table class="sortable trials"><thead><tr>' + "".join(heads)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


# ------------------------------------------------------------------ page

STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       background: #fff; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 1rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9em; }
pre { background: #f4f4f4; padding: .8rem; overflow-x: auto; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { font-weight: 700; padding: .05rem .4rem; border-radius: .3rem; color: #fff; }
.badge.pass { background: #1b6e2a; } .badge.fail { background: #b00020; } .badge.inconclusive { background: #7a5200; }
.not-applicable { color: #444; font-size: .9rem; }
figure { margin: 1.5rem 0; } figcaption { font-weight: 600; margin-bottom: .4rem; }
.plot svg { max-width: 100%; height: auto; display: block; }
.plot svg .hl { fill: none; stroke-width: 2.5; pointer-events: none; }
#tip { position: fixed; z-index: 10; pointer-events: none; white-space: pre; background: #1a1a1a; color: #fff;
       font-size: .8rem; padding: .35rem .5rem; border-radius: .3rem; }
.scroll { overflow-x: auto; }
table.sortable th button { all: unset; cursor: pointer; }
table.sortable th button::after { content: " \\2195"; color: #666; }
table.sortable th[aria-sort="ascending"] button::after { content: " \\2191"; color: #000; }
table.sortable th[aria-sort="descending"] button::after { content: " \\2193"; color: #000; }
"""

SCRIPT = """
(function () {
  const tip = document.getElementById("tip");
  const hide = () => { tip.hidden = true; };
  document.querySelectorAll(".plot").forEach(function (plot) {
    const svg = plot.querySelector("svg");
    const data = JSON.parse(plot.querySelector("script.points").textContent);
    if (!svg || !data.points.length) return;
    const mark = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    mark.setAttribute("r", "4.5"); mark.setAttribute("class", "hl"); mark.style.display = "none";
    svg.appendChild(mark);
    svg.addEventListener("mousemove", function (ev) {
      const m = svg.getScreenCTM();
      if (!m) return;
      const p = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m.inverse());
      let best = -1, bestD = Infinity;
      for (let i = 0; i < data.points.length; i++) {
        const q = data.points[i], d = (q[0] - p.x) ** 2 + (q[1] - p.y) ** 2;
        if (d < bestD) { bestD = d; best = i; }
      }
      const radius = 12 / m.a;  // 12 screen pixels, in SVG units
      if (best < 0 || bestD > radius * radius) { mark.style.display = "none"; hide(); return; }
      const q = data.points[best], s = data.series[q[2]];
      mark.setAttribute("cx", q[0]); mark.setAttribute("cy", q[1]);
      mark.style.stroke = s.color; mark.style.display = "";
      tip.textContent = s.name + "\\n" + s.x + ": " + q[3] + "\\n" + s.y + ": " + q[4];
      tip.hidden = false;
      tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 14) + "px";
    });
    svg.addEventListener("mouseleave", function () { mark.style.display = "none"; hide(); });
  });
  document.querySelectorAll("table.sortable").forEach(function (table) {
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach(function (th, col) {
      th.querySelector("button").addEventListener("click", function () {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0], rows = Array.from(body.rows);
        const key = function (r) { const c = r.cells[col]; return c.dataset.v !== undefined ? c.dataset.v : c.textContent; };
        const numeric = rows.every(function (r) { const v = key(r); return v === "" || !isNaN(Number(v)); });
        rows.sort(function (a, b) {
          const x = key(a), y = key(b);
          if (x === "" || y === "") return (x === "") - (y === "");  // blanks last either way
          const c = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, { numeric: true });
          return ascending ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""

SKIPPED_SECTIONS = ("Verdicts", "Figures", "Best trials")  # drawn from the Report's objects instead


def _figures(report: Report) -> str:
    out = ['<p>Hover a curve or a point for its values. Each figure is also in <code>figures/</code> as PNG and '
           "SVG.</p>"]
    for item in report.figures:
        if item.draw is None or item.key not in report.inline:
            continue
        out.append(f'<figure id="figure-{_esc(item.key)}"><figcaption>{_esc(item.title)}</figcaption>'
                   f"{report.inline[item.key]}</figure>")
    skipped = [item for item in report.figures if item.draw is None]
    if skipped:
        out.append("<h3>Not drawn</h3><ul>")
        out += [f"<li><code>{_esc(i.key)}</code> ({_esc(i.title)}): {_esc(i.reason)}</li>" for i in skipped]
        out.append("</ul>")
    return "\n".join(out)


def render(report: Report) -> str:
    """The whole page for ``report`` (after ``analysis.report.build_report`` filled it)."""
    name = report.study.name
    facts = _markdown.render("\n".join(report.head[1:]))  # below the title: description and facts
    body = [f"<h1>Study <code>{_esc(name)}</code></h1>",
            f'<section id="verdicts"><h2>Verdicts</h2>{_verdicts(report)}</section>',
            f'<section id="study"><h2>Study</h2>{facts}</section>',
            f'<section id="figures"><h2>Figures</h2>{_figures(report)}</section>',
            f'<section id="trials"><h2>Trials</h2>{_trials(report)}</section>']
    for title, lines in report.sections.items():
        if title in SKIPPED_SECTIONS:
            continue
        anchor = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        body.append(f'<section id="{anchor}"><h2>{_esc(title)}</h2>{_markdown.render(chr(10).join(lines))}</section>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Study {_esc(name)}: report</title><style>{STYLE}</style></head>\n<body><main>\n"
            + "\n".join(body)
            + f'\n</main><div id="tip" role="tooltip" hidden></div><script>{SCRIPT}</script></body></html>\n')
