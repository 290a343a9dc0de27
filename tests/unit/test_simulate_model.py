"""The simulated streamer acts like a real one: mostly steady, with the episodes alerts catch."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from ingest.schema import parse_update
from ingest.simulate import LADDER, StreamModel

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
