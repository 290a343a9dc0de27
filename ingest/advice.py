"""Quality advice at the ingest service: after each commit, advise streamers (analytics/advice.py).

A per-batch hook (ingest/hooks.py, on its own lane) feeds committed samples, in commit order, to
one `Advisor` per stream. An advice it proposes is recorded in `stream_advice` together with the
advisor's new state in `stream_advisor_state`, and only the node whose insert went through sends
it (`stream:quality:advice` to the stream's streamers and monitors, through ingest/rooms.py: with
REDIS_URL every node delivers to its own clients once). The state row carries a version: a node
deciding from a state another node has moved on from records nothing, reloads the state and goes
on from there — so a streamer moving between nodes, or a restarted node, neither repeats nor
contradicts the advice already given. `stream:quality:applied` records what the streamer applied.

Between advice, the state is this node's memory only (the window of recent samples, since when
the stream has been fine); a restart loses that much and so waits a little longer to raise.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from analytics.advice import Advice, AdvicePolicy, Advisor, AdvisorState, Sample
from ingest.auth import Action
from ingest.errors import Forbidden, Invalid, Unavailable
from ingest.events import Answer, Connection, Handler
from ingest.hooks import Batch, CommitHooks
from ingest.rows import StatsRow
from ingest.schema import isoformat, stream_ref
from streamstats.db import CONNECTION_ERRORS
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

ADVICE_EVENT = "stream:quality:advice"
# A stream not heard from for this long has ended: its advisor is forgotten (the state row stays).
FORGET_AFTER = timedelta(minutes=10)
FORGET_EVERY = 10_000  # samples between sweeps

# What `stream:quality:applied` may say was set (clients/js/quality-advice.js).
APPLIED_FIELDS = ("maxBitrate", "scaleResolutionDownBy", "maxFramerate")

ADVICE = Counter(
    "streamstats_advice",
    "Quality advice sent to streamers, by action and reason",
    ["action", "reason"],
)

APPLIED_EVENT = "stream:quality:applied"


class Host(Protocol):
    """What the advice needs of the ingest node (ingest/app.py's IngestApp)."""

    @property
    def pool(self) -> asyncpg.Pool | None: ...

    async def broadcast(
        self, event: str, payloads: list[dict[str, Any]], *, streamers: bool, local: bool = False
    ) -> None: ...


class Registry(Host, Protocol):
    """Where `install` hangs the advice: settings, per-batch hooks, event handlers."""

    @property
    def settings(self) -> Settings: ...

    @property
    def commit_hooks(self) -> CommitHooks: ...

    def add_handler(self, event: str, handler: Handler, action: Action | None = None) -> None: ...


def install(app: Registry) -> QualityAdvice | None:
    """Advise streamers after each commit and take their reports (unless advice is disabled)."""
    if not app.settings.advice_enabled:
        return None
    advice = QualityAdvice(policy_from(app.settings), app)
    app.commit_hooks.add_async(advice.on_commit, "advice")
    app.add_handler(APPLIED_EVENT, advice.on_applied, "update")
    return advice


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

    def __init__(self, policy: AdvicePolicy, host: Host):
        self.policy = policy
        self.host = host
        self._streams: dict[UUID, _Stream] = {}
        self._seen = 0

    async def on_commit(self, batch: Batch) -> None:
        """Per-batch hook: judge the batch's newly stored samples, in commit order."""
        rows = [c.row for c in batch if not c.duplicate]
        if rows:
            await self._judge(rows)

    async def on_applied(
        self, sid: str, connection: Connection, data: Any, stream: UUID | None
    ) -> Answer:
        """`stream:quality:applied {streamId, adviceId, applied}`: record what was applied."""
        principal = connection.principal
        if not principal.can("update"):
            raise Forbidden(f"a {principal.role} may not send {APPLIED_EVENT}")
        stream_id = stream_ref(data)
        advice_id = data.get("adviceId")
        if not isinstance(advice_id, int) or isinstance(advice_id, bool) or advice_id < 1:
            raise Invalid("adviceId must be the positive integer of an advice", field="adviceId")
        applied = data.get("applied")
        if not isinstance(applied, dict) or set(applied) - set(APPLIED_FIELDS):
            raise Invalid(
                f"applied must be an object with {', '.join(APPLIED_FIELDS)}", field="applied"
            )
        for name, value in applied.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise Invalid(f"applied.{name} must be a positive number or null", field=name)
        pool = self.host.pool
        if pool is None:
            raise Unavailable("the database is unreachable, retry later")
        try:
            async with pool.acquire() as conn:
                found = await conn.fetchval(
                    queries["advice_applied"], advice_id, UUID(stream_id), applied
                )
        except CONNECTION_ERRORS as exc:
            raise Unavailable("the database is unreachable, retry later") from exc
        if found is None:
            raise Invalid(
                f"no advice {advice_id} was given to stream {stream_id}", field="adviceId"
            )
        return {"ok": True, "streamId": stream_id, "adviceId": advice_id}

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
        pool = self.host.pool
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
        pool = self.host.pool
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
        await self.host.broadcast(ADVICE_EVENT, [payload], streamers=True)


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


def stored_advice(stream_id: str, record: asyncpg.Record) -> dict[str, Any]:
    """A `stream_advice` row as the `stream:quality:advice` event, with `appliedAt`."""
    applied = record["applied_at"]
    return {
        "streamId": stream_id,
        "adviceId": record["id"],
        "action": record["action"],
        "target": record["target"],
        "reasons": list(record["reasons"]),
        "severity": record["severity"],
        "issuedAt": isoformat(record["issued_at"]),
        "basis": record["basis"],
        "appliedAt": None if applied is None else isoformat(applied),
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
