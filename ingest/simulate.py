"""Realistic streamers and viewers against a running server (`streamstats simulate`).

Each simulated streamer has a resolution/bitrate profile and a network; it streams steadily
most of the time and now and then goes through a congestion episode (packet loss and latency
spike, bitrate collapses, the encoder steps down a resolution, then recovers), an fps dip
(encoder overload) or a reconnect. Viewers join a stream, watch for a while, leave and pick
another; while watching, each one's player sends a `stream:viewer:stats` beacon every two
update intervals (`PlaybackModel`), and it stalls and switches down when its streamer is
congested. A progress line shows what was sent, acknowledged and refused per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import socketio

from ingest.auth import mint_token
from ingest.client import StatsClient
from streamstats.settings import Settings

logger = logging.getLogger(__name__)

# Encoder ladder: (width, height, target bitrate kbps).
LADDER = ((1920, 1080, 6000.0), (1280, 720, 3500.0), (854, 480, 1500.0), (640, 360, 800.0))

# Per-update chances of starting an episode.
P_CONGESTION = 0.03
P_FPS_DIP = 0.02
P_RECONNECT = 0.005
P_SILENCE = 0.02


@dataclass
class StreamModel:
    """One streamer's encoder and network, advanced one update at a time (no I/O)."""

    stream_id: str
    rng: random.Random
    rung: int = 0
    target_fps: float = 30.0
    base_latency: float = 40.0
    base_loss: float = 0.2
    congestion: int = 0  # updates left in a congestion episode
    severity: float = 0.0
    fps_dip: int = 0
    calm: int = 0  # consecutive calm updates, to step the resolution back up
    bitrate: float = 0.0
    last: datetime | None = None

    @classmethod
    def random(cls, rng: random.Random, stream_id: str | None = None) -> StreamModel:
        """A streamer with a random profile: resolution, frame rate, network quality."""
        model = cls(
            stream_id=stream_id or str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            rng=rng,
            rung=rng.choices(range(3), weights=(5, 4, 1))[0],
            target_fps=rng.choice((30.0, 30.0, 60.0)),
            base_latency=rng.uniform(15, 90),
            base_loss=rng.uniform(0, 0.6),
        )
        model.bitrate = LADDER[model.rung][2]
        return model

    @property
    def state(self) -> str:
        if self.congestion:
            return "congested"
        if self.fps_dip:
            return "fps_dip"
        return "steady"

    def timestamp(self, now: datetime) -> datetime:
        """`now`, but strictly after the previous update: (stream, time) is the row's key."""
        if self.last is not None and now <= self.last:
            now = self.last + timedelta(milliseconds=1)
        self.last = now
        return now

    def step(self, now: datetime) -> dict[str, Any]:
        """The next `stream:stats:update` payload."""
        rng = self.rng
        if not self.congestion and rng.random() < P_CONGESTION:
            self.congestion = rng.randint(3, 8)
            self.severity = rng.uniform(0.4, 1.0)
        if not self.fps_dip and rng.random() < P_FPS_DIP:
            self.fps_dip = rng.randint(2, 4)

        width, height, target = LADDER[self.rung]
        congested = self.congestion > 0
        if congested:
            self.congestion -= 1
            self.calm = 0
            loss = self.base_loss + self.severity * rng.uniform(4, 18)
            latency = self.base_latency + self.severity * rng.uniform(150, 700)
            # Congestion control collapses the bitrate; a long episode makes the encoder step down.
            self.bitrate = max(100.0, self.bitrate * rng.uniform(0.3, 0.6))
            if self.severity > 0.7 and self.rung < len(LADDER) - 1 and rng.random() < 0.4:
                self.rung += 1
        else:
            self.calm += 1
            loss = max(0.0, self.base_loss + rng.gauss(0, 0.15))
            latency = max(1.0, self.base_latency + rng.gauss(0, 8))
            # Recover towards the target over a few updates.
            self.bitrate += (target - self.bitrate) * 0.5 + rng.gauss(0, target * 0.03)
            if self.calm > 12 and self.rung > 0 and rng.random() < 0.2:
                self.rung -= 1
                self.calm = 0
        if self.fps_dip:
            self.fps_dip -= 1
            fps = self.target_fps * rng.uniform(0.35, 0.65)
        elif congested:
            fps = self.target_fps * rng.uniform(0.6, 0.95)
        else:
            fps = self.target_fps - abs(rng.gauss(0, 0.6))
        audio = -60.0 + rng.gauss(0, 2) if rng.random() < P_SILENCE else rng.uniform(-32, -10)
        headroom = rng.uniform(1.1, 1.5) if congested else rng.uniform(1.4, 2.5)
        upload = self.bitrate * headroom
        return {
            "streamId": self.stream_id,
            "stats": {
                "bitrate": round(max(0.0, self.bitrate), 1),
                "fps": round(max(0.0, fps), 2),
                "resolution": {"width": width, "height": height},
                "audioLevel": round(max(-200.0, audio), 1),
                "packetLoss": round(min(100.0, loss), 2),
                "latency": round(latency, 1),
                "bandwidth": {
                    "upload": round(upload, 1),
                    "download": round(rng.uniform(8000, 60000), 1),
                },
            },
            "timestamp": _iso(self.timestamp(now)),
        }


# Per-playback chances: it fails to start, or the viewer leaves before the first frame.
P_FAIL = 0.01
P_EXIT_BEFORE_START = 0.02
# Per-beacon chances of a stall while the streamer is calm / congested (times its severity),
# and of the viewer pausing for the interval.
P_STALL_CALM = 0.03
P_STALL_CONGESTED = 0.7
P_PAUSE = 0.02


@dataclass
class PlaybackModel:
    """One viewer's player watching one stream, advanced one beacon at a time (no I/O).

    It starts in about a second (several when the streamer is congested), then plays; while its
    streamer is congested it stalls far more often and for longer, and its adaptive bitrate
    steps down a rendition, stepping back up once the stream is calm. Counters are cumulative
    as the protocol asks, and grow by no more than the time between beacons.
    """

    stream: StreamModel
    rng: random.Random
    view_id: str
    rung: int = 0
    state: str = "starting"
    startup_ms: float | None = None
    watch_ms: float = 0.0
    stall_count: int = 0
    stall_ms: float = 0.0
    up: int = 0
    down: int = 0
    error: dict[str, str] | None = None
    last: datetime | None = None

    @classmethod
    def start(cls, stream: StreamModel, rng: random.Random) -> PlaybackModel:
        view_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return cls(stream=stream, rng=rng, view_id=view_id, rung=stream.rung)

    @property
    def over(self) -> bool:
        return self.state in ("ended", "failed")

    def step(self, now: datetime, elapsed_s: float) -> dict[str, Any]:
        """The beacon after `elapsed_s` seconds more of watching."""
        rng = self.rng
        congested = self.stream.congestion > 0
        budget = elapsed_s * 1000
        if self.state == "starting":
            if rng.random() < P_FAIL * (5 if congested else 1):
                self.state = "failed"
                self.error = {"code": "MEDIA_ERR_NETWORK", "message": "the stream did not load"}
                return self._beacon(now)
            if rng.random() < P_EXIT_BEFORE_START:
                self.state = "ended"
                return self._beacon(now)
            startup = rng.lognormvariate(math.log(900), 0.4) * (
                rng.uniform(2, 5) if congested else 1
            )
            self.startup_ms = round(min(startup, budget), 1)
            budget -= self.startup_ms
            self.state = "playing"
        if rng.random() < P_PAUSE:
            self.state = "paused"
            return self._beacon(now)
        chance = P_STALL_CONGESTED * self.stream.severity if congested else P_STALL_CALM
        self.state = "playing"
        if rng.random() < chance:
            longest = 6000 * self.stream.severity if congested else 1500
            stalled = min(budget, rng.uniform(300, max(300, longest)))
            self.stall_count += 1
            self.stall_ms += round(stalled, 1)
            budget -= stalled
            if rng.random() < 0.2:
                self.state = "stalled"  # still waiting for data as the beacon goes out
        self.watch_ms += round(max(0.0, budget), 1)
        if congested and self.rung < len(LADDER) - 1 and rng.random() < 0.6:
            self.rung += 1
            self.down += 1
        elif not congested and self.rung > self.stream.rung and rng.random() < 0.3:
            self.rung -= 1
            self.up += 1
        return self._beacon(now)

    def finish(self, now: datetime) -> dict[str, Any]:
        """The last beacon: the viewer leaves."""
        if not self.over:
            self.state = "ended"
        return self._beacon(now)

    def _beacon(self, now: datetime) -> dict[str, Any]:
        if self.last is not None and now <= self.last:
            now = self.last + timedelta(milliseconds=1)
        self.last = now
        width, height, kbps = LADDER[self.rung]
        beacon: dict[str, Any] = {
            "streamId": self.stream.stream_id,
            "viewId": self.view_id,
            "timestamp": _iso(now),
            "state": self.state,
            "startupTime": self.startup_ms,
            "watchTime": round(self.watch_ms, 1),
            "stalls": {"count": self.stall_count, "duration": round(self.stall_ms, 1)},
            "renditionChanges": {"up": self.up, "down": self.down},
            "bitrate": kbps,
            "resolution": {"width": width, "height": height},
        }
        if self.error is not None:
            beacon["error"] = self.error
        return beacon


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Tally:
    """What the simulation did, for the progress line and the final summary."""

    sent: int = 0
    acknowledged: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    joins: int = 0
    leaves: int = 0
    viewers: int = 0  # viewer connections currently joined
    beacons: int = 0
    beacons_acknowledged: int = 0
    acked_keys: set[tuple[str, str]] = field(default_factory=set)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def stored(self) -> int:
        """Distinct (stream, timestamp) acknowledged: the rows the server says it holds."""
        return len(self.acked_keys)

    def summary(self) -> str:
        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items())) or "none"
        return (
            f"sent {self.sent}, acknowledged {self.acknowledged} "
            f"({self.duplicates} duplicates, {self.stored} distinct rows), errors: {errors}; "
            f"{self.reconnects} reconnects, {self.joins} joins, {self.leaves} leaves, "
            f"{self.beacons} viewer beacons ({self.beacons_acknowledged} acknowledged)"
        )


class Progress:
    """One status line, rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, tally: Tally, out: TextIO = sys.stderr, every: float = 1.0):
        self.tally = tally
        self.out = out
        self.tty = out.isatty()
        self.every = every if self.tty else max(every, 5.0)
        self.started = time.monotonic()
        self._last = (self.started, 0, 0, 0)

    def line(self) -> str:
        now = time.monotonic()
        t = self.tally
        then, sent, acked, errors = self._last
        span = max(now - then, 1e-6)
        self._last = (now, t.sent, t.acknowledged, t.error_count)
        return (
            f"{now - self.started:6.0f}s  sent {t.sent} ({(t.sent - sent) / span:.0f}/s)  "
            f"acked {t.acknowledged} ({(t.acknowledged - acked) / span:.0f}/s)  "
            f"errors {t.error_count} ({(t.error_count - errors) / span:.0f}/s)  "
            f"viewers {t.viewers}  reconnects {t.reconnects}"
        )

    def show(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.out.write("\r" + text + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.show()


class Simulation:
    """Streamers and viewers against one server until `duration` passes or it is cancelled."""

    def __init__(
        self,
        secret: str,
        *,
        url: str,
        streams: int,
        viewers: int,
        interval: float,
        seed: int | None = None,
    ):
        self.secret = secret
        self.url = url
        self.interval = interval
        self.rng = random.Random(seed)
        self.models = [StreamModel.random(random.Random(self.rng.random())) for _ in range(streams)]
        self.viewers = viewers
        self.tally = Tally()
        self.clients: list[StatsClient] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    @property
    def resends(self) -> int:
        return sum(client.resends for client in self.clients)

    async def run(self, duration: float) -> Tally:
        """Run for `duration` seconds (`inf`: until cancelled), then wait for outstanding acks."""
        tasks = [
            asyncio.create_task(self._streamer(model, i)) for i, model in enumerate(self.models)
        ]
        tasks += [asyncio.create_task(self._viewer(i)) for i in range(self.viewers)]
        try:
            if duration != float("inf"):
                await asyncio.sleep(duration)
            else:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            # Stopped from outside (e.g. `streamstats run` shutting down): don't wait for acks.
            self._stopping.set()
            await self._finish(tasks, grace=0)
            raise
        self._stopping.set()
        await self._finish(tasks, grace=15)
        return self.tally

    async def _finish(self, tasks: list[asyncio.Task[None]], grace: float) -> None:
        # Let acknowledgements of what was sent arrive (the client resends until they do), and
        # viewers send their final beacons.
        waiting = [*tasks, *self._sends]
        if grace and waiting:
            await asyncio.wait(waiting, timeout=grace)
        for task in [*tasks, *self._sends]:
            task.cancel()
        await asyncio.gather(*tasks, *self._sends, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)

    def _token(self, role: str, streams: list[str], sub: str) -> str:
        return mint_token(self.secret, role=role, streams=streams, sub=sub, ttl=24 * 3600)

    async def _streamer(self, model: StreamModel, index: int) -> None:
        rng = model.rng
        token = self._token("streamer", [model.stream_id], f"sim-streamer-{index}")
        client = StatsClient()
        self.clients.append(client)
        # Spread connects and first updates over one interval, as real streamers would be.
        await asyncio.sleep(rng.uniform(0, self.interval))
        await client.connect(self.url, token)
        next_at = time.monotonic()
        while not self._stopping.is_set():
            payload = model.step(datetime.now(UTC))
            self.tally.sent += 1
            self._spawn(self._send(client, payload))
            if rng.random() < P_RECONNECT:
                await self._reconnect(client, token, rng)
            next_at += self.interval * rng.uniform(0.95, 1.05)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, client: StatsClient, payload: dict[str, Any]) -> None:
        try:
            ack = await client.send(payload)
        except ConnectionError:
            self.tally.errors["closed"] += 1
            return
        if ack.get("ok"):
            self.tally.acknowledged += 1
            self.tally.duplicates += bool(ack.get("duplicate"))
            self.tally.acked_keys.add((payload["streamId"], payload["timestamp"]))
        else:
            self.tally.errors[(ack.get("error") or {}).get("code", "error")] += 1

    async def _reconnect(self, client: StatsClient, token: str, rng: random.Random) -> None:
        """The streamer's network drops for a moment; the client resends what was in flight."""
        self.tally.reconnects += 1
        await client.sio.disconnect()
        await asyncio.sleep(rng.uniform(0.2, min(3.0, self.interval)))
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await client.connect(self.url, token)

    async def _watch(
        self, sio: socketio.AsyncClient, playback: PlaybackModel, rng: random.Random
    ) -> None:
        """Watch for a while, a beacon every two update intervals, then the final beacon."""
        every = 2 * self.interval
        until = time.monotonic() + rng.expovariate(1 / (6 * self.interval))
        last = time.monotonic()
        while not playback.over and not self._stopping.is_set() and time.monotonic() < until:
            await self._pause(min(every, max(0.0, until - time.monotonic())))
            moment = time.monotonic()
            await self._beacon(sio, playback.step(datetime.now(UTC), moment - last))
            last = moment
        if not playback.over and sio.connected:
            await self._beacon(sio, playback.finish(datetime.now(UTC)))

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake when the simulation stops (a viewer then ends its view at once)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _beacon(self, sio: socketio.AsyncClient, beacon: dict[str, Any]) -> None:
        self.tally.beacons += 1
        try:
            ack = await sio.call("stream:viewer:stats", beacon, timeout=10)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
            self.tally.errors["beacon_timeout"] += 1
            return
        if isinstance(ack, dict) and ack.get("ok"):
            self.tally.beacons_acknowledged += 1
        else:
            error = ack.get("error") if isinstance(ack, dict) else None
            self.tally.errors["beacon_" + (error or {}).get("code", "error")] += 1

    async def _viewer(self, index: int) -> None:
        """Joins a stream, watches a while, leaves, sometimes switches stream or reconnects."""
        rng = random.Random(self.rng.random())
        choices = rng.sample(self.models, k=min(3, len(self.models)))
        streams = [m.stream_id for m in choices]
        token = self._token("viewer", streams, f"sim-viewer-{index}")
        await asyncio.sleep(rng.uniform(0, self.interval))
        while not self._stopping.is_set():
            sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
            try:
                await sio.connect(self.url, auth={"token": token}, transports=["websocket"])
                for _ in range(rng.randint(1, 4)):
                    model = rng.choice(choices)
                    await sio.emit("stream:join", {"streamId": model.stream_id})
                    self.tally.joins += 1
                    self.tally.viewers += 1
                    try:
                        await self._watch(sio, PlaybackModel.start(model, rng), rng)
                    finally:
                        self.tally.viewers -= 1
                    if not sio.connected:
                        break
                    await sio.emit("stream:leave", {"streamId": model.stream_id})
                    self.tally.leaves += 1
            except socketio.exceptions.ConnectionError:
                self.tally.errors["viewer_connect"] += 1
            finally:
                await sio.disconnect()
                await sio.shutdown()
            await self._pause(rng.uniform(0, 2 * self.interval))


async def simulate(
    settings: Settings,
    *,
    url: str,
    streams: int,
    viewers: int = 0,
    duration: float = 60.0,
    interval: float = 5.0,
    seed: int | None = None,
    out: TextIO = sys.stderr,
) -> Tally:
    """Feed the server at `url` with simulated streamers and viewers; returns what happened."""
    secret = settings.require_jwt_secret()
    simulation = Simulation(
        secret, url=url, streams=streams, viewers=viewers, interval=interval, seed=seed
    )
    progress = Progress(simulation.tally, out)
    ticker = asyncio.create_task(progress.run())
    logger.info(
        "simulating %d streamers and %d viewers against %s",
        streams,
        viewers,
        url,
        extra={"action": "simulate", "streams": streams, "viewers": viewers},
    )
    try:
        return await simulation.run(duration)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        progress.show(final=True)
        out.write(simulation.tally.summary() + f"; {simulation.resends} resends\n")
        out.flush()
