"""The simulated streamer acts like a real one: mostly steady, with the episodes alerts catch."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.beacon import parse_beacon
from ingest.schema import parse_update
from ingest.simulate import LADDER, PlaybackModel, StreamModel

START = datetime(2026, 1, 21, 10, 0, tzinfo=UTC)


def run(steps: int, seed: int = 7) -> list[dict]:
    model = StreamModel.random(random.Random(seed))
    return [model.step(START + timedelta(seconds=5 * i)) for i in range(steps)]


def test_every_update_is_valid_for_the_server():
    for update in run(500):
        parse_update(update, now=START + timedelta(hours=1), retention=timedelta(days=30))


def test_mostly_good_quality_with_congestion_episodes():
    stats = [u["stats"] for u in run(2000)]
    lossy = [s for s in stats if s["packetLoss"] > 5]
    slow = [s for s in stats if s["latency"] > 200]
    assert 0.02 < len(lossy) / len(stats) < 0.3
    assert slow
    calm = [s for s in stats if s["packetLoss"] < 1 and s["latency"] < 100]
    assert len(calm) / len(stats) > 0.6


def test_bitrate_collapses_during_congestion_and_recovers():
    stats = [u["stats"] for u in run(2000)]
    targets = {(w, h): kbps for w, h, kbps in LADDER}

    def share(s: dict) -> float:
        return s["bitrate"] / targets[(s["resolution"]["width"], s["resolution"]["height"])]

    collapsed = [i for i, s in enumerate(stats) if share(s) < 0.5]
    assert collapsed
    # A collapse comes with congestion (recovery takes a couple of updates after it ends) ...
    congested = {i for i, s in enumerate(stats) if s["packetLoss"] > 1 or s["latency"] > 100}
    assert all(congested & {i, i - 1, i - 2, i - 3} for i in collapsed)
    # ... and the stream is back near its target a bit later.
    assert any(share(s) > 0.9 for s in stats[collapsed[0] + 1 : collapsed[0] + 30])


def test_fps_dips_below_the_alert_threshold():
    fps = [u["stats"]["fps"] for u in run(2000)]
    assert any(f < 20 for f in fps)
    assert sorted(fps)[len(fps) // 2] >= 25


def test_resolution_switches_down_and_back_up():
    sizes = [
        (u["stats"]["resolution"]["width"], u["stats"]["resolution"]["height"]) for u in run(3000)
    ]
    switches = sum(1 for a, b in itertools.pairwise(sizes) if a != b)
    assert switches >= 2
    assert len(set(sizes)) >= 2


def test_timestamps_strictly_increase_even_when_the_clock_does_not():
    model = StreamModel.random(random.Random(1))
    stamps = [model.step(START)["timestamp"] for _ in range(3)]
    assert stamps == sorted(set(stamps))


# --- viewers ------------------------------------------------------------------------------------


def watch(congested: bool, beacons: int = 30, seed: int = 11) -> list[dict]:
    """The beacons of one playback, every 10 s, with the streamer calm or congested throughout."""
    rng = random.Random(seed)
    stream = StreamModel.random(random.Random(seed))
    playback = PlaybackModel.start(stream, rng)
    out = []
    for i in range(beacons):
        stream.congestion, stream.severity = (5, 0.9) if congested else (0, 0.0)
        out.append(playback.step(START + timedelta(seconds=10 * (i + 1)), 10.0))
        if playback.over:
            break
    if not playback.over:
        out.append(playback.finish(START + timedelta(seconds=10 * (beacons + 1))))
    return out


def test_every_beacon_is_valid_and_its_counters_only_grow():
    counters = ("watchTime", "stalls.count", "stalls.duration", "renditionChanges.down")

    def value(beacon: dict, path: str) -> float:
        node: Any = beacon
        for part in path.split("."):
            node = node[part]
        return node

    for seed in range(40):
        for congested in (False, True):
            beacons = watch(congested, seed=seed)
            for beacon in beacons:
                parse_beacon(beacon, now=START + timedelta(hours=1), retention=timedelta(days=30))
            for before, after in itertools.pairwise(beacons):
                for path in counters:
                    assert value(after, path) >= value(before, path), path
                grown = (after["watchTime"] - before["watchTime"]) + (
                    after["stalls"]["duration"] - before["stalls"]["duration"]
                )
                assert grown <= 10_000 + 1e-6  # never more than the time that passed
            assert beacons[-1]["state"] in ("ended", "failed")
            assert len({b["viewId"] for b in beacons}) == 1


def test_viewers_of_a_congested_stream_stall_more_and_switch_down():
    def totals(congested: bool) -> tuple[float, float, float]:
        ends = [watch(congested, seed=seed)[-1] for seed in range(40)]
        watched = sum(e["watchTime"] for e in ends)
        stalled = sum(e["stalls"]["duration"] for e in ends)
        return (
            stalled / (watched + stalled),
            sum(e["stalls"]["count"] for e in ends),
            sum(e["renditionChanges"]["down"] for e in ends),
        )

    calm_pct, calm_stalls, calm_down = totals(False)
    bad_pct, bad_stalls, bad_down = totals(True)
    assert calm_pct < 0.02 < 0.1 < bad_pct
    assert bad_stalls > 5 * calm_stalls
    assert bad_down > calm_down
