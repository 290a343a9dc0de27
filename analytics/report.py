"""Daily stream reports from rollups: the summary numbers, chart data and self-contained pages.

Inputs are a stream's day row (the `stream_stats_1d` columns), its 1-minute rows as column
arrays (`Minutes`: `t` in epoch seconds plus the `stream_stats_1m` columns), its alert episodes
and its drop episodes; nothing here reads a database.

Two numbers the rollups do not carry are approximated from the 1-minute buckets, and are named
so: `bitrate_kbps_p5` is the 5th percentile of the per-minute bitrate medians and
`latency_ms_p50` the median of the per-minute latency means, both weighted by each minute's
samples. Everything else is exact (the day rollup is computed from raw rows).

Pages are drawn in the reader's browser (analytics/pages.py), so writing one is serializing its
numbers: the charts open on the hours the stream was live and zoom down to single minutes.
"""

from __future__ import annotations

import csv
import html
import itertools
import math
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO

import numpy as np

from analytics import pages
from analytics.pages import QUALITY_BANDS, QUALITY_COLORS, Section
from analytics.weekly import week_name

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
    "advice_lower",
    "advice_raise",
    "viewer_views",
    "viewer_score",
    "viewer_rebuffer_pct",
    "viewer_startup_ms_p50",
    "viewer_failure_pct",
)
# The day's `viewer_experience_1d` columns a report shows: (column, label, unit, digits).
VIEWER_COLUMNS = (
    ("score", "Viewer score", "/ 100", 1),
    ("views", "Views", "views", 0),
    ("rebuffer_pct", "Rebuffering", "%", 2),
    ("stalls_per_minute", "Stalls per minute watched", "per min", 2),
    ("startup_ms_p50", "Startup p50", "ms", 0),
    ("startup_ms_p95", "Startup p95", "ms", 0),
    ("switches_per_view", "Rendition switches per view", "per view", 2),
    ("failure_pct", "Failed views", "%", 1),
    ("exit_before_start_pct", "Left before video start", "%", 1),
)
BUCKET_SECONDS = 60
# The quality chart and the index's sparklines use coarser steps, so bands stay readable.
QUALITY_STEP = 300
TREND_STEP = 900
# The 1-minute columns a report reads (sql/queries/reports.sql `report_minutes`), besides `t`.
MINUTE_COLUMNS = (
    "samples",
    "bitrate_kbps_avg",
    "bitrate_kbps_min",
    "bitrate_kbps_max",
    "bitrate_kbps_p50",
    "fps_avg",
    "packet_loss_pct_avg",
    "packet_loss_pct_max",
    "latency_ms_avg",
    "latency_ms_p95",
    "good_samples",
    "fair_samples",
    "poor_samples",
)
DROP_SHADE_NOTE = "Shaded: bitrate drops."

Minutes = Mapping[str, np.ndarray]
Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class StreamDay:
    """What a stream's day page is made of: its day rollup row, its minutes (column arrays) and
    the episodes of the day (`stream_alerts`, `bitrate_drops`, `stream_advice` rows) and its
    viewer experience (the `viewer_experience_1d` row, None when no viewer reported)."""

    stream_id: Any
    day: date
    daily: Mapping[str, Any]
    minutes: Minutes
    alerts: Rows = ()
    drops: Rows = ()
    advice: Rows = ()
    viewer: Mapping[str, Any] | None = None


MINUTES_WIDTH = 2 + len(MINUTE_COLUMNS)


def split_minutes(matrix: np.ndarray, streams: int) -> list[dict[str, np.ndarray]]:
    """Each stream's column arrays from a `report_minutes` matrix of `streams` streams (rows
    ordered by the stream's 1-based position, then time; columns position, `t`, MINUTE_COLUMNS)."""
    bounds = np.searchsorted(matrix[:, 0], np.arange(1, streams + 2), side="left")
    names = ("t", *MINUTE_COLUMNS)
    return [
        {name: matrix[a:b, i + 1] for i, name in enumerate(names)}
        for a, b in itertools.pairwise(bounds)
    ]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


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


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _episode_end(episode: Mapping[str, Any], key: str, day: date) -> datetime:
    """An episode's end, open ones counting to the end of the day."""
    _, end = day_bounds(day)
    return end if episode[key] is None else min(episode[key], end)


def overlap_seconds(episodes: Iterable[Mapping[str, Any]], day: date) -> float:
    """Seconds of the day covered by drop episodes (open ones count to the end of the day)."""
    start, _ = day_bounds(day)
    total = 0.0
    for row in episodes:
        begin = max(row["started_at"], start)
        total += max((_episode_end(row, "ended_at", day) - begin).total_seconds(), 0.0)
    return total


def trend(minutes: Minutes, day: date) -> dict[str, list[float | None]]:
    """Per TREND_STEP of the day: mean bitrate (weighted by samples) and share of poor samples,
    for the index's sparklines."""
    start, _ = day_bounds(day)
    slots = 86_400 // TREND_STEP
    slot = ((minutes["t"] - _epoch(start)) // TREND_STEP).astype(int)
    bitrate, samples = minutes["bitrate_kbps_avg"], minutes["samples"]
    known = ~np.isnan(bitrate)
    weight = np.bincount(slot[known], weights=samples[known], minlength=slots)
    total = np.bincount(slot[known], weights=(bitrate * samples)[known], minlength=slots)
    rated = sum(np.bincount(slot, minutes[f"{q}_samples"], slots) for q in QUALITY_BANDS)
    poor = np.bincount(slot, minutes["poor_samples"], slots)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "bitrate_kbps": pages.plain(np.where(weight > 0, total / weight, np.nan), 0),
            "poor_share": pages.plain(np.where(rated > 0, poor / rated, np.nan), 3),
        }


def summarize(d: StreamDay) -> dict[str, Any]:
    """The day's summary for one stream (FIELDS, plus `trend`), JSON-ready."""
    daily, minutes, viewer = d.daily, d.minutes, d.viewer
    actions = [a["action"] for a in d.advice]
    rated = sum(int(daily[f"{q}_samples"] or 0) for q in QUALITY_BANDS)
    live = minutes["samples"] > 0
    weights = minutes["samples"][live]
    alert_types = [a["type"] for a in d.alerts]
    return {
        "stream_id": str(d.stream_id),
        "day": d.day.isoformat(),
        "time_live_s": BUCKET_SECONDS * int(live.sum()),
        "samples": int(daily["samples"]),
        "bitrate_kbps_avg": _number(daily["bitrate_kbps_avg"]),
        "bitrate_kbps_p5": weighted_quantile(minutes["bitrate_kbps_p50"][live], weights, 0.05),
        "bitrate_kbps_p50": _number(daily["bitrate_kbps_p50"]),
        "bitrate_kbps_p95": _number(daily["bitrate_kbps_p95"]),
        "fps_avg": _number(daily["fps_avg"]),
        "fps_min": _number(daily["fps_min"]),
        "packet_loss_pct_avg": _number(daily["packet_loss_pct_avg"]),
        "packet_loss_pct_max": _number(daily["packet_loss_pct_max"]),
        "latency_ms_p50": weighted_quantile(minutes["latency_ms_avg"][live], weights, 0.5),
        "latency_ms_p95": _number(daily["latency_ms_p95"]),
        "good_share": int(daily["good_samples"]) / rated if rated else None,
        "fair_share": int(daily["fair_samples"]) / rated if rated else None,
        "poor_share": int(daily["poor_samples"]) / rated if rated else None,
        "alerts_packet_loss_high": alert_types.count("packet_loss_high"),
        "alerts_fps_low": alert_types.count("fps_low"),
        "drop_episodes": len(d.drops),
        "drop_seconds": overlap_seconds(d.drops, d.day),
        "advice_lower": actions.count("lower"),
        "advice_raise": actions.count("raise"),
        "viewer_views": int(viewer["views"]) if viewer else 0,
        "viewer_score": _number(viewer["score"]) if viewer else None,
        "viewer_rebuffer_pct": _number(viewer["rebuffer_pct"]) if viewer else None,
        "viewer_startup_ms_p50": _number(viewer["startup_ms_p50"]) if viewer else None,
        "viewer_failure_pct": _number(viewer["failure_pct"]) if viewer else None,
        "trend": trend(minutes, d.day),
    }


def shares(summary: Mapping[str, Any]) -> dict[str, float | None]:
    return {q: summary[f"{q}_share"] for q in QUALITY_BANDS}


# -- charts ---------------------------------------------------------------------------------


def live_range(minutes: Minutes, day: date) -> list[float]:
    """From the hour of the first live minute to the end of the hour of the last one."""
    start, end = (_epoch(b) for b in day_bounds(day))
    if not len(minutes["t"]):
        return [start, end]
    first = math.floor(minutes["t"].min() / 3600) * 3600
    last = math.ceil((minutes["t"].max() + BUCKET_SECONDS) / 3600) * 3600
    return [max(first, start), min(last, end)]


def _with_gaps(columns: Mapping[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    at = pages.gaps(columns["t"], step)
    out = {k: np.insert(v.astype(float), at, np.nan) for k, v in columns.items()}
    out["t"][at] = columns["t"][at - 1] + step
    return out


def _quality_steps(minutes: Minutes) -> dict[str, np.ndarray]:
    """Share (%) of each band per QUALITY_STEP with samples."""
    step = (minutes["t"] // QUALITY_STEP) * QUALITY_STEP
    if not len(step):
        return {"t": step} | {q: step for q in QUALITY_BANDS}
    starts, first = np.unique(step, return_index=True)
    counts = {q: np.add.reduceat(minutes[f"{q}_samples"], first) for q in QUALITY_BANDS}
    total = sum(counts.values())
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"t": starts} | {
            q: np.where(total > 0, 100 * counts[q] / total, np.nan) for q in QUALITY_BANDS
        }


def advised_bitrate(minutes: Minutes, advice: Rows) -> np.ndarray:
    """Per minute, the target bitrate of the latest advice issued by its end (NaN before any)."""
    if not advice:
        return np.full(len(minutes["t"]), np.nan)
    issued = np.array([a["issued_at"].timestamp() for a in advice])
    targets = np.array([float(a["target"]["bitrate"]) for a in advice] + [np.nan])
    latest = np.searchsorted(issued, minutes["t"] + BUCKET_SECONDS, side="left") - 1
    return targets[np.where(latest >= 0, latest, len(advice))]


def charts(d: StreamDay) -> dict[str, dict[str, Any]]:
    """The three chart specs: bitrate and fps (and the advised bitrate, if any advice), loss and
    latency, quality; drops shaded."""
    minutes, drops, day = d.minutes, d.drops, d.day
    m = _with_gaps(dict(minutes) | {"advised": advised_bitrate(minutes, d.advice)}, BUCKET_SECONDS)
    shade = [
        [_epoch(max(d["started_at"], day_bounds(day)[0])), _epoch(_episode_end(d, "ended_at", day))]
        for d in drops
    ]
    x = pages.values(m["t"], 0)
    bitrate = pages.chart(
        x,
        [
            pages.series("bitrate avg", m["bitrate_kbps_avg"], unit="kbps", color="#0d47a1",
                         scale="kbps", width=1.8),
            pages.series("bitrate max", m["bitrate_kbps_max"], unit="kbps", color="#90caf9",
                         scale="kbps", width=0.6),
            pages.series("bitrate min", m["bitrate_kbps_min"], unit="kbps", color="#90caf9",
                         scale="kbps", width=0.6),
            pages.series("fps avg", m["fps_avg"], unit="fps", color="#8e24aa", scale="fps",
                         digits=2, width=1.2),
            *([pages.series("advised bitrate", m["advised"], unit="kbps", color="#e65100",
                            scale="kbps", digits=0, width=1.6, dash=[6, 4])] if d.advice else []),
        ],
        [pages.axis("kbps", "bitrate (kbps)"), pages.axis("fps", "frames/s", side="right")],
        bands=[[2, 3, "rgba(144, 202, 249, 0.35)"]],
        shade=shade,
        height=240,
    )  # fmt: skip
    loss = pages.chart(
        x,
        [
            pages.series("packet loss avg", m["packet_loss_pct_avg"], unit="%", color="#c62828",
                         scale="pct", digits=2, width=1.6),
            pages.series("packet loss max", m["packet_loss_pct_max"], unit="%", color="#ef9a9a",
                         scale="pct", digits=2, width=0.8),
            pages.series("latency avg", m["latency_ms_avg"], unit="ms", color="#00695c",
                         scale="ms", width=1.6),
            pages.series("latency p95", m["latency_ms_p95"], unit="ms", color="#80cbc4",
                         scale="ms", width=0.8),
        ],
        [pages.axis("pct", "packet loss (%)"), pages.axis("ms", "latency (ms)", side="right")],
        shade=shade,
        height=240,
    )  # fmt: skip
    q = _with_gaps(_quality_steps(minutes), QUALITY_STEP)
    tops = pages.stacked({band: q[band] for band in QUALITY_BANDS})
    quality = pages.chart(
        pages.values(q["t"], 0),
        [
            pages.series(band, tops[band], unit="%", color=QUALITY_COLORS[band], scale="share",
                         display=pages.values(q[band], 1), width=0)
            for band in QUALITY_BANDS
        ],
        [pages.axis("share", "share of samples (%)", top=100)],
        bars=True,
        shade=shade,
        height=170,
    )  # fmt: skip
    return {"bitrate_fps": bitrate, "loss_latency": loss, "quality": quality}


# -- HTML -----------------------------------------------------------------------------------

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
    "advice_lower": "Advice to lower",
    "advice_raise": "Advice to raise",
    "viewer_views": "Views",
    "viewer_score": "Viewer score",
    "viewer_rebuffer_pct": "Rebuffering (%)",
    "viewer_startup_ms_p50": "Startup p50 (ms)",
    "viewer_failure_pct": "Failed views (%)",
}
APPROXIMATION_NOTE = (
    "* from 1-minute rollups: p5 of the per-minute bitrate medians, median of the per-minute "
    "latency means (weighted by samples)."
)
BAND_NOTE = (
    "Quality bands per sample: good (packet loss < 1 %, latency < 100 ms, fps ≥ 25), poor (loss "
    "> 3 %, latency > 200 ms or fps < 20), else fair. A stream's day is poor when at least 10 % "
    "of its samples were poor, fair when at least 10 % were fair or poor, else good."
)


def fmt(field: str, value: Any) -> str:
    """A summary value for people."""
    if value is None:
        return "–"
    if field.endswith("_share"):
        return pages.fmt_share(value)
    if field in ("time_live_s", "drop_seconds"):
        return pages.fmt_duration(value)
    if isinstance(value, float):
        return pages.fmt_number(value)
    return html.escape(str(value))


def _clock(moment: datetime | None) -> str:
    return "open" if moment is None else moment.astimezone(UTC).strftime("%H:%M:%S")


def dashboard_link(dashboard_url: str, stream_id: str) -> str:
    """The live dashboard's page of a stream."""
    return f"{dashboard_url}#stream={stream_id}"


def _glance(summary: Mapping[str, Any]) -> Section:
    band = pages.band_of(shares(summary))
    items = [
        ("Time live", pages.fmt_duration(summary["time_live_s"]), ""),
        ("Bitrate median", pages.fmt_number(summary["bitrate_kbps_p50"], 0), "kbps"),
        ("Frame rate avg", pages.fmt_number(summary["fps_avg"]), "fps"),
        ("Packet loss avg", pages.fmt_number(summary["packet_loss_pct_avg"], 2), "%"),
        ("Latency p95", pages.fmt_number(summary["latency_ms_p95"], 0), "ms"),
        ("Bitrate drops", str(summary["drop_episodes"]),
         pages.fmt_duration(summary["drop_seconds"]) if summary["drop_episodes"] else ""),
        ("Alerts", str(summary["alerts_packet_loss_high"] + summary["alerts_fps_low"]), ""),
        ("Quality advice", f"{summary['advice_lower']} ↓ {summary['advice_raise']} ↑",
         "lower / raise"),
    ]  # fmt: skip
    quality = (
        f"<div class=card><div class=label>Quality</div><div class=value>"
        f"{pages.band_badge(band)}</div>{pages.shares_bar(shares(summary))}</div>"
    )
    body = pages.cards(items).replace("<div class=cards>", f"<div class=cards>{quality}", 1)
    return Section("glance", "At a glance", body + f"<p class=note>{BAND_NOTE}</p>")


def _charts_section(specs: Mapping[str, Mapping[str, Any]]) -> Section:
    titles = {
        "bitrate_fps": "Bitrate (kbps, line: mean, band: min–max per minute) and frame rate",
        "loss_latency": "Packet loss (%) and latency (ms)",
        "quality": "Quality band: share of samples per 5 minutes",
    }
    body = pages.toolbar(
        "Drag across a chart to zoom in (all charts follow), double-click or “Live hours” to go "
        "back, ◀ ▶ or the arrow keys to pan; hover for the values of a minute. Times in UTC. "
        + DROP_SHADE_NOTE,
        {"live": "Live hours", "all": "Whole day"},
    ) + "".join(pages.chart_slot(k, titles[k]) for k in specs)
    return Section("charts", "Over the day", body, specs)


def _figures(summary: Mapping[str, Any]) -> Section:
    rows = "".join(
        f"<tr><th>{label}</th><td>{fmt(field, summary[field])}</td></tr>"
        for field, label in LABELS.items()
    )
    body = f"<table class=facts>{rows}</table><p class=note>{APPROXIMATION_NOTE}</p>"
    return Section("figures", "All figures of the day", body)


def _episodes(
    alerts: Sequence[Mapping[str, Any]], drops: Sequence[Mapping[str, Any]]
) -> list[Section]:
    drop_rows = [
        (
            _clock(r["started_at"]),
            _clock(r["ended_at"]),
            f"{r['baseline_kbps']:,.0f} kbps",
            f"{r['observed_kbps']:,.0f} kbps",
            f"{r['drop_pct']:.0f} %",
        )
        for r in drops
    ]
    alert_rows = [
        (html.escape(r["type"]), _clock(r["raised_at"]), _clock(r["cleared_at"]), f"{r['value']:g}")
        for r in alerts
    ]
    return [
        Section(
            "drops",
            "Bitrate drops",
            pages.table(("Start (UTC)", "End", "Baseline", "Lowest", "Drop"), drop_rows),
        ),
        Section(
            "alerts",
            "Alerts",
            pages.table(("Type", "Raised (UTC)", "Cleared", "Value"), alert_rows),
        ),
    ]


REASONS = {
    "packet_loss": "packet loss",
    "latency": "latency building up",
    "headroom": "too close to the upload bandwidth",
    "encoder_overload": "frame rate falling (encoder or CPU overload)",
    "recovered": "link recovered",
}


def _target(target: Mapping[str, Any]) -> str:
    parts = [f"{float(target['bitrate']):,.0f} kbps"]
    if target.get("width") and target.get("height"):
        parts.append(f"{target['width']}×{target['height']}")
    if target.get("fps"):
        parts.append(f"{float(target['fps']):g} fps")
    return " · ".join(parts)


def _advice(advice: Rows) -> Section:
    rows = [
        (
            _clock(a["issued_at"]),
            f'<span class="band {"poor" if a["action"] == "lower" else "good"}">'
            f"{'lower ↓' if a['action'] == 'lower' else 'raise ↑'}</span>",
            html.escape(_target(a["target"])),
            html.escape(", ".join(REASONS.get(r, r) for r in a["reasons"])),
            html.escape(a["severity"]),
        )
        for a in advice
    ]
    note = (
        "<p class=note>What the server advised the streamer to send at (the dashed orange line "
        "on the bitrate chart); see docs/protocol.md, “Quality advice”.</p>"
    )
    table = pages.table(("Issued (UTC)", "Action", "Target", "Reasons", "Severity"), rows)
    return Section("advice", "Quality advice", (note if rows else "") + table)


def _viewers(viewer: Mapping[str, Any] | None) -> Section:
    if not viewer or not viewer["views"]:
        body = "<p class=note>No viewer reported playback this day.</p>"
    else:
        rows = [
            (label, html.escape(f"{pages.fmt_number(_number(viewer[column]), digits)} {unit}"))
            for column, label, unit, digits in VIEWER_COLUMNS
        ]
        body = pages.table(("Viewer experience", "Day"), rows) + (
            "<p class=note>From the viewers' players (<code>stream:viewer:stats</code>), as in "
            "<code>viewer_experience_1d</code>; the score and each column are defined in "
            "docs/analysts.md.</p>"
        )
    return Section("viewers", "Viewer experience", body)


def stream_page(
    summary: Mapping[str, Any],
    specs: Mapping[str, Mapping[str, Any]],
    time_range: Mapping[str, Sequence[float]],
    d: StreamDay,
    *,
    dashboard_url: str,
) -> str:
    """`<streamId>.html`: key figures, the interactive charts, every figure, then the day's
    drops, alerts and quality advice. A new part of the page is one more `Section` here."""
    stream, day = summary["stream_id"], summary["day"]
    week = week_name(date.fromisoformat(day))
    nav = (
        f'<a href="index.html">← All streams of {day}</a>'
        f'<a href="../{week}/index.html">Week {week}</a>'
        f'<a href="{html.escape(dashboard_link(dashboard_url, stream))}">Live dashboard ↗</a>'
    )
    begin, finish = (datetime.fromtimestamp(t, UTC) for t in time_range["live"])
    hours = f"{begin:%H:%M}–{'24:00' if finish.date() > begin.date() else f'{finish:%H:%M}'}"
    sections = [
        _glance(summary),
        _charts_section(specs),
        _figures(summary),
        *_episodes(d.alerts, d.drops),
        _advice(d.advice),
        _viewers(d.viewer),
    ]
    return pages.page(
        f"Stream {stream} — {day}",
        nav=nav,
        heading=f"Stream <code>{html.escape(stream)}</code>",
        subtitle=f"{day} (UTC) · live within {hours} UTC",
        sections=sections,
        time_range=time_range,
    )


def render_stream(d: StreamDay, *, dashboard_url: str) -> tuple[dict[str, Any], str]:
    """A stream's summary and page."""
    summary = summarize(d)
    time_range = {"live": live_range(d.minutes, d.day)}
    time_range["all"] = [_epoch(b) for b in day_bounds(d.day)]
    page = stream_page(summary, charts(d), time_range, d, dashboard_url=dashboard_url)
    return summary, page


INDEX_COLUMNS = (
    "time_live_s",
    "bitrate_kbps_avg",
    "bitrate_kbps_p5",
    "fps_avg",
    "packet_loss_pct_avg",
    "latency_ms_p95",
    "alerts_packet_loss_high",
    "alerts_fps_low",
    "drop_episodes",
)


INDEX_HEAD = (
    "Stream",
    "Quality",
    "Shares",
    "Bitrate per 15 min (red: ≥ 10 % poor)",
    *(LABELS[c] for c in INDEX_COLUMNS),
    "Live",
)
# Where the index's rows go in its page (no page text contains a NUL).
_ROWS = "\0rows\0"


def _index_row(s: Mapping[str, Any], dashboard_url: str) -> tuple[str, ...]:
    stream = html.escape(s["stream_id"])
    live = html.escape(dashboard_link(dashboard_url, s["stream_id"]))
    spark = s.get("trend") or {}
    return (
        f'<a class=stream href="{stream}.html"><code>{stream}</code></a>',
        pages.band_badge(pages.band_of(shares(s))),
        pages.shares_bar(shares(s)),
        pages.sparkline(
            spark.get("bitrate_kbps", []),
            spark.get("poor_share", []),
            title="mean bitrate per 15 minutes, 00:00–24:00 UTC",
        ),
        *(fmt(c, s[c]) for c in INDEX_COLUMNS),
        f'<a class=live href="{live}">dashboard ↗</a>',
    )


class DayIndex:
    """A day's `summary.csv` and `index.html` (every stream, with a sparkline of its day, linking
    to its page and to its live dashboard page), written a stream at a time.

    `add` every summary worst first — most time in poor quality, then most time in bitrate
    drops, then most alerts: the order of the `report_summaries` query —, then `write_index`.
    Only the platform's totals are kept: its CSV rows go straight to `csv_out` and its index
    rows to `rows` (a scratch file) until the totals shown above them are known.
    """

    def __init__(self, day: date, csv_out: TextIO, rows: TextIO, *, dashboard_url: str) -> None:
        self.day = day
        self.dashboard_url = dashboard_url
        self._csv = csv.DictWriter(
            csv_out, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n"
        )
        self._csv.writeheader()
        self._rows = rows
        self._totals: Counter[str] = Counter()

    def add(self, summary: Mapping[str, Any]) -> None:
        """The next stream, in the order above."""
        self._csv.writerow({k: "" if summary.get(k) is None else summary[k] for k in FIELDS})
        self._rows.write(pages.table_row(_index_row(summary, self.dashboard_url)))
        band = pages.band_of(shares(summary))
        self._totals.update(
            streams=1,
            time_live_s=summary["time_live_s"],
            samples=summary["samples"],
            drop_episodes=summary["drop_episodes"],
            **({band: 1} if band else {}),
        )

    def write_index(self, out: TextIO) -> None:
        """`index.html` of the streams added."""
        before, _, after = self._page().partition(_ROWS)
        out.write(before)
        self._rows.seek(0)
        shutil.copyfileobj(self._rows, out)
        out.write(after)

    def _page(self) -> str:
        """The page, with _ROWS where the rows go (when there are any)."""
        totals, day = self._totals, self.day.isoformat()
        items = [
            ("Streams", f"{totals['streams']:,}", ""),
            *((f"Streams {b}", f"{totals[b]:,}", "") for b in QUALITY_BANDS),
            ("Hours live", pages.fmt_number(totals["time_live_s"] / 3600), "h"),
            ("Samples", f"{totals['samples']:,}", ""),
            ("Bitrate drops", f"{totals['drop_episodes']:,}", ""),
        ]
        platform = Section("platform", "The platform that day", pages.cards(items))
        table = pages.table_around(
            INDEX_HEAD, _ROWS if totals["streams"] else "", empty="No stream reported that day."
        )
        streams = Section(
            "streams",
            "Streams, worst first",
            "<p class=note>Ordered by time in poor quality, then time in bitrate drops, then "
            f"alerts. {BAND_NOTE}</p>{table}<p class=note>{APPROXIMATION_NOTE}</p>",
        )
        week = week_name(self.day)
        nav = f'<a href="../{week}/index.html">Week {week}</a><a href="summary.csv">summary.csv</a>'
        return pages.page(
            f"Stream health — {day}",
            nav=nav,
            heading=f"Stream health — {day}",
            subtitle=f"{totals['streams']:,} streams, UTC day",
            sections=[platform, streams],
        )
