"""The quality-advice policy (analytics/advice.py) against a simulated uplink."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.advice import (
    ENCODER_OVERLOAD,
    HEADROOM,
    PACKET_LOSS,
    WINDOW_SAMPLES,
    Advice,
    AdvicePolicy,
    Advisor,
    AdvisorState,
    Sample,
    advise,
)

POLICY = AdvicePolicy()
START = datetime(2026, 12, 1, 12, tzinfo=UTC)
STEP = timedelta(seconds=5)  # the client guide's reporting interval


@dataclass
class Streamer:
    """A streamer that applies every advice at once over a link of some capacity (kbps)."""

    bitrate: float = 4000.0
    height: int = 1080
    fps: float = 30.0
    # Frames per second the encoder manages at 1080p (below fps: the CPU is the limit).
    encoder_fps_1080: float = 30.0

    def sample(self, time: datetime, capacity: float) -> Sample:
        overload = max(0.0, (self.bitrate - capacity) / self.bitrate)
        fps = self.fps if self.height < 1080 else min(self.fps, self.encoder_fps_1080)
        return Sample(
            time=time,
            bitrate_kbps=self.bitrate,
            fps=fps,
            width=round(self.height * 16 / 9),
            height=self.height,
            packet_loss_pct=0.2 + 100 * overload,
            latency_ms=60 + 2000 * overload,
            upload_kbps=capacity,
        )

    def apply(self, advice: Advice) -> None:
        self.bitrate = advice.target.bitrate
        if advice.target.height is not None:
            self.height = advice.target.height
        if advice.target.fps is not None:
            self.fps = advice.target.fps


def run(
    capacity: Callable[[int], float], samples: int, streamer: Streamer | None = None
) -> Iterator[tuple[int, Sample, Advice | None]]:
    """Feed an advisor `samples` reports, 5 s apart, applying its advice; yield each step."""
    streamer = streamer or Streamer()
    advisor = Advisor(POLICY)
    for i in range(samples):
        sample = streamer.sample(START + i * STEP, capacity(i))
        advice = advisor.observe(sample)
        if advice is not None:
            streamer.apply(advice)
        yield i, sample, advice


def test_congestion_leads_to_lower_at_the_second_congested_sample() -> None:
    advices = [(i, a) for i, _, a in run(lambda i: 10000 if i < 20 else 1500, 30) if a]
    first_index, first = advices[0]
    assert first_index == 21  # window of 3 reports: the median turns at the second bad one
    assert first.action == "lower"
    assert PACKET_LOSS in first.reasons
    assert first.target.bitrate < 4000
    assert first.severity == "critical"  # loss far above twice the threshold


def test_recovery_leads_to_raise_only_after_the_hold() -> None:
    # Below the floor's 300 kbps until report 40: congested whatever the advice, then fine.
    trace = list(run(lambda i: 250 if i < 40 else 10000, 200))
    lowers = [i for i, _, a in trace if a and a.action == "lower"]
    raises = [i for i, _, a in trace if a and a.action == "raise"]
    assert lowers and raises
    hold = POLICY.raise_hold / STEP
    assert raises[0] - max(lowers) >= hold
    assert raises[0] - 40 >= hold
    # Every further raise waits a full hold after the previous one: up slowly, in small steps.
    assert all(b - a >= hold for a, b in itertools.pairwise(raises))
    for _, _, advice in trace:
        if advice and advice.action == "raise":
            assert advice.reasons == ("recovered",)


def test_raises_climb_back_to_the_streams_own_maximum_and_never_above() -> None:
    trace = list(run(lambda i: 1500 if i < 40 else 20000, 1000))
    final = [a for _, _, a in trace if a][-1]
    assert final.action == "raise"
    assert final.target.bitrate == 4000
    assert final.target.height == 1080
    assert all(a.target.bitrate <= 4000 for _, _, a in trace if a)


def test_headroom_lowers_to_a_share_of_the_upload() -> None:
    # 4000 kbps over a 4200 kbps uplink: no loss yet, but no headroom either.
    advices = [a for _, _, a in run(lambda i: 4200, 10) if a]
    assert advices[0].reasons == (HEADROOM,)
    assert advices[0].target.bitrate == round(4200 * POLICY.headroom_target)


def test_fps_falling_on_a_good_link_lowers_resolution_not_bitrate() -> None:
    streamer = Streamer()
    advisor = Advisor(POLICY)
    advices = []
    for i in range(16):
        # From report 5 on the encoder manages only 18 fps at 1080p (CPU overload).
        streamer.encoder_fps_1080 = 30 if i < 5 else 18
        advice = advisor.observe(streamer.sample(START + i * STEP, 20000))
        if advice is not None:
            streamer.apply(advice)
            advices.append(advice)
    assert len(advices) == 1
    advice = advices[0]
    assert advice.reasons == (ENCODER_OVERLOAD,)
    assert advice.target.bitrate == 4000
    assert advice.target.height == 720
    assert advice.target.width == 1280


def test_the_same_action_is_never_advised_twice_within_the_minimum_interval() -> None:
    trace = list(run(lambda i: 300 + 50 * i, 600))
    issued = [a for _, _, a in trace if a]
    for a, b in itertools.pairwise(issued):
        if a.action == b.action:
            assert b.issued_at - a.issued_at >= POLICY.min_interval


@settings(max_examples=25, deadline=None)
@given(capacity=st.floats(400, 12000), start=st.floats(500, 8000))
def test_steady_link_settles_instead_of_oscillating(capacity: float, start: float) -> None:
    hours = int(timedelta(hours=4) / STEP)
    trace = list(run(lambda i: capacity, hours, Streamer(bitrate=start)))
    changes = [i for i, _, a in trace if a]
    # Settles within minutes; afterwards only rare probes whose spacing doubles each time.
    settled = int(timedelta(minutes=30) / STEP)
    late = [i for i in changes if i >= settled]
    assert len(late) <= 2 * math.ceil(math.log2(4 * 60 / 10)) + 2
    gaps = [b - a for a, b in zip(late[::2], late[2::2], strict=False)]
    assert all(b >= a for a, b in itertools.pairwise(gaps))


@settings(max_examples=15, deadline=None)
@given(low=st.floats(500, 3000), swing=st.floats(0, 4000), period_h=st.floats(1, 6))
def test_slowly_varying_link_is_followed_without_oscillating(
    low: float, swing: float, period_h: float
) -> None:
    period = timedelta(hours=period_h) / STEP
    six_hours = int(timedelta(hours=6) / STEP)

    def capacity(i: int) -> float:
        return low + swing * (1 + math.sin(2 * math.pi * i / period)) / 2

    actions = [a.action for _, _, a in run(capacity, six_hours) if a]
    # The advice follows the link down and up again: it may turn around where the capacity
    # turns (twice a period) and at the rare probes above a failed raise, nowhere else.
    reversals = sum(1 for a, b in itertools.pairwise(actions) if a != b)
    turns = math.ceil(2 * six_hours / period)
    probes = 2 * math.ceil(math.log2(6 * 60 / 10)) + 2
    assert reversals <= turns + probes
    # Each swing takes as many steps as its range needs at the smallest step, no creeping.
    steps = math.log((low + swing) / low) / math.log(1 + POLICY.min_raise_step) + 3
    assert len(actions) <= (turns + 1) * steps + probes


samples = st.builds(
    lambda dt, b, f, h, loss, lat, up: (dt, b, f, h, loss, lat, up),
    st.integers(1, 20),
    st.one_of(st.none(), st.floats(50, 9000)),
    st.one_of(st.none(), st.floats(1, 60)),
    st.one_of(st.none(), st.sampled_from([240, 360, 480, 720, 1080])),
    st.one_of(st.none(), st.floats(0, 40)),
    st.one_of(st.none(), st.floats(5, 3000)),
    st.one_of(st.none(), st.floats(100, 12000)),
)


def to_samples(raw: list[tuple]) -> list[Sample]:
    time, out = START, []
    for dt, bitrate, fps, height, loss, latency, upload in raw:
        time += timedelta(seconds=dt)
        width = None if height is None else round(height * 16 / 9)
        out.append(Sample(time, bitrate, fps, width, height, loss, latency, upload))
    return out


@settings(max_examples=200, deadline=None)
@given(raw=st.lists(samples, min_size=1, max_size=120))
def test_targets_stay_between_the_floor_and_the_streams_own_maximum(raw: list[tuple]) -> None:
    trace = to_samples(raw)
    advisor = Advisor(POLICY)
    seen: list[Sample] = []
    last: Advice | None = None
    for sample in trace:
        seen.append(sample)
        advice = advisor.observe(sample)
        if advice is None:
            continue
        target = advice.target
        max_bitrate = max((s.bitrate_kbps for s in seen if s.bitrate_kbps), default=None)
        max_height = max((s.height for s in seen if s.height), default=None)
        max_fps = max((s.fps for s in seen if s.fps), default=None)
        # What the stream was at: the previous target, else what it reported last.
        height = last.target.height if last else sample.height
        fps = last.target.fps if last else sample.fps
        if max_bitrate is not None:
            assert target.bitrate <= max(max_bitrate, POLICY.floor_kbps) + 0.5
        if advice.action == "lower":
            assert target.bitrate >= POLICY.floor_kbps
        if target.height is not None and max_height is not None:
            assert target.height <= max_height
            # Lowered only down to the floor; a stream already below it is not pushed up.
            assert target.height >= min(POLICY.floor_height, max_height) or target.height == height
        if target.fps is not None and max_fps is not None:
            assert target.fps <= max_fps + 0.5
            assert target.fps >= min(POLICY.floor_fps, max_fps) - 0.5 or target.fps == fps
        last = advice


@settings(max_examples=100, deadline=None)
@given(raw=st.lists(samples, min_size=2, max_size=80), cut=st.integers(1, 79))
def test_state_saved_as_json_gives_the_same_advice(raw: list[tuple], cut: int) -> None:
    trace = to_samples(raw)
    cut = min(cut, len(trace) - 1)
    first = Advisor(POLICY)
    before = [a for s in trace[:cut] if (a := first.observe(s))]
    restored = Advisor(
        POLICY, AdvisorState.from_dict(json.loads(json.dumps(first.state.to_dict())))
    )
    after = [a for s in trace[cut:] if (a := restored.observe(s))]
    assert before + after == advise(POLICY, trace)


def test_old_samples_are_ignored() -> None:
    advisor = Advisor(POLICY)
    streamer = Streamer()
    for i in range(5):
        advisor.observe(streamer.sample(START + i * STEP, 1000))
    state = json.dumps(advisor.state.to_dict())
    assert advisor.observe(streamer.sample(START, 1000)) is None
    assert json.dumps(advisor.state.to_dict()) == state


def test_a_stream_reporting_at_the_rate_limit_keeps_a_small_window_over_its_whole_length() -> None:
    """50 reports a second: the window is thinned, not cut short, and congestion still counts."""
    advisor = Advisor(POLICY)
    streamer = Streamer()
    fast = timedelta(milliseconds=20)
    advices = []
    for i in range(50 * 60):  # a minute: fine for 40 s, then congested
        sample = streamer.sample(START + i * fast, 10000 if i < 50 * 40 else 1500)
        advice = advisor.observe(sample)
        if advice is not None:
            advices.append((i, advice))
            break  # the window starts afresh after an advice
        window = advisor.state.window
        assert len(window) <= WINDOW_SAMPLES + 2  # + the newest, + one at the boundary
        assert window[-1] is sample
        if i > 50 * 20:
            assert window[-1].time - window[0].time >= POLICY.window * (1 - 2 / WINDOW_SAMPLES)
    assert advices and advices[0][1].action == "lower"
    # The medians turn once half the window is congested: ~7.5 s into the congestion.
    assert 50 * 45 <= advices[0][0] <= 50 * 50
