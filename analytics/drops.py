"""Significant bitrate drops: a short-window median falling well below the trailing median.

A drop starts at a sample whose short-window median (default 30 s) is below `start_ratio` of the
baseline, the trailing median (default 5 min) of the samples before that short window, and only
when the baseline is at least `min_baseline_kbps`. The baseline is frozen when the drop starts: a
long drop would otherwise pull the trailing median down and "recover" on its own. The drop ends
at the first sample whose short median is back above `end_ratio` of the frozen baseline.

Silence is not a drop: a stream that stops reporting produces no samples, hence nothing to
compare. A pause longer than the short window ends an open drop at the last sample before it.

Detection is incremental: samples before `since` only feed the medians, episodes are decided for
samples after it, and an open drop carried over from the previous run continues. Running over
[a, c] gives the same episodes as running over [a, b] and then [b, c] with the open drops of the
first run (given `look_back(params)` of samples before each `since`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

EPISODE_COLUMNS = [
    "stream_id",
    "started_at",
    "ended_at",
    "baseline_kbps",
    "observed_kbps",
    "drop_pct",
]

# Medians of fewer samples than this are too noisy to start a drop on.
MIN_WINDOW_SAMPLES = 2
MIN_BASELINE_SAMPLES = 3


@dataclass(frozen=True)
class DropParams:
    window: timedelta = timedelta(seconds=30)
    baseline_window: timedelta = timedelta(minutes=5)
    start_ratio: float = 0.5
    end_ratio: float = 0.8
    min_baseline_kbps: float = 300.0

    @property
    def max_gap(self) -> timedelta:
        """A pause between samples longer than this means the stream went silent."""
        return self.window


class OpenDrop(NamedTuple):
    """A drop still open at the end of the previous run."""

    started_at: pd.Timestamp
    baseline_kbps: float
    observed_kbps: float


def look_back(params: DropParams) -> timedelta:
    """How much history before `since` a run needs for its medians to be complete."""
    return params.baseline_window + params.window + params.max_gap


def detect_drops(
    samples: pd.DataFrame,
    params: DropParams,
    *,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    open_drops: Mapping[Any, OpenDrop] | None = None,
) -> pd.DataFrame:
    """Drop episodes in `samples` (columns stream_id, time, bitrate_kbps), one row each.

    Returns EPISODE_COLUMNS for every drop that started after `since` or was open before it;
    `ended_at` is NaT while a drop is still open at `until` (default: the last sample).
    """
    open_drops = dict(open_drops or {})
    episodes: list[dict[str, Any]] = []
    data = samples.loc[samples["bitrate_kbps"].notna(), ["stream_id", "time", "bitrate_kbps"]]
    for stream_id, group in data.groupby("stream_id", sort=True):
        series = (
            group.drop_duplicates("time").set_index("time")["bitrate_kbps"].sort_index()
        ).astype(float)
        episodes.extend(
            _detect_stream(stream_id, series, params, since, until, open_drops.pop(stream_id, None))
        )
    # An open drop of a stream without any sample in reach went silent long ago; when exactly is
    # out of reach too, so it ends where it started rather than staying open forever.
    for stream_id, drop in open_drops.items():
        episodes.append(_episode(stream_id, drop, ended_at=drop.started_at))
    return pd.DataFrame(episodes, columns=EPISODE_COLUMNS)


def _episode(stream_id: Any, drop: OpenDrop, ended_at: pd.Timestamp | None) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "started_at": drop.started_at,
        "ended_at": pd.NaT if ended_at is None else ended_at,
        "baseline_kbps": drop.baseline_kbps,
        "observed_kbps": drop.observed_kbps,
        "drop_pct": 100.0 * (1.0 - drop.observed_kbps / drop.baseline_kbps),
    }


def _detect_stream(
    stream_id: Any,
    series: pd.Series,
    params: DropParams,
    since: pd.Timestamp | None,
    until: pd.Timestamp | None,
    current: OpenDrop | None,
) -> list[dict[str, Any]]:
    times = pd.DatetimeIndex(series.index)
    window, max_gap = pd.Timedelta(params.window), pd.Timedelta(params.max_gap)
    values = series.to_numpy()
    short = series.rolling(params.window).median().to_numpy()
    short_n = series.rolling(params.window).count().to_numpy()
    trailing = series.rolling(params.baseline_window).median().to_numpy()
    trailing_n = series.rolling(params.baseline_window).count().to_numpy()
    # The baseline at t is the trailing median at the last sample at or before t - window, so
    # the short window and the baseline window never share a sample; a sample from before a
    # pause is too old to compare against.
    before = np.asarray(times.searchsorted(times - window, side="right")) - 1
    has_base = before >= 0
    has_base[has_base] &= times[before[has_base]] >= times[has_base] - window - max_gap
    baseline = np.where(has_base, trailing[np.maximum(before, 0)], np.nan)
    baseline_n = np.where(has_base, trailing_n[np.maximum(before, 0)], 0)

    first = 0 if since is None else int(times.searchsorted(since, side="right"))
    if until is not None:
        values = values[: int(times.searchsorted(until, side="right"))]
    episodes: list[dict[str, Any]] = []
    previous = times[first - 1] if first > 0 else None
    if current is not None and previous is None:
        previous = current.started_at
    for i in range(first, len(values)):
        now = times[i]
        if current is not None and previous is not None and now - previous > params.max_gap:
            episodes.append(_episode(stream_id, current, ended_at=previous))
            current = None
        if current is not None:
            if short[i] > params.end_ratio * current.baseline_kbps:
                episodes.append(_episode(stream_id, current, ended_at=now))
                current = None
            elif short[i] < current.observed_kbps:
                current = current._replace(observed_kbps=float(short[i]))
        elif (
            baseline_n[i] >= MIN_BASELINE_SAMPLES
            and short_n[i] >= MIN_WINDOW_SAMPLES
            and baseline[i] >= params.min_baseline_kbps
            and short[i] < params.start_ratio * baseline[i]
        ):
            current = OpenDrop(now, float(baseline[i]), float(short[i]))
        previous = now
    if current is not None:
        end = until if until is not None else (times[len(values) - 1] if len(values) else None)
        silent = previous is not None and end is not None and end - previous > params.max_gap
        episodes.append(_episode(stream_id, current, ended_at=previous if silent else None))
    return episodes
