"""HTML building blocks of the report pages: one self-contained file per page.

A page is a list of `Section`s (a heading and a body), optionally with interactive charts: the
chart data travels as JSON inside the page and `streamstats/static/report/charts.js` draws it
with the vendored uPlot, both inlined too, so a page opens from a file, an e-mail attachment or
an archive with no network and no other file. Adding a part to a page is adding a `Section`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import orjson

QUALITY_BANDS = ("good", "fair", "poor")
QUALITY_COLORS = {"good": "#2e7d32", "fair": "#f9a825", "poor": "#c62828"}
# A day or week is called by its worst band that covers at least this share of its samples.
BAND_SHARE = 0.10


@dataclass(frozen=True)
class Section:
    """A part of a page: `<section id=…><h2>title</h2>body</section>`, plus the charts it shows.

    `charts` maps a chart id to its spec (see `chart`); the body places each one with
    `chart_slot(id)`.
    """

    id: str
    title: str
    body: str
    charts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _script(text: str) -> str:
    # Nothing inside a <script> element may close it early.
    return text.replace("</", "<\\/")


@cache
def _asset(path: str) -> str:
    """A file of streamstats/static, ready to inline (scripts escaped)."""
    text = (resources.files("streamstats") / "static" / path).read_text(encoding="utf-8")
    return _script(text) if path.endswith(".js") else text


def page(
    title: str,
    *,
    nav: str,
    heading: str,
    subtitle: str,
    sections: Sequence[Section],
    time_range: Mapping[str, Sequence[float]] | None = None,
    day_axis: bool = False,
) -> str:
    """A whole page; charts (if any section has some) get uPlot and the chart script inlined.

    `time_range` has `live` (the range the charts open on) and `all` (the widest one).
    """
    charts = {k: v for s in sections for k, v in s.charts.items()}
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections
    )
    scripts = ""
    css = _asset("report/report.css")
    if charts:
        assert time_range is not None, "a page with charts needs the time range they open on"
        payload = {"charts": charts, "range": time_range, "dayOnly": day_axis}
        # orjson writes numpy arrays in C (NaN as null): serializing is most of a page's cost.
        data = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        css = _asset("vendor/uPlot.min.css") + css
        scripts = (
            '<script type="application/json" id="report-data">'
            f"{_script(data)}</script>"
            f"<script>{_asset('vendor/uPlot.iife.min.js')}</script>"
            f"<script>{_asset('report/charts.js')}</script>"
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{css}</style></head><body><main>"
        f"<nav>{nav}</nav><h1>{heading}</h1><p class=subtitle>{subtitle}</p>{body}"
        f"</main>{scripts}</body></html>\n"
    )


# -- chart specs ------------------------------------------------------------------------------


def values(array: Any, digits: int) -> np.ndarray:
    """A float array rounded to `digits` for a chart (NaN becomes null, a gap in the line)."""
    return np.round(np.asarray(array, dtype=float), digits)


def plain(array: Any, digits: int) -> list[float | None]:
    """A float array as a JSON-ready list rounded to `digits`, NaN as None."""
    return [None if math.isnan(v) else v for v in values(array, digits).tolist()]


def series(
    label: str, data: Any, *, unit: str, color: str, scale: str, digits: int = 1, **extra: Any
) -> dict[str, Any]:
    """One line (or bar) of a chart; `extra` may carry `width`, `fill` or `display` (the
    values the legend shows instead of the drawn ones)."""
    spec = {"label": label, "values": values(data, digits), "unit": unit, "color": color}
    return spec | {"scale": scale, "digits": digits} | extra


def axis(scale: str, label: str, *, side: str = "left", top: float | None = None) -> dict[str, Any]:
    """A y axis from 0 to the data's maximum (or to `top`)."""
    return {"scale": scale, "label": label, "side": side, "max": top}


def chart(
    x: Any,
    lines: Sequence[Mapping[str, Any]],
    axes: Sequence[Mapping[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """A chart spec: x in epoch seconds; `extra` may set `height`, `bars`, `points`, `shade`
    (spans [from, to] drawn behind the lines) and `bands` ([upper, lower, fill] series pairs,
    1-based like uPlot)."""
    return {"x": x, "series": list(lines), "axes": list(axes)} | extra


def chart_slot(chart_id: str, title: str) -> str:
    """Where a section's chart goes, under its title."""
    title = html.escape(title)
    return f'<p class=chart-title>{title}</p><div class=chart data-chart="{chart_id}"></div>'


def toolbar(hint: str, buttons: Mapping[str, str]) -> str:
    """Buttons that move every chart of the page together (`live`: the range the page opened
    on, `all`: the widest), ◀ ▶ to pan, and the visible range."""
    own = "".join(f'<button data-range="{k}">{html.escape(v)}</button>' for k, v in buttons.items())
    return (
        f'<div class=toolbar>{own}<button data-range="left" title="earlier">◀</button>'
        '<button data-range="right" title="later">▶</button><span id="visible-range"></span>'
        f"</div><p class=note>{html.escape(hint)}</p>"
    )


def stacked(shares: Mapping[str, Any]) -> dict[str, Any]:
    """Bar heights that stack the bands: good is drawn up to good + fair + poor, fair over its
    lower part up to fair + poor, poor lowest (the legend shows each band's own share)."""
    return {
        "good": shares["good"] + shares["fair"] + shares["poor"],
        "fair": shares["fair"] + shares["poor"],
        "poor": shares["poor"],
    }


def gaps(x: Any, step: float) -> np.ndarray:
    """Where a null point goes so a line breaks instead of joining across missing buckets:
    the positions (for `np.insert`) after each point followed by a jump larger than `step`."""
    return np.flatnonzero(np.diff(np.asarray(x)) > step) + 1


# -- text and tables --------------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def fmt_number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def fmt_share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def band_of(shares: Mapping[str, float | None]) -> str | None:
    """`poor` when at least BAND_SHARE of the samples were poor, `fair` when at least that share
    were fair or poor, else `good`; None without rated samples."""
    if shares.get("good") is None:
        return None
    if (shares["poor"] or 0) >= BAND_SHARE:
        return "poor"
    if (shares["poor"] or 0) + (shares["fair"] or 0) >= BAND_SHARE:
        return "fair"
    return "good"


def band_badge(band: str | None) -> str:
    return "–" if band is None else f'<span class="band {band}">{band}</span>'


def shares_bar(shares: Mapping[str, float | None]) -> str:
    """A small stacked bar of the three bands with the percentages in words below it."""
    if shares.get("good") is None:
        return "–"
    spans = "".join(
        f'<span class="{b}" style="width:{100 * (shares[b] or 0):.2f}%"></span>'
        for b in QUALITY_BANDS
    )
    words = " · ".join(f"{b} {100 * (shares[b] or 0):.0f} %" for b in QUALITY_BANDS)
    return f'<div class=shares title="{words}">{spans}</div><div class=share-words>{words}</div>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str = "None.") -> str:
    """An HTML table; cells are HTML already (escape text before)."""
    return table_around(header, "".join(table_row(row) for row in rows), empty=empty)


def table_row(cells: Sequence[str]) -> str:
    """One row of a `table`."""
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def table_around(header: Sequence[str], body: str, *, empty: str = "None.") -> str:
    """A table around rows made by `table_row` (or a placeholder for them), the `empty`
    paragraph when `body` is empty."""
    if not body:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f"<th>{h}</th>" for h in header)
    return f"<table><tr>{head}</tr>{body}</table>"


def cards(items: Iterable[Sequence[str]]) -> str:
    """Key figures as (label, value, unit[, change]) tiles; the value is HTML."""
    tiles = []
    for label, value, unit, *change in items:
        below = "".join(f"<div class=change>{html.escape(c)}</div>" for c in change)
        tiles.append(
            f"<div class=card><div class=label>{html.escape(label)}</div>"
            f"<div class=value>{value} <span class=unit>{html.escape(unit)}</span></div>"
            f"{below}</div>"
        )
    return f"<div class=cards>{''.join(tiles)}</div>"


def sparkline(
    points: Sequence[float | None],
    marks: Sequence[float | None] = (),
    *,
    width: int = 192,
    height: int = 30,
    title: str = "",
) -> str:
    """An inline SVG line of `points` (gaps where None), red ticks under the slots whose `marks`
    reach BAND_SHARE (e.g. the share of poor samples)."""
    known = [p for p in points if p is not None]
    if not known:
        return "–"
    top = max(known) or 1.0
    step = width / max(len(points) - 1, 1)
    paths: list[list[str]] = []
    current: list[str] = []
    for i, p in enumerate(points):
        if p is None:
            if current:
                paths.append(current)
            current = []
            continue
        current.append(f"{i * step:.1f},{height - 6 - (height - 8) * p / top:.1f}")
    if current:
        paths.append(current)
    lines = "".join(
        f'<polyline points="{" ".join(p)}" fill="none" stroke="#1565c0" stroke-width="1.3"/>'
        if len(p) > 1
        else f'<circle cx="{p[0].split(",")[0]}" cy="{p[0].split(",")[1]}" r="1.5" fill="#1565c0"/>'
        for p in paths
    )
    ticks = "".join(
        f'<rect x="{i * step - step / 2:.1f}" y="{height - 3}" width="{max(step, 1.5):.1f}" '
        f'height="3" fill="{QUALITY_COLORS["poor"]}"/>'
        for i, m in enumerate(marks)
        if m is not None and m >= BAND_SHARE
    )
    label = f"<title>{html.escape(title)}</title>" if title else ""
    return (
        f'<svg class=spark width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img">{label}{lines}{ticks}</svg>'
    )
