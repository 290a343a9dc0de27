"""The rebuffering job: raise and clear `rebuffering_high` from the viewers' recent beacons.

Every run judges each stream over the beacons stamped in the trailing
`STREAMSTATS_ALERT_REBUFFER_WINDOW` (viewer_experience_bucket(), the same definition as the
rollups): rebuffering over the threshold across enough views raises, rebuffering back down to
the clear threshold (or nobody watching) clears (analytics/viewer.py's RebufferRule). Whether an
episode is open is decided by `stream_alerts` (its partial unique index), and each transition is
written to the alert outbox in the same transaction (streamstats/outbox.py): a failed run
announces nothing, a second runner or a re-run finds the episode as it is and announces nothing
again, and every client hears each transition once from its own ingest node's relay.
"""

from __future__ import annotations

import logging
from typing import Literal

from analytics.alerts import alert_payload
from analytics.viewer import RebufferRule, rebuffer_transition
from jobs.base import JobContext
from streamstats import outbox
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

ALERT_TYPE = "rebuffering_high"


def rebuffer_rule(settings: Settings) -> RebufferRule:
    """The alert's thresholds from the settings."""
    return RebufferRule(
        raise_pct=settings.alert_rebuffer_pct,
        clear_pct=settings.alert_rebuffer_clear_pct,
        min_views=settings.alert_rebuffer_min_views,
    )


async def run(ctx: JobContext) -> int:
    """Judge every stream with recent beacons or an open alert; returns transitions made."""
    rule = rebuffer_rule(ctx.settings)
    since = ctx.now - ctx.settings.alert_rebuffer_window
    changed = 0
    async with ctx.pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch(queries["rebuffering_windows"], since):
            stream_id, views, pct = row["stream_id"], row["views"], row["rebuffer_pct"]
            step = rebuffer_transition(rule, views, pct, row["open"])
            if step is None:
                continue
            state: Literal["raised", "cleared"]
            if step == "raise":
                opened = await conn.fetchrow(
                    queries["alert_raise"], stream_id, ALERT_TYPE, pct, rule.raise_pct, ctx.now
                )
                if opened is None:
                    continue
                state = "raised"
                payload = alert_payload(
                    stream_id, ALERT_TYPE, state, pct, rule.raise_pct, opened["raised_at"]
                )
                logger.warning(
                    "rebuffering on stream %s: %.1f%% of the time across %d views (threshold %g%%)",
                    stream_id,
                    pct,
                    views,
                    rule.raise_pct,
                    extra={
                        "action": "alert_raised",
                        "stream_id": str(stream_id),
                        "type": ALERT_TYPE,
                    },
                )
            else:
                closed = await conn.fetchrow(queries["alert_clear"], stream_id, ALERT_TYPE, ctx.now)
                if closed is None:
                    continue
                state = "cleared"
                payload = alert_payload(
                    stream_id,
                    ALERT_TYPE,
                    state,
                    pct if pct is not None else 0.0,
                    closed["threshold"],
                    closed["raised_at"],
                    closed["cleared_at"],
                )
                logger.info(
                    "rebuffering on stream %s cleared (%s%% across %d views)",
                    stream_id,
                    "-" if pct is None else f"{pct:.1f}",
                    views,
                    extra={
                        "action": "alert_cleared",
                        "stream_id": str(stream_id),
                        "type": ALERT_TYPE,
                    },
                )
            await outbox.publish(conn, payload)
            changed += 1
    return changed
