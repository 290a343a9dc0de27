"""Quality advice for a streamer: lower, raise or hold the sending quality, from recent samples.

One `Advisor` per stream sees that stream's committed samples in time order and now and then
proposes an `Advice`: `lower` (with the reasons) or `raise`, and the `Target` to send at. The
policy (docs/protocol.md, "Quality advice", lists every threshold; all are `AdvicePolicy` fields):

- Judged over a trailing `window` of samples (medians, so one bad sample decides nothing), and
  only once it holds `min_samples`. The window starts afresh after each advice: what the stream
  sent before it applied the advice says nothing about the new target.
- `lower` as soon as the window shows a problem:
  - `packet_loss`: median loss at or above `loss_pct`: bitrate × `lower_factor`
    (× `severe_lower_factor` at twice the threshold);
  - `latency`: latency risen by `latency_rise_ms` across the window while its median is above
    `latency_floor_ms` (a queue building up), or a median at or above `latency_ms` (a queue that
    has built up): bitrate × `lower_factor`. A steady moderate latency is distance, not
    congestion, and lowering the bitrate would not help it;
  - `headroom`: median bitrate above `headroom_ratio` of the measured upload bandwidth: bitrate
    down to `headroom_target` of the upload;
  - `encoder_overload`: median fps below `fps_ratio` of the highest fps the stream reported while
    loss and headroom are fine — the link is not the problem, so the resolution goes one step
    down the ladder (then the frame rate), the bitrate stays.
  Several reasons at once take the lowest bitrate and the smallest picture of their targets.
- `raise` only after every check has been fine for `raise_hold` since the last advice: one step
  of `raise_factor` (and only if it adds at least `min_raise_step` to the bitrate or a step of
  picture or frame rate: a creep of a few kbps is no advice), never above the stream's own
  highest reported bitrate, resolution and fps, nor above `headroom_target` of the upload.
- Never below the floor (`floor_kbps`, `floor_height`, `floor_fps`), never the same action twice
  within `min_interval`, and no advice that would not change the target.
- No oscillation: a `lower` that follows a `raise` within `raise_hold` marks the raised bitrate
  as failed. Later raises stay below `failed_margin` of it until `failed_memory` has passed, and
  each further failure doubles that memory (up to `failed_memory_max`). Under a steady link the
  advice therefore settles within a few steps and stays there.

The advisor's state is plain data (`AdvisorState`, JSON-ready through `to_dict`/`from_dict`), so it
can be kept in the database and picked up by a restarted or another ingest node.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

Action = Literal["lower", "raise"]
Severity = Literal["info", "warning", "critical"]

# Reasons, in the order they are reported.
PACKET_LOSS = "packet_loss"
LATENCY = "latency"
HEADROOM = "headroom"
ENCODER_OVERLOAD = "encoder_overload"
RECOVERED = "recovered"

# Picture heights a lowered resolution steps through (16:9 ladders of the common encoders).
HEIGHT_LADDER = (2160, 1440, 1080, 720, 540, 480, 360, 240)

# The window keeps at most about this many samples, spread over its length (about one a second
# for the default 15 s): a stream reporting many times a second (up to the rate limit) costs no
# more to judge than one reporting every second, and its recorded state stays small. At the
# usual one report every few seconds every sample counts.
WINDOW_SAMPLES = 16


@dataclass(frozen=True)
class AdvicePolicy:
    """Every threshold of the policy (module docstring); the settings fill it."""

    window: timedelta = timedelta(seconds=15)
    min_samples: int = 2
    loss_pct: float = 3.0
    latency_ms: float = 1000.0
    latency_rise_ms: float = 100.0
    latency_floor_ms: float = 150.0
    headroom_ratio: float = 0.9
    headroom_target: float = 0.75
    fps_ratio: float = 0.8
    lower_factor: float = 0.7
    severe_lower_factor: float = 0.5
    raise_factor: float = 1.15
    min_raise_step: float = 0.1
    raise_hold: timedelta = timedelta(seconds=60)
    raise_loss_pct: float = 1.0
    min_interval: timedelta = timedelta(seconds=15)
    failed_margin: float = 0.9
    failed_memory: timedelta = timedelta(minutes=10)
    failed_memory_max: timedelta = timedelta(hours=4)
    floor_kbps: float = 300.0
    floor_height: int = 360
    floor_fps: float = 15.0


@dataclass(frozen=True)
class Sample:
    """The metrics of one committed sample the policy looks at (None: not reported)."""

    time: datetime
    bitrate_kbps: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    packet_loss_pct: float | None = None
    latency_ms: float | None = None
    upload_kbps: float | None = None


@dataclass(frozen=True)
class Target:
    """What the streamer should send at: kbps, picture size (None: unknown), frames per second."""

    bitrate: float
    width: int | None
    height: int | None
    fps: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Basis:
    """The window's medians the advice was decided on (None: not reported in the window)."""

    window: float  # seconds
    packetLoss: float | None  # the wire's field names
    latency: float | None
    bitrate: float | None
    upload: float | None
    fps: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Advice:
    action: Action
    target: Target
    reasons: tuple[str, ...]
    severity: Severity
    issued_at: datetime
    basis: Basis


@dataclass
class AdvisorState:
    """What an advisor remembers about its stream between samples."""

    # The recent samples, oldest first, no older than the policy's window.
    window: list[Sample] = field(default_factory=list)
    # The newest sample's time: older ones are ignored.
    last_time: datetime | None = None
    # The highest quality the stream itself reported (the ceiling of any raise).
    max_bitrate: float | None = None
    max_width: int | None = None
    max_height: int | None = None
    max_fps: float | None = None
    # The last advice: what it asked for and when.
    target: Target | None = None
    last_action: Action | None = None
    last_issued_at: datetime | None = None
    # Since when every check has been fine (None: not fine at the last sample).
    fine_since: datetime | None = None
    # A raised bitrate that led to a `lower`, and until when raises stay below it.
    failed_bitrate: float | None = None
    failed_until: datetime | None = None
    failed_memory_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (datetimes as ISO 8601 strings)."""
        data = asdict(self)
        data["window"] = [_dump_sample(s) for s in self.window]
        for key in _TIMES:
            value = getattr(self, key)
            data[key] = value.isoformat() if value is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdvisorState:
        values = dict(data)
        values["window"] = [_load_sample(s) for s in data.get("window", ())]
        values["target"] = Target(**data["target"]) if data.get("target") else None
        for key in _TIMES:
            raw = data.get(key)
            values[key] = datetime.fromisoformat(raw) if raw is not None else None
        return cls(**values)


_TIMES = ("last_time", "last_issued_at", "fine_since", "failed_until")


class Advisor:
    """The policy applied to one stream's samples, in time order (module docstring)."""

    def __init__(self, policy: AdvicePolicy, state: AdvisorState | None = None):
        self.policy = policy
        self.state = state if state is not None else AdvisorState()

    def observe(self, sample: Sample) -> Advice | None:
        """Take the next sample; the advice it calls for, if any (already recorded as issued).

        A sample older than the newest one seen is ignored: the window moves forward only.
        """
        state, policy = self.state, self.policy
        if state.last_time is not None and sample.time <= state.last_time:
            return None
        state.last_time = sample.time
        self._remember(sample)
        if len(state.window) < policy.min_samples:
            return None
        basis = self._basis()
        reasons = self._problems(basis)
        advice = self._lower(sample.time, basis, reasons) if reasons else None
        if reasons:
            state.fine_since = None
        else:
            if state.fine_since is None:
                state.fine_since = sample.time
            advice = self._raise(sample.time, basis)
        if advice is not None:
            self._issued(advice)
        return advice

    # -- the checks ------------------------------------------------------------------------

    def _remember(self, sample: Sample) -> None:
        state = self.state
        start = sample.time - self.policy.window
        window = [s for s in state.window if s.time > start]
        if len(window) >= 2 and sample.time - window[-2].time < self.policy.window / WINDOW_SAMPLES:
            window[-1] = sample  # thinned: the newest sample always counts
        else:
            window.append(sample)
        state.window = window
        state.max_bitrate = _max(state.max_bitrate, sample.bitrate_kbps)
        state.max_fps = _max(state.max_fps, sample.fps)
        if sample.height is not None and (
            state.max_height is None or sample.height > state.max_height
        ):
            state.max_width, state.max_height = sample.width, sample.height

    def _basis(self) -> Basis:
        window = self.state.window

        def median(name: str) -> float | None:
            values = [v for s in window if (v := getattr(s, name)) is not None]
            return statistics.median(values) if values else None

        return Basis(
            window=(window[-1].time - window[0].time).total_seconds(),
            packetLoss=median("packet_loss_pct"),
            latency=median("latency_ms"),
            bitrate=median("bitrate_kbps"),
            upload=median("upload_kbps"),
            fps=median("fps"),
        )

    def _problems(self, basis: Basis) -> list[str]:
        policy, state = self.policy, self.state
        reasons = []
        if basis.packetLoss is not None and basis.packetLoss >= policy.loss_pct:
            reasons.append(PACKET_LOSS)
        if basis.latency is not None and (
            basis.latency >= policy.latency_ms or self._latency_rising(basis.latency)
        ):
            reasons.append(LATENCY)
        if (
            basis.bitrate is not None
            and basis.upload is not None
            and basis.bitrate > policy.headroom_ratio * basis.upload
        ):
            reasons.append(HEADROOM)
        if (
            not reasons
            and basis.fps is not None
            and state.max_fps is not None
            and basis.fps < policy.fps_ratio * self._expected_fps()
        ):
            reasons.append(ENCODER_OVERLOAD)
        return reasons

    def _latency_rising(self, median: float) -> bool:
        values = [s.latency_ms for s in self.state.window if s.latency_ms is not None]
        if len(values) < 2 or median < self.policy.latency_floor_ms:
            return False
        return values[-1] - values[0] >= self.policy.latency_rise_ms

    def _expected_fps(self) -> float:
        """The frame rate the stream should reach: its own maximum, or what it was advised."""
        state = self.state
        assert state.max_fps is not None
        if state.target is not None and state.target.fps is not None:
            return min(state.max_fps, state.target.fps)
        return state.max_fps

    # -- the advice ------------------------------------------------------------------------

    def _current(self, basis: Basis) -> Target:
        """Where the stream is now: the last advised target, lowered to what it really sends."""
        state, latest = self.state, self.state.window[-1]
        sent = basis.bitrate if basis.bitrate is not None else state.max_bitrate
        if state.target is None:
            return Target(
                bitrate=sent if sent is not None else self.policy.floor_kbps,
                width=latest.width,
                height=latest.height,
                fps=latest.fps if latest.fps is not None else state.max_fps,
            )
        bitrate = state.target.bitrate if sent is None else min(state.target.bitrate, sent)
        return replace(state.target, bitrate=bitrate)

    def _lower(self, now: datetime, basis: Basis, reasons: list[str]) -> Advice | None:
        policy, state = self.policy, self.state
        if self._too_soon("lower", now):
            return None
        current = self._current(basis)
        bitrate, height, fps = current.bitrate, current.height, current.fps
        critical = False
        if PACKET_LOSS in reasons or LATENCY in reasons:
            severe = basis.packetLoss is not None and basis.packetLoss >= 2 * policy.loss_pct
            critical = critical or severe
            factor = policy.severe_lower_factor if severe else policy.lower_factor
            bitrate = min(bitrate, current.bitrate * factor)
        if HEADROOM in reasons:
            assert basis.upload is not None and basis.bitrate is not None
            critical = critical or basis.bitrate >= basis.upload
            bitrate = min(bitrate, basis.upload * policy.headroom_target)
        if ENCODER_OVERLOAD in reasons:
            assert basis.fps is not None
            critical = basis.fps < 0.5 * self._expected_fps()
            lower_height = _step_down(height, policy.floor_height)
            if lower_height != height:
                height = lower_height
            elif fps is not None:
                fps = max(policy.floor_fps, round(fps * policy.lower_factor))
        bitrate = max(policy.floor_kbps, bitrate)
        # A lower bitrate carries a picture that fits it (the encoder would blur a bigger one).
        height = _fitting_height(height, bitrate, policy.floor_height)
        target = Target(bitrate=round(bitrate), width=None, height=height, fps=fps)
        target = replace(target, width=_width_for(target.height, state))
        if not _lower_than(target, current):
            return None
        if state.last_action == "raise" and state.target is not None:
            assert state.last_issued_at is not None
            if now - state.last_issued_at <= policy.raise_hold:
                self._raise_failed(now, state.target.bitrate)
        return Advice(
            "lower", target, tuple(reasons), "critical" if critical else "warning", now, basis
        )

    def _raise(self, now: datetime, basis: Basis) -> Advice | None:
        policy, state = self.policy, self.state
        if state.target is None or state.fine_since is None:
            return None  # nothing was lowered: the stream sends what it chose
        since = max(state.fine_since, state.last_issued_at or state.fine_since)
        if now - since < policy.raise_hold or self._too_soon("raise", now):
            return None
        if basis.packetLoss is not None and basis.packetLoss >= policy.raise_loss_pct:
            return None
        current = state.target
        ceiling = state.max_bitrate if state.max_bitrate is not None else current.bitrate
        bitrate = min(current.bitrate * policy.raise_factor, ceiling)
        if basis.upload is not None:
            bitrate = min(bitrate, basis.upload * policy.headroom_target)
        failed = state.failed_bitrate
        if failed is not None and state.failed_until is not None and now < state.failed_until:
            bitrate = min(bitrate, failed * policy.failed_margin)
        height = current.height
        if state.max_height is not None:
            height = _fitting_height(_step_up(current.height, state.max_height), bitrate, 0)
            height = max(height or 0, current.height or 0) or None
        fps = current.fps
        if fps is not None and state.max_fps is not None:
            fps = min(state.max_fps, max(fps, round(fps / policy.lower_factor)))
        target = Target(
            bitrate=round(max(bitrate, current.bitrate)), width=None, height=height, fps=fps
        )
        target = replace(target, width=_width_for(target.height, state))
        if not _higher_than(target, current, policy.min_raise_step):
            return None
        return Advice("raise", target, (RECOVERED,), "info", now, basis)

    def _too_soon(self, action: Action, now: datetime) -> bool:
        state = self.state
        return (
            state.last_action == action
            and state.last_issued_at is not None
            and now - state.last_issued_at < self.policy.min_interval
        )

    def _raise_failed(self, now: datetime, bitrate: float) -> None:
        policy, state = self.policy, self.state
        if state.failed_memory_s:
            memory = min(state.failed_memory_s * 2, policy.failed_memory_max.total_seconds())
        else:
            memory = policy.failed_memory.total_seconds()
        state.failed_memory_s = memory
        state.failed_bitrate = bitrate
        state.failed_until = now + timedelta(seconds=memory)

    def _issued(self, advice: Advice) -> None:
        state = self.state
        state.target = advice.target
        state.last_action = advice.action
        state.last_issued_at = advice.issued_at
        state.window = []
        if advice.action == "lower":
            state.fine_since = None


def advise(policy: AdvicePolicy, samples: Iterable[Sample]) -> list[Advice]:
    """Every advice a fresh advisor gives over these samples (for tests and replays)."""
    advisor = Advisor(policy)
    return [a for s in samples if (a := advisor.observe(s)) is not None]


def _lower_than(target: Target, current: Target) -> bool:
    """Whether the target asks for less in some dimension (and never for more)."""
    pairs = [(target.bitrate, current.bitrate), (target.height, current.height)]
    pairs.append((target.fps, current.fps))
    known = [(a, b) for a, b in pairs if a is not None and b is not None]
    return any(a < b for a, b in known) and all(a <= b for a, b in known)


def _higher_than(target: Target, current: Target, min_step: float) -> bool:
    """Whether the target asks for more in some dimension (by `min_step` for the bitrate)."""
    pairs = [(target.height, current.height), (target.fps, current.fps)]
    known = [(a, b) for a, b in pairs if a is not None and b is not None]
    if target.bitrate < current.bitrate or any(a < b for a, b in known):
        return False
    return target.bitrate >= current.bitrate * (1 + min_step) or any(a > b for a, b in known)


def _step_down(height: int | None, floor: int) -> int | None:
    if height is None:
        return None
    lower = [h for h in HEIGHT_LADDER if h < height and h >= floor]
    return lower[0] if lower else height


def _step_up(height: int | None, ceiling: int) -> int | None:
    if height is None:
        return None
    higher = [h for h in reversed(HEIGHT_LADDER) if height < h <= ceiling]
    return higher[0] if higher else height


# The least bitrate (kbps) a picture height needs to look sharp (common live-encoding ladders).
_MIN_KBPS_FOR_HEIGHT = {2160: 13000, 1440: 8000, 1080: 4000, 720: 2000, 540: 1200, 480: 900}


def _fitting_height(height: int | None, bitrate: float, floor: int) -> int | None:
    """The largest ladder height up to `height` that `bitrate` carries, not below `floor`."""
    if height is None:
        return None
    for h in HEIGHT_LADDER:
        if h <= height and bitrate >= _MIN_KBPS_FOR_HEIGHT.get(h, 0):
            return max(h, min(floor, height))
    return max(min(floor, height), HEIGHT_LADDER[-1])


def _width_for(height: int | None, state: AdvisorState) -> int | None:
    """The width of `height` at the stream's own aspect ratio."""
    if height is None or state.max_height is None or state.max_width is None:
        return None
    return round(height * state.max_width / state.max_height / 2) * 2


def _max(current: float | None, value: float | None) -> float | None:
    if value is None:
        return current
    return value if current is None or value > current else current


def _dump_sample(sample: Sample) -> dict[str, Any]:
    data = asdict(sample)
    data["time"] = sample.time.isoformat()
    return data


def _load_sample(data: dict[str, Any]) -> Sample:
    return Sample(**{**data, "time": datetime.fromisoformat(data["time"])})
