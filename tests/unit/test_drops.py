"""The bitrate-drop detector on synthetic series (analytics/drops.py)."""

from __future__ import annotations

import random
from datetime import timedelta

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.drops import DropParams, OpenDrop, detect_drops, look_back

T0 = pd.Timestamp("2026-01-05 12:00:00", tz="UTC")
PARAMS = DropParams()
STREAM = "s1"


def series(*segments: tuple[float, float], every: float = 5.0, start: pd.Timestamp = T0):
    """Samples every `every` seconds: each segment is (seconds, bitrate); None = silence."""
    rows, t = [], 0.0
    for seconds, value in segments:
        end = t + seconds
        while t < end:
            if value is not None:
                rows.append((STREAM, start + pd.Timedelta(seconds=t), value))
            t += every
    return pd.DataFrame(rows, columns=["stream_id", "time", "bitrate_kbps"])


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def test_step_down_and_recovery_is_one_episode():
    samples = series((600, 2000), (120, 500), (300, 2000))
    episodes = detect_drops(samples, PARAMS)
    assert len(episodes) == 1
    drop = episodes.iloc[0]
    # The 30 s median crosses half the baseline once most of its window is low.
    assert at(600) <= drop.started_at <= at(630)
    assert at(720) <= drop.ended_at <= at(750)
    assert drop.baseline_kbps == 2000
    assert drop.observed_kbps == 500
    assert drop.drop_pct == 75


def test_slow_ramp_down_is_not_a_drop():
    rows = [(STREAM, at(5 * i), 3000 - 2500 * i / 720) for i in range(720)]  # one hour
    samples = pd.DataFrame(rows, columns=["stream_id", "time", "bitrate_kbps"])
    assert detect_drops(samples, PARAMS).empty


def test_noise_around_the_baseline_is_not_a_drop():
    rng = random.Random(7)
    rows = [(STREAM, at(5 * i), 2000 * rng.uniform(0.6, 1.4)) for i in range(720)]
    samples = pd.DataFrame(rows, columns=["stream_id", "time", "bitrate_kbps"])
    assert detect_drops(samples, PARAMS).empty


def test_silence_is_not_a_drop_and_resuming_is_not_either():
    samples = series((600, 2000), (180, None), (600, 2000))
    assert detect_drops(samples, PARAMS).empty


def test_going_silent_during_a_drop_ends_it_at_the_last_sample():
    samples = series((600, 2000), (120, 400), (600, None), (300, 2000))
    episodes = detect_drops(samples, PARAMS)
    assert len(episodes) == 1
    assert episodes.iloc[0].ended_at == samples.time[samples.time < at(720)].max()


def test_a_drop_at_the_end_of_the_data_stays_open():
    samples = series((600, 2000), (60, 300))
    episodes = detect_drops(samples, PARAMS)
    assert len(episodes) == 1
    assert pd.isna(episodes.iloc[0].ended_at)
    # ...until the stream has been silent for longer than the window.
    later = detect_drops(samples, PARAMS, until=at(660) + pd.Timedelta(minutes=5))
    assert later.iloc[0].ended_at == samples.time.max()


def test_a_drop_right_after_the_window_edge_is_found_with_the_look_back():
    samples = series((600, 2000), (120, 500), (300, 2000))
    since = at(600)
    window = samples[samples.time > since - look_back(PARAMS)]
    episodes = detect_drops(window, PARAMS, since=since)
    assert len(episodes) == 1
    assert episodes.iloc[0].started_at > since


def test_a_low_baseline_is_never_a_drop():
    samples = series((600, 250), (120, 50), (300, 250))
    assert detect_drops(samples, PARAMS).empty


def test_an_open_drop_from_the_previous_run_continues_and_ends():
    samples = series((600, 2000), (120, 500), (300, 2000))
    since = at(660)
    open_drop = OpenDrop(at(615), 2000.0, 600.0)
    window = samples[samples.time > since - look_back(PARAMS)]
    episodes = detect_drops(window, PARAMS, since=since, open_drops={STREAM: open_drop})
    assert len(episodes) == 1
    drop = episodes.iloc[0]
    assert drop.started_at == at(615)
    assert drop.observed_kbps == 500
    assert at(720) <= drop.ended_at <= at(750)


def test_streams_are_independent():
    a = series((600, 2000), (120, 500), (300, 2000))
    b = series((1020, 900)).assign(stream_id="s2")
    episodes = detect_drops(pd.concat([a, b]), PARAMS)
    assert list(episodes.stream_id) == [STREAM]


# Random series: 5 s (with jitter) samples, occasional pauses, piecewise-constant levels.
segments = st.lists(
    st.tuples(
        st.integers(min_value=2, max_value=80),  # samples in the segment
        st.floats(min_value=0, max_value=5000),  # level
        st.booleans(),  # preceded by a pause
    ),
    min_size=1,
    max_size=12,
)


def build(segs: list[tuple[int, float, bool]], low: float = 0.0, high: float = 1.0):
    rng = random.Random(len(segs))
    rows, t = [], 0.0
    for count, level, pause in segs:
        if pause:
            t += rng.uniform(20, 400)
        for _ in range(count):
            t += rng.uniform(1, 9)
            # min(): low + (high - low) can round to a hair above high.
            rows.append((STREAM, at(round(t, 3)), min(high, low + (high - low) * level / 5000)))
    return pd.DataFrame(rows, columns=["stream_id", "time", "bitrate_kbps"])


@settings(max_examples=60, deadline=None)
@given(segments, st.floats(min_value=300, max_value=5000))
def test_no_episode_when_bitrate_never_falls_below_the_start_threshold(segs, top):
    # Every sample is at least half the highest: no median can fall below half any baseline.
    samples = build(segs, low=top * PARAMS.start_ratio, high=top)
    assert detect_drops(samples, PARAMS).empty


def episodes_of(frame: pd.DataFrame) -> list[tuple]:
    return [
        (r.started_at, None if pd.isna(r.ended_at) else r.ended_at, r.baseline_kbps)
        for r in frame.itertuples()
    ]


@settings(max_examples=60, deadline=None)
@given(segments, st.floats(min_value=0.05, max_value=0.95))
def test_running_in_two_steps_finds_what_one_run_finds(segs, split):
    samples = build(segs, low=0, high=4000)
    end = samples.time.max() + pd.Timedelta(seconds=1)
    middle = samples.time.min() + (end - samples.time.min()) * split
    whole = detect_drops(samples, PARAMS, until=end)

    first = detect_drops(samples[samples.time <= middle], PARAMS, until=middle)
    carried = {
        r.stream_id: OpenDrop(r.started_at, r.baseline_kbps, r.observed_kbps)
        for r in first.itertuples()
        if pd.isna(r.ended_at)
    }
    recent = samples[samples.time > middle - look_back(PARAMS)]
    second = detect_drops(recent, PARAMS, since=middle, until=end, open_drops=carried)
    closed_first = first[first.ended_at.notna()]
    combined = sorted(episodes_of(closed_first) + episodes_of(second))
    assert combined == sorted(episodes_of(whole))
    # The lowest level seen in a drop is the same whichever way it was split.
    observed = pd.concat([closed_first, second]).groupby("started_at").observed_kbps.min()
    assert observed.to_dict() == whole.set_index("started_at").observed_kbps.to_dict()


def test_look_back_covers_both_windows():
    assert look_back(PARAMS) >= PARAMS.baseline_window + PARAMS.window
    assert look_back(DropParams(window=timedelta(seconds=10))) < look_back(PARAMS)
