"""The bitrate-drops job: detect drops since the previous run, store them once, tell clients.

One transaction per run: the watermark row is locked first (so two runs never interleave, with or
without the runner's advisory lock), new and ended episodes are upserted, and each start and end is
written to the alert outbox (streamstats/outbox.py) in the same transaction: a run that fails
announces nothing, and a re-run finds the episodes already stored and announces nothing again.
From the outbox every ingest node relays them to its own clients and webhooks deliver them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg
import pandas as pd

from analytics.alerts import alert_payload
from analytics.drops import DropParams, OpenDrop, detect_drops, look_back
from jobs.base import JobContext
from streamstats import outbox
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

DROP_TYPE = "bitrate_drop"
# A runner that was down catches up in steps of this much sample time, one transaction each, so
# memory stays bounded however long it was away.
CATCH_UP_STEP = timedelta(hours=1)
# Samples are keyed by the client's clock and reach the table late: the ~50 ms batch, writer
# retries for up to `write_timeout`, and clients whose clock runs behind the server's. A sample
# is judged only once (after the watermark), so a run judges only up to `now - settle`: anything
# stamped earlier has had time to be committed. Driving the watermark by `received_at` instead
# would need per-stream progress (sample time is what the medians run on) and an index on
# received_at that every insert pays for; a fixed settle costs the same delay on every alert.
# A client clock more than CLOCK_SKEW behind still loses its samples to history only.
CLOCK_SKEW = timedelta(seconds=20)


def settle(settings: Settings) -> timedelta:
    """How far behind `now` a run judges samples: the write path's delay plus clock skew."""
    return settings.write_timeout + timedelta(milliseconds=settings.batch_ms) + CLOCK_SKEW


def drop_params(settings: Settings) -> DropParams:
    """The detector's parameters from the settings."""
    return DropParams(
        window=settings.drop_window,
        baseline_window=settings.drop_baseline_window,
        start_ratio=settings.drop_start_ratio,
        end_ratio=settings.drop_end_ratio,
        min_baseline_kbps=settings.drop_min_baseline_kbps,
    )


async def run(ctx: JobContext) -> int:
    """Detect drops in the samples since the previous run; returns episodes started + ended."""
    params = drop_params(ctx.settings)
    horizon = ctx.now - settle(ctx.settings)
    changed = 0
    while True:
        found, caught_up = await _scan(ctx, params, horizon)
        changed += found
        if caught_up:
            return changed


async def _scan(ctx: JobContext, params: DropParams, horizon: datetime) -> tuple[int, bool]:
    """One transaction over at most CATCH_UP_STEP after the watermark; (changed, caught up)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        since: datetime = await conn.fetchval(
            queries["drops_watermark"], horizon - ctx.settings.drops_first_lookback
        )
        until = min(horizon, since + CATCH_UP_STEP)
        if since >= until:
            return 0, True
        open_drops = {
            row["stream_id"]: OpenDrop(
                pd.Timestamp(row["started_at"]), row["baseline_kbps"], row["observed_kbps"]
            )
            for row in await conn.fetch(queries["drops_open"])
        }
        rows = await conn.fetch(queries["drops_samples"], since - look_back(params), until)
        samples = pd.DataFrame(
            [tuple(row) for row in rows], columns=["stream_id", "time", "bitrate_kbps"]
        )
        samples["time"] = pd.to_datetime(samples["time"], utc=True)
        episodes = detect_drops(
            samples,
            params,
            since=pd.Timestamp(since),
            until=pd.Timestamp(until),
            open_drops=open_drops,
        )
        changed = await _store(conn, episodes, params) if len(episodes) else 0
        await conn.execute(queries["drops_watermark_set"], until)
    logger.info(
        "drops: looked at %d samples of %d streams up to %s, %d episodes started or ended",
        len(samples),
        samples["stream_id"].nunique(),
        until.isoformat(),
        changed,
        extra={"action": "drops_scanned", "samples": len(samples), "changed": changed},
    )
    return changed, until >= horizon


async def _store(conn: asyncpg.Connection, episodes: pd.DataFrame, params: DropParams) -> int:
    ended = [None if pd.isna(t) else t.to_pydatetime() for t in episodes["ended_at"]]
    stored = await conn.fetch(
        queries["drops_upsert"],
        list(episodes["stream_id"]),
        [t.to_pydatetime() for t in episodes["started_at"]],
        ended,
        episodes["baseline_kbps"].tolist(),
        episodes["observed_kbps"].tolist(),
        episodes["drop_pct"].tolist(),
    )
    changed = 0
    for row in stored:
        threshold = round(row["baseline_kbps"] * params.start_ratio, 3)
        states = (["raised"] if row["started"] else []) + (["cleared"] if row["ended_at"] else [])
        for state in states:
            changed += 1
            _log(row, state)
            payload = alert_payload(
                row["stream_id"],
                DROP_TYPE,
                state,  # type: ignore[arg-type]
                row["observed_kbps"],
                threshold,
                row["started_at"],
                row["ended_at"] if state == "cleared" else None,
            )
            await outbox.publish(conn, payload)
    return changed


def _log(row: asyncpg.Record, state: str) -> None:
    extra = {
        "action": f"bitrate_drop_{state}",
        "stream_id": str(row["stream_id"]),
        "baseline_kbps": row["baseline_kbps"],
        "observed_kbps": row["observed_kbps"],
        "drop_pct": row["drop_pct"],
    }
    if state == "raised":
        logger.warning(
            "bitrate drop on stream %s since %s: %.0f kbps against a baseline of %.0f (-%.0f%%)",
            row["stream_id"],
            row["started_at"].isoformat(),
            row["observed_kbps"],
            row["baseline_kbps"],
            row["drop_pct"],
            extra=extra,
        )
    else:
        logger.info(
            "bitrate drop on stream %s ended at %s (lowest %.0f kbps, -%.0f%%)",
            row["stream_id"],
            row["ended_at"].isoformat(),
            row["observed_kbps"],
            row["drop_pct"],
            extra=extra,
        )
