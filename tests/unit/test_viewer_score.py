"""The viewer experience score: the published anchor points, bounds and monotonicity."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.viewer import (
    RebufferRule,
    ViewActivity,
    experience,
    rebuffer_transition,
    smoothness_score,
    startup_score,
    view_score,
)


@pytest.mark.parametrize(("ms", "score"), [(0, 1.0), (2_000, 0.8), (8_000, 0.5), (24_000, 0.25)])
def test_startup_score_halves_at_eight_seconds(ms, score):
    assert startup_score(ms) == pytest.approx(score)


def test_smoothness_averages_the_count_and_the_time_stalled():
    assert smoothness_score(60_000, 0, 0) == 1.0
    # Two stalls: 1/sqrt(2) by count; 1 % of the time stalled: exp(-0.1) by time.
    assert smoothness_score(99_000, 1_000, 2) == pytest.approx(
        (1 / math.sqrt(2) + math.exp(-0.1)) / 2
    )


def test_a_failed_view_scores_zero_and_a_perfect_one_a_hundred():
    assert view_score(0, 60_000, 0, 0, failed=True) == 0
    assert view_score(0, 60_000, 0, 0, failed=False) == 100
    assert view_score(None, 60_000, 0, 0, failed=False) == 100


finite = st.floats(0, 1e7, allow_nan=False)


@given(finite, finite, finite, st.integers(0, 1000), st.floats(0, 1e6))
def test_the_score_stays_within_0_and_100_and_falls_with_each_harm(startup, watch, stall, n, more):
    score = view_score(startup, watch, stall, n, failed=False)
    assert 0 <= score <= 100
    assert view_score(startup + more, watch, stall, n, False) <= score + 1e-9
    assert view_score(startup, watch, stall, n + 1, False) <= score + 1e-9
    assert view_score(startup, watch, stall + more, n, False) <= score + 1e-9


def test_the_bucket_aggregates_follow_their_definitions():
    views = [
        ViewActivity(watch_ms=50_000, stall_ms=10_000, stalls=2, switches=3, startup_ms=1_000),
        ViewActivity(watch_ms=10_000, startup_ms=3_000),
        ViewActivity(failed=True),
        ViewActivity(exited_before_start=True),  # not scored: nothing watched, nothing failed
    ]
    got = experience(views)
    assert got is not None
    assert (got.views, got.watch_time_ms, got.stall_time_ms) == (4, 60_000, 10_000)
    assert got.rebuffer_pct == pytest.approx(100 * 10_000 / 70_000)
    assert got.stalls_per_minute == pytest.approx(2.0)
    assert (got.startup_ms_p50, got.startup_ms_p95) == (2_000, pytest.approx(2_900))
    assert got.switches_per_view == 0.75
    assert (got.failure_pct, got.exit_before_start_pct) == (25, 25)
    scored = [
        view_score(1_000, 50_000, 10_000, 2, False),
        view_score(3_000, 10_000, 0, 0, False),
        0.0,
    ]
    assert got.score == pytest.approx(sum(scored) / 3)
    assert experience([]) is None


RULE = RebufferRule(raise_pct=5, clear_pct=2.5, min_views=3)


@pytest.mark.parametrize(
    ("views", "pct", "open", "step"),
    [
        (3, 5.1, False, "raise"),
        (2, 50.0, False, None),  # too few views to say
        (3, 5.0, False, None),  # at the threshold, not over
        (3, None, False, None),
        (3, 4.0, True, None),  # between the thresholds: stays as it is
        (10, 2.5, True, "clear"),
        (1, 40.0, True, None),  # fewer views, still rebuffering: stays open
        (0, None, True, "clear"),  # nobody watching
        (3, 8.0, True, None),
    ],
)
def test_rebuffering_raises_over_the_threshold_and_clears_only_well_below_it(
    views, pct, open, step
):
    assert rebuffer_transition(RULE, views, pct, open) == step
