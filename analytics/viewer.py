"""Viewer experience: the score of one view, and the aggregates analysts read (docs/analysts.md).

The score follows the shape of Mux Data's published viewer experience scores:
- startup: `8 / (8 + startup seconds)` — 100 at once, 80 at 2 s, 50 at 8 s, falling slowly after;
- smoothness: the mean of `1 / sqrt(1 + (stalls / 2)^2)` (one short stall is barely noticed, the
  score falls fast from 2 to 4) and `exp(-10 * rebuffer fraction)` (1 % of the time stalled
  already costs ~10 points);
- a failed playback scores 0.
A view's score is `100 * startup * smoothness` (both must be good), over what the view did in the
bucket being scored. A view that neither watched nor failed in the bucket (still starting, paused,
exited before the first frame) is not scored, as Mux leaves exits before video start out.

The rollups compute the same formula in SQL (`viewer_view_score` in
sql/idempotent/030_viewer_experience.sql); tests/integration/test_viewer_rollups.py checks that
the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# Startup time at which the startup part of the score is one half.
STARTUP_HALF_SECONDS = 8.0
# Stall count at which the count part of smoothness is 1/sqrt(2) (~71 %).
STALLS_SCALE = 2.0
# Decay of the rebuffer-time part of smoothness per unit of rebuffer fraction.
REBUFFER_DECAY = 10.0


def startup_score(startup_ms: float | None) -> float:
    """0–1 from the startup time (ms); 1 when the view did not start in the scored bucket."""
    if startup_ms is None:
        return 1.0
    seconds = max(0.0, startup_ms) / 1000
    return STARTUP_HALF_SECONDS / (STARTUP_HALF_SECONDS + seconds)


def smoothness_score(watch_ms: float, stall_ms: float, stalls: float) -> float:
    """0–1 from the time watched, the time stalled (ms) and the number of stalls."""
    total = watch_ms + stall_ms
    fraction = stall_ms / total if total > 0 else 0.0
    by_count = 1 / math.sqrt(1 + (stalls / STALLS_SCALE) ** 2)
    by_time = math.exp(-REBUFFER_DECAY * fraction)
    return (by_count + by_time) / 2


def view_score(
    startup_ms: float | None, watch_ms: float, stall_ms: float, stalls: float, failed: bool
) -> float:
    """0–100: the score of one view over one bucket (see the module docstring)."""
    if failed:
        return 0.0
    return 100 * startup_score(startup_ms) * smoothness_score(watch_ms, stall_ms, stalls)


@dataclass(frozen=True)
class ViewActivity:
    """What one view did within one bucket: counter increases and what happened in it."""

    watch_ms: float = 0.0
    stall_ms: float = 0.0
    stalls: float = 0.0
    switches: float = 0.0
    # Startup time, when the view's first frame was reported in this bucket.
    startup_ms: float | None = None
    failed: bool = False
    exited_before_start: bool = False

    @property
    def scored(self) -> bool:
        """Whether the view counts towards the bucket's score (it watched or failed in it)."""
        return self.failed or self.watch_ms > 0


@dataclass(frozen=True)
class Experience:
    """The viewer experience of a stream over one bucket (the columns of viewer_experience_*)."""

    views: int
    watch_time_ms: float
    stall_time_ms: float
    rebuffer_pct: float | None
    stalls_per_minute: float | None
    startup_ms_p50: float | None
    startup_ms_p95: float | None
    switches_per_view: float
    failure_pct: float
    exit_before_start_pct: float
    score: float | None


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def experience(activities: Iterable[ViewActivity]) -> Experience | None:
    """The bucket's aggregates from the activity of each view in it; None without views."""
    views = list(activities)
    if not views:
        return None
    watch = sum(v.watch_ms for v in views)
    stall = sum(v.stall_ms for v in views)
    stalls = sum(v.stalls for v in views)
    startups = [v.startup_ms for v in views if v.startup_ms is not None]
    scores = [
        view_score(v.startup_ms, v.watch_ms, v.stall_ms, v.stalls, v.failed)
        for v in views
        if v.scored
    ]
    count = len(views)
    return Experience(
        views=count,
        watch_time_ms=watch,
        stall_time_ms=stall,
        rebuffer_pct=100 * stall / (watch + stall) if watch + stall > 0 else None,
        stalls_per_minute=stalls / (watch / 60_000) if watch > 0 else None,
        startup_ms_p50=percentile_cont(startups, 0.5),
        startup_ms_p95=percentile_cont(startups, 0.95),
        switches_per_view=sum(v.switches for v in views) / count,
        failure_pct=100 * sum(v.failed for v in views) / count,
        exit_before_start_pct=100 * sum(v.exited_before_start for v in views) / count,
        score=sum(scores) / len(scores) if scores else None,
    )


@dataclass(frozen=True)
class RebufferRule:
    """`rebuffering_high`: rebuffering over `raise_pct` across at least `min_views` views.

    Debounced by hysteresis over a trailing window (the job judges the last few minutes of
    beacons, not one): an open alert clears only once rebuffering is down to `clear_pct` or
    nobody watches any more, so a stream hovering at the threshold raises once, not every run.
    """

    raise_pct: float
    clear_pct: float
    min_views: int


def rebuffer_transition(
    rule: RebufferRule, views: int, rebuffer_pct: float | None, open: bool
) -> Literal["raise", "clear"] | None:
    """What the trailing window of one stream asks of its `rebuffering_high` alert."""
    if not open:
        if views >= rule.min_views and rebuffer_pct is not None and rebuffer_pct > rule.raise_pct:
            return "raise"
        return None
    if views == 0 or rebuffer_pct is None or rebuffer_pct <= rule.clear_pct:
        return "clear"
    return None
