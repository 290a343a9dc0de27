"""Daily stream reports from rollups: the summary numbers, charts and self-contained HTML pages.

Inputs are a stream's day row (the `stream_stats_1d` columns), its 1-minute rows
(`stream_stats_1m`), its alert episodes and its drop episodes; nothing here reads a database.

Two numbers the rollups do not carry are approximated from the 1-minute buckets, and are named
so: `bitrate_kbps_p5` is the 5th percentile of the per-minute bitrate medians and
`latency_ms_p50` the median of the per-minute latency means, both weighted by each minute's
samples. Everything else is exact (the day rollup is computed from raw rows).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# Summary fields, in CSV column order.
FIELDS = (
    "stream_id",
    "day",
    "time_live_s",
    "samples",
    "bitrate_kbps_avg",
    "bitrate_kbps_p5",
    "bitrate_kbps_p50",
    "bitrate_kbps_p95",
    "fps_avg",
    "fps_min",
    "packet_loss_pct_avg",
    "packet_loss_pct_max",
    "latency_ms_p50",
    "latency_ms_p95",
    "good_share",
    "fair_share",
    "poor_share",
    "alerts_packet_loss_high",
    "alerts_fps_low",
    "drop_episodes",
    "drop_seconds",
)
BUCKET_SECONDS = 60
QUALITY_COLORS = {"good": "#2e7d32", "fair": "#f9a825", "poor": "#c62828"}
DROP_SHADE = "#1565c0"


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def weighted_quantile(values: Any, weights: Any, q: float) -> float | None:
    """The smallest value whose cumulative weight reaches q of the total (NaN values skipped)."""
    v = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    keep = ~np.isnan(v) & (w > 0)
    if not keep.any():
        return None
    v, w = v[keep], w[keep]
    order = np.argsort(v, kind="stable")
    cumulative = np.cumsum(w[order])
    index = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(v[order][min(index, len(v) - 1)])


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def overlap_seconds(episodes: pd.DataFrame, day: date) -> float:
    """Seconds of the day covered by episodes (open ones count to the end of the day)."""
    start, end = day_bounds(day)
    total = 0.0
    for row in _records(episodes):
        begin = max(row["started_at"], start)
        finish = end if pd.isna(row["ended_at"]) else min(row["ended_at"], end)
        total += max((finish - begin).total_seconds(), 0.0)
    return total


def summarize(
    stream_id: Any,
    day: date,
    daily: Mapping[str, Any],
    minutes: pd.DataFrame,
    alerts: pd.DataFrame,
    drops: pd.DataFrame,
) -> dict[str, Any]:
    """The day's summary for one stream (FIELDS), JSON-ready."""
    rated = sum(int(daily[f"{q}_samples"] or 0) for q in QUALITY_COLORS)
    live = minutes[minutes["samples"] > 0]
    alert_types = alerts["type"].value_counts() if len(alerts) else pd.Series(dtype=int)
    summary: dict[str, Any] = {
        "stream_id": str(stream_id),
        "day": day.isoformat(),
        "time_live_s": BUCKET_SECONDS * len(live),
        "samples": int(daily["samples"]),
        "bitrate_kbps_avg": _number(daily["bitrate_kbps_avg"]),
        "bitrate_kbps_p5": weighted_quantile(live["bitrate_kbps_p50"], live["samples"], 0.05),
        "bitrate_kbps_p50": _number(daily["bitrate_kbps_p50"]),
        "bitrate_kbps_p95": _number(daily["bitrate_kbps_p95"]),
        "fps_avg": _number(daily["fps_avg"]),
        "fps_min": _number(daily["fps_min"]),
        "packet_loss_pct_avg": _number(daily["packet_loss_pct_avg"]),
        "packet_loss_pct_max": _number(daily["packet_loss_pct_max"]),
        "latency_ms_p50": weighted_quantile(live["latency_ms_avg"], live["samples"], 0.5),
        "latency_ms_p95": _number(daily["latency_ms_p95"]),
        "good_share": int(daily["good_samples"]) / rated if rated else None,
        "fair_share": int(daily["fair_samples"]) / rated if rated else None,
        "poor_share": int(daily["poor_samples"]) / rated if rated else None,
        "alerts_packet_loss_high": int(alert_types.get("packet_loss_high", 0)),
        "alerts_fps_low": int(alert_types.get("fps_low", 0)),
        "drop_episodes": len(drops),
        "drop_seconds": overlap_seconds(drops, day),
    }
    return summary


def worst_first(summaries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Most time in poor quality first, then most drop time, then most alerts."""

    def badness(s: Mapping[str, Any]) -> tuple[float, float, int, str]:
        alerts = s["alerts_packet_loss_high"] + s["alerts_fps_low"]
        return (-(s["poor_share"] or 0.0), -s["drop_seconds"], -alerts, s["stream_id"])

    return sorted(summaries, key=badness)


def summary_csv(summaries: Iterable[Mapping[str, Any]]) -> str:
    """`summary.csv`: one row per stream, FIELDS as columns, worst first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for summary in worst_first(summaries):
        writer.writerow({k: "" if summary.get(k) is None else summary[k] for k in FIELDS})
    return out.getvalue()


# -- charts ---------------------------------------------------------------------------------


def _shade(ax: Any, drops: pd.DataFrame, day: date) -> None:
    _, end = day_bounds(day)
    for row in _records(drops):
        finish = end if pd.isna(row["ended_at"]) else row["ended_at"]
        ax.axvspan(_x(row["started_at"]), _x(finish), color=DROP_SHADE, alpha=0.15, lw=0)


def _axes_style(ax: Any, day: date) -> None:
    start, end = day_bounds(day)
    ax.set_xlim(_x(start), _x(end))
    ax.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, 3), tz=UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    ax.grid(True, alpha=0.3)


def _x(moment: Any) -> float:
    return float(mdates.date2num(pd.Timestamp(moment).tz_convert(None).to_datetime64()))


def _xs(index: pd.DatetimeIndex) -> Any:
    # Plain matplotlib date numbers: converting pandas timestamps per call costs a fifth of
    # the rendering time.
    return mdates.date2num(index.tz_convert(None).to_numpy())


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _reindexed(minutes: pd.DataFrame, day: date) -> pd.DataFrame:
    # Minutes without data become gaps in the lines instead of straight joins across them.
    start, end = day_bounds(day)
    index = pd.date_range(start, end, freq="1min", inclusive="left")
    return minutes.set_index("bucket").reindex(index)


def charts(minutes: pd.DataFrame, drops: pd.DataFrame, day: date) -> dict[str, str]:
    """Three PNG charts (base64): bitrate and fps, loss and latency, quality; drops shaded."""
    m = _reindexed(minutes, day)
    t = _xs(pd.DatetimeIndex(m.index))
    out = {}

    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.fill_between(
        t, m["bitrate_kbps_min"], m["bitrate_kbps_max"], color="#90caf9", alpha=0.5, lw=0,
        label="bitrate min–max",
    )  # fmt: skip
    ax.plot(t, m["bitrate_kbps_avg"], color="#0d47a1", lw=1, label="bitrate avg")
    ax.set_ylabel("kbps")
    ax.set_ylim(bottom=0)
    fps = ax.twinx()
    fps.plot(t, m["fps_avg"], color="#6a1b9a", lw=0.8, alpha=0.8, label="fps avg")
    fps.set_ylabel("fps")
    fps.set_ylim(bottom=0)
    _shade(ax, drops, day)
    _axes_style(ax, day)
    ax.set_title("Bitrate and frame rate (shaded: bitrate drops)", loc="left", fontsize=10)
    handles = ax.get_legend_handles_labels()
    more = fps.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="lower left", fontsize=8)
    # The same margins on every chart, so their time axes line up on the page.
    fig.subplots_adjust(left=0.08, right=0.92, top=0.88, bottom=0.12)
    out["bitrate_fps"] = _png(fig)

    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(t, m["packet_loss_pct_avg"], color="#c62828", lw=1, label="packet loss avg")
    ax.plot(t, m["packet_loss_pct_max"], color="#ef9a9a", lw=0.6, label="packet loss max")
    ax.set_ylabel("packet loss %")
    ax.set_ylim(bottom=0)
    latency = ax.twinx()
    latency.plot(t, m["latency_ms_avg"], color="#00695c", lw=1, label="latency avg")
    latency.plot(t, m["latency_ms_p95"], color="#80cbc4", lw=0.6, label="latency p95")
    latency.set_ylabel("latency ms")
    latency.set_ylim(bottom=0)
    _shade(ax, drops, day)
    _axes_style(ax, day)
    ax.set_title("Packet loss and latency", loc="left", fontsize=10)
    handles = ax.get_legend_handles_labels()
    more = latency.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.92, top=0.88, bottom=0.12)
    out["loss_latency"] = _png(fig)

    fig, ax = plt.subplots(figsize=(10, 2.4))
    # Share of each minute's samples per band, in 5-minute steps so the bands stay readable.
    bands = m[["good_samples", "fair_samples", "poor_samples"]].fillna(0).resample("5min").sum()
    total = bands.sum(axis=1).replace(0, np.nan)
    shares = bands.div(total, axis=0)
    ax.stackplot(
        _xs(pd.DatetimeIndex(shares.index)),
        *(shares[f"{q}_samples"].fillna(0) for q in QUALITY_COLORS),
        colors=list(QUALITY_COLORS.values()),
        labels=list(QUALITY_COLORS),
        step="post",
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of samples")
    _shade(ax, drops, day)
    _axes_style(ax, day)
    ax.set_title("Quality over time", loc="left", fontsize=10)
    ax.legend(loc="lower left", fontsize=8, ncols=3)
    fig.subplots_adjust(left=0.08, right=0.92, top=0.88, bottom=0.12)
    out["quality"] = _png(fig)
    return out


# -- HTML -----------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1280px;color:#222}
td{white-space:nowrap}td a{font-family:monospace}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;
text-align:right}th:first-child,td:first-child{text-align:left}img{max-width:100%;display:block;
margin:1em 0}.poor{color:#c62828}.note{color:#666;font-size:12px}
"""

LABELS = {
    "time_live_s": "Time live",
    "samples": "Samples",
    "bitrate_kbps_avg": "Bitrate avg (kbps)",
    "bitrate_kbps_p5": "Bitrate p5* (kbps)",
    "bitrate_kbps_p50": "Bitrate p50 (kbps)",
    "bitrate_kbps_p95": "Bitrate p95 (kbps)",
    "fps_avg": "FPS avg",
    "fps_min": "FPS min",
    "packet_loss_pct_avg": "Packet loss avg (%)",
    "packet_loss_pct_max": "Packet loss max (%)",
    "latency_ms_p50": "Latency p50* (ms)",
    "latency_ms_p95": "Latency p95 (ms)",
    "good_share": "Good",
    "fair_share": "Fair",
    "poor_share": "Poor",
    "alerts_packet_loss_high": "Packet-loss alerts",
    "alerts_fps_low": "Low-fps alerts",
    "drop_episodes": "Bitrate drops",
    "drop_seconds": "Time in drops",
}
APPROXIMATION_NOTE = (
    "* from 1-minute rollups: p5 of the per-minute bitrate medians, median of the per-minute "
    "latency means (weighted by samples)."
)


def fmt(field: str, value: Any) -> str:
    """A summary value for people."""
    if value is None:
        return "–"
    if field.endswith("_share"):
        return f"{100 * value:.1f} %"
    if field in ("time_live_s", "drop_seconds"):
        seconds = int(value)
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return html.escape(str(value))


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _episodes_table(title: str, rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    if not rows:
        return f"<h2>{title}</h2><p>None.</p>"
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h2>{title}</h2><table><tr>{head}</tr>{body}</table>"


def _clock(moment: Any) -> str:
    return "open" if pd.isna(moment) else pd.Timestamp(moment).strftime("%H:%M:%S")


def stream_page(
    summary: Mapping[str, Any], images: Mapping[str, str], alerts: pd.DataFrame, drops: pd.DataFrame
) -> str:
    """`<streamId>.html`: the summary, the three charts (embedded), the episodes."""
    stream, day = summary["stream_id"], summary["day"]
    rows = "".join(
        f"<tr><th>{label}</th><td>{fmt(field, summary[field])}</td></tr>"
        for field, label in LABELS.items()
    )
    pictures = "".join(
        f'<img alt="{html.escape(name)} chart" src="data:image/png;base64,{data}">'
        for name, data in images.items()
    )
    drop_rows = [
        (
            _clock(r["started_at"]),
            _clock(r["ended_at"]),
            f"{r['baseline_kbps']:,.0f}",
            f"{r['observed_kbps']:,.0f}",
            f"{r['drop_pct']:.0f} %",
        )
        for r in _records(drops)
    ]
    alert_rows = [
        (html.escape(r["type"]), _clock(r["raised_at"]), _clock(r["cleared_at"]), f"{r['value']:g}")
        for r in _records(alerts)
    ]
    body = (
        f'<p><a href="index.html">← all streams of {day}</a></p>'
        f"<h1>Stream {html.escape(stream)}</h1><p>{day} (UTC)</p>"
        f"<table>{rows}</table><p class=note>{APPROXIMATION_NOTE}</p>{pictures}"
        + _episodes_table(
            "Bitrate drops",
            drop_rows,
            ("Start", "End", "Baseline kbps", "Lowest kbps", "Drop"),
        )
        + _episodes_table("Alerts", alert_rows, ("Type", "Raised", "Cleared", "Value"))
    )
    return _page(f"Stream {stream} — {day}", body)


INDEX_COLUMNS = (
    "time_live_s",
    "samples",
    "bitrate_kbps_avg",
    "bitrate_kbps_p5",
    "fps_avg",
    "packet_loss_pct_avg",
    "latency_ms_p95",
    "good_share",
    "poor_share",
    "alerts_packet_loss_high",
    "alerts_fps_low",
    "drop_episodes",
)


def index_page(day: date, summaries: Iterable[Mapping[str, Any]]) -> str:
    """`index.html`: every stream of the day, worst first, linking to its page."""
    ordered = worst_first(summaries)
    head = "<th>Stream</th>" + "".join(f"<th>{LABELS[c]}</th>" for c in INDEX_COLUMNS)
    rows = []
    for s in ordered:
        stream = html.escape(s["stream_id"])
        css = ' class="poor"' if (s["poor_share"] or 0) >= 0.1 else ""
        cells = "".join(f"<td>{fmt(c, s[c])}</td>" for c in INDEX_COLUMNS)
        rows.append(f'<tr{css}><td><a href="{stream}.html">{stream}</a></td>{cells}</tr>')
    body = (
        f"<h1>Stream health — {day.isoformat()} (UTC)</h1>"
        f"<p>{len(ordered)} streams, worst first (time in poor quality, then time in bitrate "
        f"drops, then alerts). <a href=summary.csv>summary.csv</a></p>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table><p class=note>{APPROXIMATION_NOTE}</p>"
    )
    return _page(f"Stream health — {day.isoformat()}", body)
