"""The threshold-alert streak machine (analytics/alerts.py); a dict stands in for the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics.alerts import AlertTracker, alert_payload, default_rules

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Episodes:
    """What stream_alerts does: at most one open episode per (stream, type)."""

    def __init__(self) -> None:
        self.open: dict[tuple, datetime] = {}
        self.events: list[tuple[str, str, datetime]] = []

    def apply(self, stream, transitions) -> None:
        for t in transitions:
            key = (stream, t.rule.type)
            if t.kind == "raise" and key not in self.open:
                self.open[key] = t.since
                self.events.append(("raised", t.rule.type, t.since))
            elif t.kind == "clear" and key in self.open:
                del self.open[key]
                self.events.append(("cleared", t.rule.type, t.since))


def tracker(raise_after: int = 2, clear_after: int = 3) -> AlertTracker:
    return AlertTracker(default_rules(5.0, 20.0), raise_after=raise_after, clear_after=clear_after)


def feed(track: AlertTracker, table: Episodes, losses, *, stream="s", start=T0, step=5):
    for i, loss in enumerate(losses):
        at = start + timedelta(seconds=step * i)
        table.apply(stream, track.observe(stream, at, {"packet_loss_pct": loss, "fps": None}))


def states(table: Episodes) -> list[str]:
    return [state for state, _, _ in table.events]


def test_raised_after_two_breaching_samples_and_cleared_after_three_good_ones():
    table = Episodes()
    feed(tracker(), table, [1, 8, 9, 7, 2, 1, 1, 1])
    assert table.events == [
        ("raised", "packet_loss_high", T0 + timedelta(seconds=5)),
        ("cleared", "packet_loss_high", T0 + timedelta(seconds=20)),
    ]


def test_a_single_breaching_sample_raises_nothing():
    table = Episodes()
    feed(tracker(), table, [1, 9, 1, 9, 1, 9, 1])
    assert table.events == []


def test_two_good_samples_in_an_episode_do_not_clear_it():
    table = Episodes()
    feed(tracker(), table, [9, 9, 1, 1, 9, 9, 9, 1, 1])
    assert states(table) == ["raised"]


def test_one_raised_and_one_cleared_per_episode_however_long():
    table = Episodes()
    feed(tracker(), table, [9] * 50 + [0] * 50 + [9] * 3 + [0] * 3)
    assert states(table) == ["raised", "cleared", "raised", "cleared"]


def test_a_sample_without_the_metric_counts_neither_way():
    table = Episodes()
    feed(tracker(), table, [9, None, 9, 1, None, 1, None, 1])
    assert states(table) == ["raised", "cleared"]
    assert table.events[0][2] == T0  # the streak began with the first breaching sample


def test_samples_older_than_the_last_one_are_ignored():
    track, table = tracker(), Episodes()
    feed(track, table, [9], start=T0 + timedelta(seconds=10))
    feed(track, table, [9, 9], start=T0)  # late: both before the last sample seen
    assert table.events == []


def test_the_thresholds_are_strict_and_configurable():
    track = AlertTracker(default_rules(5.0, 20.0), raise_after=1, clear_after=1)
    at = T0
    for loss, fps, expected in [
        (5.0, 20.0, []),  # exactly at the thresholds: not a breach
        (5.1, 19.9, ["packet_loss_high", "fps_low"]),
    ]:
        at += timedelta(seconds=1)
        proposed = track.observe("s", at, {"packet_loss_pct": loss, "fps": fps})
        assert [t.rule.type for t in proposed if t.kind == "raise"] == expected


def test_a_restart_with_the_episode_still_open_raises_nothing_new():
    table = Episodes()
    feed(tracker(), table, [9, 9, 9])
    # A new process: fresh streaks, the same table.
    feed(tracker(), table, [9, 9, 9, 0, 0, 0], start=T0 + timedelta(minutes=1))
    assert states(table) == ["raised", "cleared"]


def test_streams_are_counted_separately():
    track, table = tracker(), Episodes()
    for i in range(4):
        at = T0 + timedelta(seconds=i)
        table.apply("a", track.observe("a", at, {"packet_loss_pct": 9, "fps": 30}))
        table.apply("b", track.observe("b", at, {"packet_loss_pct": 0, "fps": 30}))
    assert [(s, t) for (s, t) in table.open] == [("a", "packet_loss_high")]


def test_forgotten_streams_start_over():
    track = tracker()
    track.observe("old", T0, {"fps": 10})
    track.observe("new", T0 + timedelta(minutes=20), {"fps": 10})
    assert track.forget_before(T0 + timedelta(minutes=10)) == 1
    assert len(track) == 1


def test_the_payload_matches_the_protocol():
    payload = alert_payload(
        "abc", "fps_low", "cleared", 24.0, 20.0, T0, T0 + timedelta(seconds=1, microseconds=5000)
    )
    assert payload == {
        "streamId": "abc",
        "type": "fps_low",
        "state": "cleared",
        "value": 24.0,
        "threshold": 20.0,
        "startedAt": "2026-01-01T12:00:00.000Z",
        "endedAt": "2026-01-01T12:00:01.005Z",
    }
    assert "endedAt" not in alert_payload("abc", "fps_low", "raised", 10.0, 20.0, T0)


def observe(track: AlertTracker, i: int, loss: float):
    at = T0 + timedelta(seconds=5 * i)
    return track.observe("s", at, {"packet_loss_pct": loss, "fps": None})


def test_a_raise_handed_back_is_proposed_again_by_the_next_breaching_sample():
    track = tracker()
    assert observe(track, 0, 8) == []
    (lost,) = observe(track, 1, 9)
    track.retry("s", lost)
    (again,) = observe(track, 2, 7)
    assert (again.kind, again.since, again.value) == ("raise", T0, 7)
    assert observe(track, 3, 9) == []  # taken this time: nothing more in this streak


def test_a_clear_handed_back_is_proposed_again_by_the_next_good_sample():
    track = tracker()
    for i, loss in enumerate([8, 9, 1, 1]):
        observe(track, i, loss)
    (lost,) = observe(track, 4, 1)
    assert lost.kind == "clear"
    track.retry("s", lost)
    (again,) = observe(track, 5, 0.5)
    assert (again.kind, again.since) == ("clear", T0 + timedelta(seconds=10))


def test_a_raise_handed_back_after_its_streak_ended_is_dropped():
    track = tracker()
    observe(track, 0, 8)
    (lost,) = observe(track, 1, 9)
    observe(track, 2, 1)  # the breach is over before the failure is known
    track.retry("s", lost)
    assert observe(track, 3, 9) == []
    (fresh,) = observe(track, 4, 9)
    assert fresh.since == T0 + timedelta(seconds=15)
