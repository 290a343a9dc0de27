"""Quality advice at the ingest service: after each commit, advise streamers (analytics/advice.py).

Committed samples are fed, in commit order, to one `Advisor` per stream. An advice it proposes is
recorded in `stream_advice` together with the advisor's new state in `stream_advisor_state`, and
only the node whose insert went through sends it (`stream:quality:advice` to the stream's
streamers and monitors, through the emit function: with REDIS_URL every node delivers to its own
clients once). The state row carries a version: a node deciding from a state another node has
moved on from records nothing, reloads the state and goes on from there — so a streamer moving
between nodes, or a restarted node, neither repeats nor contradicts the advice already given.

Between advice, the state is this node's memory only (the window of recent samples, since when
the stream has been fine); a restart loses that much and so waits a little longer to raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from analytics.advice import Advice, AdvicePolicy, Advisor, AdvisorState, Sample
from ingest.rows import Committed, StatsRow
from ingest.schema import isoformat
from streamstats.db import CONNECTION_ERRORS
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

ADVICE_EVENT = "stream:quality:advice"
# A stream not heard from for this long has ended: its advisor is forgotten (the state row stays).
FORGET_AFTER = timedelta(minutes=10)
FORGET_EVERY = 10_000  # samples between sweeps

ADVICE = Counter(
    "streamstats_advice",
    "Quality advice sent to streamers, by action and reason",
    ["action", "reason"],
)

# Send an event about a stream to its streamers and monitors: (event, payload, stream id).
Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]


class _Stream:
    """One stream's advisor and the version of the state row it started from."""

    def __init__(self, advisor: Advisor, version: int):
        self.advisor = advisor
        self.version = version
        self.last_seen: datetime | None = None


def policy_from(settings: Settings) -> AdvicePolicy:
    """The advice policy with the configured thresholds (README, "Configuration")."""
    return AdvicePolicy(
        window=settings.advice_window,
        loss_pct=settings.advice_loss_pct,
        latency_ms=settings.advice_latency_ms,
        latency_rise_ms=settings.advice_latency_rise_ms,
        headroom_ratio=settings.advice_headroom_ratio,
        headroom_target=settings.advice_headroom_target,
        fps_ratio=settings.advice_fps_ratio,
        raise_hold=settings.advice_raise_hold,
        min_interval=settings.advice_min_interval,
        floor_kbps=settings.advice_floor_kbps,
        floor_height=settings.advice_floor_height,
        floor_fps=settings.advice_floor_fps,
    )


class QualityAdvice:
    """Feeds committed samples to per-stream advisors; records and sends what they advise."""

    def __init__(self, policy: AdvicePolicy, pool: Callable[[], asyncpg.Pool | None], emit: Emit):
        self.policy = policy
        self._pool = pool
        self._emit = emit
        self._streams: dict[UUID, _Stream] = {}
        self._pending: deque[StatsRow] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._seen = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="quality-advice")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Return once every sample handed over so far has been judged (and its advice sent)."""
        await self._idle.wait()

    # -- the per-batch hook ----------------------------------------------------------------

    def on_commit(self, batch: list[Committed]) -> None:
        """Writer hook: queue the batch's newly stored samples, in commit order."""
        rows = [c.row for c in batch if not c.duplicate]
        if rows:
            self._pending.extend(rows)
            self._idle.clear()
            self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                rows = list(self._pending)
                self._pending.clear()
                try:
                    await self._judge(rows)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Advice is best effort: the samples are stored whatever happens here.
                    logger.exception("quality advice failed", extra={"action": "advice_error"})
            self._idle.set()

    async def _judge(self, rows: list[StatsRow]) -> None:
        await self._load([r.stream_id for r in rows if r.stream_id not in self._streams])
        for row in rows:
            stream = self._streams.get(row.stream_id)
            if stream is None:  # the database was unreachable: judged from the next batch on
                continue
            stream.last_seen = row.time
            advice = stream.advisor.observe(_sample(row))
            if advice is not None:
                await self._issue(row.stream_id, stream, advice)
        self._seen += len(rows)
        if self._seen >= FORGET_EVERY:
            self._seen = 0
            self._forget(max(r.time for r in rows) - FORGET_AFTER)

    # -- state -----------------------------------------------------------------------------

    async def _load(self, stream_ids: list[UUID]) -> None:
        """Pick up the recorded state of streams this node has no advisor for yet."""
        missing = list(dict.fromkeys(stream_ids))
        if not missing:
            return
        pool = self._pool()
        if pool is None:
            return
        try:
            async with pool.acquire() as conn:
                records = await conn.fetch(queries["advice_states"], missing)
        except CONNECTION_ERRORS as exc:
            logger.warning("advice state unavailable: %s", exc, extra={"action": "advice_error"})
            return
        found = {r["stream_id"]: r for r in records}
        for stream_id in missing:
            record = found.get(stream_id)
            if record is None:
                self._streams[stream_id] = _Stream(Advisor(self.policy), 0)
            else:
                state = AdvisorState.from_dict(record["state"])
                self._streams[stream_id] = _Stream(
                    Advisor(self.policy, state), int(record["version"])
                )

    def _forget(self, before: datetime) -> None:
        for stream_id in [
            s for s, st in self._streams.items() if st.last_seen is None or st.last_seen < before
        ]:
            del self._streams[stream_id]

    async def _issue(self, stream_id: UUID, stream: _Stream, advice: Advice) -> None:
        pool = self._pool()
        record = None
        if pool is not None:
            try:
                async with pool.acquire() as conn:
                    record = await conn.fetchrow(
                        queries["advice_record"],
                        stream_id,
                        advice.issued_at,
                        stream.version,
                        stream.advisor.state.to_dict(),
                        advice.action,
                        advice.target.to_dict(),
                        list(advice.reasons),
                        advice.severity,
                        advice.basis.to_dict(),
                    )
            except CONNECTION_ERRORS as exc:
                logger.warning(
                    "advice not recorded: %s", exc, extra={"action": "advice_unavailable"}
                )
        # Not recorded (another node moved the state on, or no database): not sent either; the
        # stream is judged afresh from the recorded state with its next samples.
        del self._streams[stream_id]
        if record is None:
            return
        stream.version = int(record["version"])
        self._streams[stream_id] = stream
        for reason in advice.reasons:
            ADVICE.labels(advice.action, reason).inc()
        logger.info(
            "advice %s for %s: %s",
            advice.action,
            stream_id,
            ", ".join(advice.reasons),
            extra={"action": "advice", "stream_id": str(stream_id), "advice": advice.action},
        )
        payload = advice_payload(stream_id, int(record["id"]), advice)
        await self._emit(ADVICE_EVENT, payload, str(stream_id))


def advice_payload(stream_id: UUID, advice_id: int, advice: Advice) -> dict[str, Any]:
    """The `stream:quality:advice` event (docs/protocol.md)."""
    return {
        "streamId": str(stream_id),
        "adviceId": advice_id,
        "action": advice.action,
        "target": advice.target.to_dict(),
        "reasons": list(advice.reasons),
        "severity": advice.severity,
        "issuedAt": isoformat(advice.issued_at),
        "basis": advice.basis.to_dict(),
    }


def _sample(row: StatsRow) -> Sample:
    return Sample(
        time=row.time,
        bitrate_kbps=row.bitrate_kbps,
        fps=row.fps,
        width=row.width,
        height=row.height,
        packet_loss_pct=row.packet_loss_pct,
        latency_ms=row.latency_ms,
        upload_kbps=row.upload_kbps,
    )
