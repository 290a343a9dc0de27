"""Threshold alerts: consecutive-sample streaks per stream and metric, and the wire payload.

The state machine only counts; whether an episode is open is the database's business (the ingest
side applies `raise`/`clear` idempotently), so a restart or a streamer moving to another ingest
node never opens a second episode. A transition is proposed once per streak: `raise` when the
breaching streak reaches `raise_after`, `clear` when the good streak reaches `clear_after`; one
the database did not take is handed back with `retry` and proposed again by the next sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

AlertState = Literal["raised", "cleared"]

# PostgreSQL NOTIFY channel on which the jobs process hands alerts to the ingest nodes.
ALERT_CHANNEL = "stream_alert"


@dataclass(frozen=True)
class AlertRule:
    type: str
    metric: str
    threshold: float
    # True: breached when the value is above the threshold; False: when below.
    above: bool

    def breached(self, value: float) -> bool:
        """Whether one sample's value is in breach."""
        return value > self.threshold if self.above else value < self.threshold


def default_rules(packet_loss_pct: float, fps_min: float) -> tuple[AlertRule, ...]:
    """The two alerts of docs/protocol.md with the configured thresholds."""
    return (
        AlertRule("packet_loss_high", "packet_loss_pct", packet_loss_pct, above=True),
        AlertRule("fps_low", "fps", fps_min, above=False),
    )


@dataclass(frozen=True)
class Transition:
    kind: Literal["raise", "clear"]
    rule: AlertRule
    value: float
    # First sample of the streak: when the breach (or the recovery) began.
    since: datetime


@dataclass
class _Streak:
    breaching: int = 0
    breaching_since: datetime | None = None
    good: int = 0
    good_since: datetime | None = None


@dataclass
class _Stream:
    last_time: datetime
    streaks: dict[str, _Streak] = field(default_factory=dict)


class AlertTracker:
    """Streaks per stream; `observe` one sample at a time, in timestamp order per stream."""

    def __init__(self, rules: Iterable[AlertRule], *, raise_after: int, clear_after: int):
        self.rules = tuple(rules)
        self.raise_after = raise_after
        self.clear_after = clear_after
        self._streams: dict[Any, _Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def observe(
        self, stream_id: Any, time: datetime, metrics: Mapping[str, float | None]
    ) -> list[Transition]:
        """The transitions this sample proposes; older-than-seen samples are ignored."""
        state = self._streams.get(stream_id)
        if state is None:
            state = self._streams[stream_id] = _Stream(last_time=time)
        elif time <= state.last_time:
            # A late or resent sample: the streaks are about consecutive samples in time order.
            return []
        state.last_time = time
        transitions = []
        for rule in self.rules:
            value = metrics.get(rule.metric)
            if value is None:
                continue  # a missing metric counts neither way
            streak = state.streaks.setdefault(rule.type, _Streak())
            if rule.breached(value):
                streak.good, streak.good_since = 0, None
                streak.breaching += 1
                streak.breaching_since = streak.breaching_since or time
                if streak.breaching == self.raise_after:
                    transitions.append(Transition("raise", rule, value, streak.breaching_since))
            else:
                streak.breaching, streak.breaching_since = 0, None
                streak.good += 1
                streak.good_since = streak.good_since or time
                if streak.good == self.clear_after:
                    transitions.append(Transition("clear", rule, value, streak.good_since))
        return transitions

    def retry(self, stream_id: Any, transition: Transition) -> None:
        """A transition that could not be applied: the next sample of its streak proposes it again.

        Proposals come once per streak, so a raise or clear lost to a failed database call would
        otherwise leave the episode unopened or open for good. The streak is set back one short
        of its count, unless it has ended meanwhile (the change is then moot, or a new streak
        will propose its own).
        """
        state = self._streams.get(stream_id)
        streak = None if state is None else state.streaks.get(transition.rule.type)
        if streak is None:
            return
        if transition.kind == "raise" and streak.breaching_since == transition.since:
            streak.breaching = min(streak.breaching, self.raise_after - 1)
        elif transition.kind == "clear" and streak.good_since == transition.since:
            streak.good = min(streak.good, self.clear_after - 1)

    def forget_before(self, moment: datetime) -> int:
        """Drop streams whose last sample is older than `moment` (they ended); how many."""
        stale = [key for key, state in self._streams.items() if state.last_time < moment]
        for key in stale:
            del self._streams[key]
        return len(stale)


def wire_time(moment: datetime) -> str:
    """UTC ISO 8601 with `Z` and milliseconds, as JavaScript's Date.toISOString() writes it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_payload(
    stream_id: Any,
    type: str,
    state: AlertState,
    value: float,
    threshold: float,
    started_at: datetime,
    ended_at: datetime | None = None,
) -> dict[str, Any]:
    """The `stream:alert` event body (docs/protocol.md)."""
    payload: dict[str, Any] = {
        "streamId": str(stream_id),
        "type": type,
        "state": state,
        "value": value,
        "threshold": threshold,
        "startedAt": wire_time(started_at),
    }
    if ended_at is not None:
        payload["endedAt"] = wire_time(ended_at)
    return payload
