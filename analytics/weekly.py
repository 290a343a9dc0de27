"""Weekly reports from the day rollups: per stream and for the platform, with the week before.

Input: one row per stream (sql/queries/reports.sql `report_week_streams`) holding its
`stream_stats_1d` rows of 14 days as arrays: the ISO week before the reported one, then that
week. Sums are exact; means over days are weighted by each day's samples, which equals the mean
over the samples when clients send every metric (docs/analysts.md). Percentiles cannot be
combined across days, so a week has none.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterable, Mapping, Sequence, Set
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from analytics import pages
from analytics.pages import QUALITY_BANDS, QUALITY_COLORS, Section

DAY_SECONDS = 86_400
MEANS = ("bitrate_kbps_avg", "fps_avg", "packet_loss_pct_avg")
FIELDS = (
    "stream_id",
    "week",
    "days_live",
    "samples",
    "bitrate_kbps_avg",
    "fps_avg",
    "packet_loss_pct_avg",
    "good_share",
    "fair_share",
    "poor_share",
    "drop_episodes",
    "alerts",
    "previous_samples",
    "previous_bitrate_kbps_avg",
    "previous_poor_share",
)
PLATFORM_FIELDS = (
    "day",
    "streams",
    "samples",
    "bitrate_kbps_avg",
    "good_share",
    "fair_share",
    "poor_share",
)


def week_start(name: str) -> date:
    """The Monday of an ISO week named `2026-W10`; a clear error for anything else."""
    try:
        year, week = name.split("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    except ValueError:
        raise ValueError(f"not an ISO week like 2026-W10: {name!r}") from None


def week_name(day: date) -> str:
    """The ISO week a day belongs to, as its weekly folder is named: `2026-W10`."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _totals(days: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, Any]:
    """Sums and sample-weighted means over the days selected by `keep`."""
    samples = days["samples"][keep]
    out: dict[str, Any] = {"days_live": int(keep.sum()), "samples": int(samples.sum())}
    for name in MEANS:
        v = days[name][keep]
        known = ~np.isnan(v)
        weight = samples[known].sum()
        out[name] = float((v[known] * samples[known]).sum() / weight) if weight else None
    rated = sum(days[f"{q}_samples"][keep].sum() for q in QUALITY_BANDS)
    for q in QUALITY_BANDS:
        out[f"{q}_share"] = float(days[f"{q}_samples"][keep].sum() / rated) if rated else None
    return out


def summarize_stream(row: Mapping[str, Any], monday: date) -> dict[str, Any] | None:
    """A stream's week (None when it had no data that week), its days and the week before."""
    days = {k: np.asarray(row[k], dtype=float) for k in ("day", "samples", *MEANS)}
    days |= {f"{q}_samples": np.asarray(row[f"{q}_samples"], dtype=float) for q in QUALITY_BANDS}
    start = _epoch(monday)
    this = days["day"] >= start
    if not this.any():
        return None
    week, before = _totals(days, this), _totals(days, ~this)
    slot = ((days["day"][this] - start) // DAY_SECONDS).astype(int)
    daily_bitrate = np.full(7, np.nan)
    daily_bitrate[slot] = days["bitrate_kbps_avg"][this]
    daily_poor = np.full(7, np.nan)
    rated = sum(days[f"{q}_samples"][this] for q in QUALITY_BANDS)
    with np.errstate(invalid="ignore", divide="ignore"):
        daily_poor[slot] = np.where(rated > 0, days["poor_samples"][this] / rated, np.nan)
    return {
        "stream_id": str(row["stream_id"]),
        "week": week_name(monday),
        **week,
        "drop_episodes": int(row["drop_episodes"]),
        "alerts": int(row["alerts"]),
        "previous_samples": before["samples"],
        "previous_bitrate_kbps_avg": before["bitrate_kbps_avg"],
        "previous_poor_share": before["poor_share"],
        "daily": {
            "bitrate_kbps": pages.plain(daily_bitrate, 0),
            "poor_share": pages.plain(daily_poor, 3),
            "live": [bool(v) for v in np.isin(np.arange(7), slot)],
        },
    }


def platform(rows: Iterable[Mapping[str, Any]], monday: date) -> list[dict[str, Any]]:
    """Per day of the 14: streams with data, samples, sample-weighted bitrate, band shares."""
    start = _epoch(monday) - 7 * DAY_SECONDS
    sums = np.zeros((14, 6))  # streams, samples, bitrate × samples, its weight, good… poor
    bands = np.zeros((14, 3))
    for row in rows:
        slot = ((np.asarray(row["day"]) - start) // DAY_SECONDS).astype(int)
        samples = np.asarray(row["samples"], dtype=float)
        bitrate = np.asarray(row["bitrate_kbps_avg"], dtype=float)
        known = ~np.isnan(bitrate)
        np.add.at(sums[:, 0], slot, 1)
        np.add.at(sums[:, 1], slot, samples)
        np.add.at(sums[:, 2], slot[known], (bitrate * samples)[known])
        np.add.at(sums[:, 3], slot[known], samples[known])
        for i, q in enumerate(QUALITY_BANDS):
            np.add.at(bands[:, i], slot, np.asarray(row[f"{q}_samples"], dtype=float))
    out = []
    for i in range(14):
        rated = bands[i].sum()
        out.append(
            {
                "day": (monday + timedelta(days=i - 7)).isoformat(),
                "streams": int(sums[i, 0]),
                "samples": int(sums[i, 1]),
                "bitrate_kbps_avg": float(sums[i, 2] / sums[i, 3]) if sums[i, 3] else None,
                **{
                    f"{q}_share": float(bands[i, j] / rated) if rated else None
                    for j, q in enumerate(QUALITY_BANDS)
                },
            }
        )
    return out


def shares(summary: Mapping[str, Any]) -> dict[str, float | None]:
    return {q: summary[f"{q}_share"] for q in QUALITY_BANDS}


def worst_first(summaries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Largest share of poor samples first, then most drops, then most alerts."""
    return sorted(
        summaries,
        key=lambda s: (
            -(s["poor_share"] or 0.0),
            -s["drop_episodes"],
            -s["alerts"],
            s["stream_id"],
        ),
    )


def _csv(fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return out.getvalue()


def summary_csv(summaries: Iterable[Mapping[str, Any]]) -> str:
    """`summary.csv` of a week: one row per stream, FIELDS as columns, worst first."""
    return _csv(FIELDS, worst_first(summaries))


def platform_csv(days: Iterable[Mapping[str, Any]]) -> str:
    """`platform.csv` of a week: one row per day of the week, PLATFORM_FIELDS as columns."""
    return _csv(PLATFORM_FIELDS, days)


# -- HTML -----------------------------------------------------------------------------------


def _change(now: float | None, before: float | None, *, points: bool = False) -> str:
    """A change against the week before: percentage points for shares, else percent."""
    if now is None or before is None or (not points and before == 0):
        return "–"
    delta = 100 * (now - before) if points else 100 * (now / before - 1)
    unit = " pp" if points else " %"
    return f"{delta:+.1f}{unit}"


def _platform_section(
    summaries: Sequence[Mapping[str, Any]], days: Sequence[Mapping[str, Any]], monday: date
) -> Section:
    this, before = days[7:], days[:7]

    def total(rows: Sequence[Mapping[str, Any]], key: str) -> int:
        return sum(r[key] for r in rows)

    def weighted(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
        pairs = [(r[key], r["samples"]) for r in rows if r[key] is not None]
        weight = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / weight if weight else None

    poor, poor_before = weighted(this, "poor_share"), weighted(before, "poor_share")
    bitrate = weighted(this, "bitrate_kbps_avg")
    bitrate_before = weighted(before, "bitrate_kbps_avg")
    items = [
        ("Streams", f"{len(summaries):,}", ""),
        ("Samples", f"{total(this, 'samples'):,}", "",
         _change(total(this, "samples"), total(before, "samples")) + " vs week before"),
        ("Poor samples", pages.fmt_share(poor), "",
         _change(poor, poor_before, points=True) + " vs week before"),
        ("Bitrate mean", pages.fmt_number(bitrate, 0), "kbps",
         _change(bitrate, bitrate_before) + " vs week before"),
        ("Bitrate drops", f"{sum(s['drop_episodes'] for s in summaries):,}", ""),
        ("Alerts", f"{sum(s['alerts'] for s in summaries):,}", ""),
    ]  # fmt: skip
    x = [_epoch(monday + timedelta(days=i)) for i in range(7)]

    def column(key: str, scale: float = 1.0) -> np.ndarray:
        return np.array([np.nan if r[key] is None else scale * r[key] for r in this])

    share = {q: column(f"{q}_share", 100) for q in QUALITY_BANDS}
    tops = pages.stacked(share)
    # fmt: off
    charts = {
        "week_quality": pages.chart(
            x,
            [
                pages.series(q, tops[q], unit="%", color=QUALITY_COLORS[q], scale="share",
                             display=pages.values(share[q], 1), width=0)
                for q in QUALITY_BANDS
            ],
            [pages.axis("share", "share of samples (%)", top=100)],
            bars=True,
            height=200,
        ),
        "week_streams": pages.chart(
            x,
            [
                pages.series("streams", column("streams"), unit="", color="#6a1b9a",
                             scale="streams", digits=0),
                pages.series("bitrate mean", column("bitrate_kbps_avg"), unit="kbps",
                             color="#0d47a1", scale="kbps", digits=0),
            ],
            [pages.axis("streams", "streams with data"),
             pages.axis("kbps", "bitrate (kbps)", side="right")],
            points=True,
            height=220,
        ),
    }
    # fmt: on
    body = (
        pages.cards(items)
        + pages.toolbar(
            "Drag across a chart to zoom in, double-click or “Whole week” to go back; hover "
            "for a day's values.",
            {"all": "Whole week"},
        )
        + pages.chart_slot("week_quality", "Quality band: share of the day's samples")
        + pages.chart_slot("week_streams", "Streams with data and their mean bitrate, per day")
    )
    return Section("platform", "The platform this week", body, charts)


def _days_links(summary: Mapping[str, Any], monday: date, folders: Set[str]) -> str:
    links = []
    for i, live in enumerate(summary["daily"]["live"]):
        day = monday + timedelta(days=i)
        letter = day.strftime("%a")[:2]
        stream = html.escape(summary["stream_id"])
        links.append(
            f'<a href="../{day.isoformat()}/{stream}.html" title="{day.isoformat()}">{letter}</a>'
            if live and day.isoformat() in folders
            else f'<span class=note title="no day page">{letter}</span>'
        )
    return " ".join(links)


def week_page(
    monday: date,
    summaries: Iterable[Mapping[str, Any]],
    days: Sequence[Mapping[str, Any]],
    *,
    dashboard_url: str,
    folders: Set[str] = frozenset(),
) -> str:
    """`YYYY-Www/index.html`: the platform's week day by day, then every stream, worst first,
    with its week, its change against the week before and a line of its days.

    `folders` names the report folders that exist (days and weeks): only those are linked.
    """
    ordered = worst_first(summaries)
    name = week_name(monday)
    rows = []
    for s in ordered:
        stream = html.escape(s["stream_id"])
        rows.append(
            (
                f"<code>{stream}</code>",
                pages.band_badge(pages.band_of(shares(s))),
                pages.shares_bar(shares(s)),
                pages.fmt_share(s["poor_share"]),
                _change(s["poor_share"], s["previous_poor_share"], points=True),
                pages.sparkline(
                    s["daily"]["bitrate_kbps"],
                    s["daily"]["poor_share"],
                    width=110,
                    title="mean bitrate per day, Monday to Sunday",
                ),
                pages.fmt_number(s["bitrate_kbps_avg"], 0),
                _change(s["bitrate_kbps_avg"], s["previous_bitrate_kbps_avg"]),
                str(s["days_live"]),
                f"{s['samples']:,}",
                str(s["drop_episodes"]),
                str(s["alerts"]),
                _days_links(s, monday, folders),
                f'<a href="{html.escape(dashboard_url)}#stream={stream}">dashboard ↗</a>',
            )
        )
    head = (
        "Stream", "Quality", "Shares", "Poor", "Poor vs week before", "Bitrate per day",
        "Bitrate mean (kbps)", "Bitrate vs week before", "Days live", "Samples",
        "Bitrate drops", "Alerts", "Day pages", "Live",
    )  # fmt: skip
    streams = Section(
        "streams",
        "Streams, worst first",
        "<p class=note>Ordered by share of poor samples, then bitrate drops, then alerts; "
        "changes against the ISO week before (pp: percentage points). Means are weighted by "
        "samples. Red ticks under a sparkline: days with at least 10 % poor samples.</p>"
        + pages.table(head, rows, empty="No stream reported that week."),
    )
    first, last = monday, monday + timedelta(days=6)
    previous = week_name(monday - timedelta(days=7))
    following = week_name(monday + timedelta(days=7))
    nav = [f'<a href="../{previous}/index.html">← {previous}</a>'] if previous in folders else []
    nav += [
        f'<a href="../{d["day"]}/index.html">{date.fromisoformat(d["day"]):%a %d}</a>'
        for d in days[7:]
        if d["day"] in folders
    ]
    if following in folders:
        nav.append(f'<a href="../{following}/index.html">{following} →</a>')
    nav += ['<a href="summary.csv">summary.csv</a>', '<a href="platform.csv">platform.csv</a>']
    return pages.page(
        f"Stream health — week {name}",
        nav="".join(nav),
        heading=f"Stream health — week {name}",
        subtitle=f"{first.isoformat()} to {last.isoformat()} (UTC days), "
        f"compared with the week before",
        sections=[_platform_section(ordered, days, monday), streams],
        time_range={"live": [_epoch(first), _epoch(last) + DAY_SECONDS]}
        | {"all": [_epoch(first), _epoch(last) + DAY_SECONDS]},
        day_axis=True,
    )
