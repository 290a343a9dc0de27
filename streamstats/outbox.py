"""The alert outbox: each alert transition is stored with its episode change, then delivered.

Whatever opens or closes an alert episode calls `publish(conn, alert_payload(...))` inside the
transaction that changes the episode. That one call is all an alert type needs to reach
everybody: the row commits or rolls back with the episode, and from it

- every ingest node's relay (ingest/relay.py) emits `stream:alert` to its own clients, woken by
  a NOTIFY at commit and catching up from the table after a lost LISTEN connection;
- the webhook worker (jobs/webhooks.py) POSTs it to every configured endpoint, at least once.

Adding an alert type (say `rebuffering_high`): store its episode as the type sees fit and, in
the same transaction, `await publish(conn, alert_payload(stream_id, "rebuffering_high",
"raised", value, threshold, started_at))` — and the same with "cleared" and `ended_at`.

Nothing that reaches clients comes from the NOTIFY payload: any database login, a read-only
analyst's included, may NOTIFY any channel, while only the service's roles may write here.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from analytics.alerts import ALERT_CHANNEL
from streamstats.sql import queries

# Webhook event types, by the alert's state.
EVENT_TYPES = {"raised": "alert.raised", "cleared": "alert.cleared"}


async def publish(conn: asyncpg.Connection, payload: dict[str, Any]) -> int:
    """Record one alert transition (a `stream:alert` payload) in the caller's transaction.

    Returns the outbox id. Must run inside a transaction: the per-stream lock it takes keeps the
    ids of one stream in commit order (webhooks are delivered per stream in that order), and
    the row must commit or roll back with the episode change it announces.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.publish must run in the episode's transaction")
    stream_id = payload["streamId"]
    await conn.execute(queries["outbox_stream_lock"], stream_id)
    event_id: int = await conn.fetchval(
        queries["outbox_insert"],
        EVENT_TYPES[payload["state"]],
        stream_id,
        json.dumps(payload),
    )
    await conn.execute(queries["outbox_notify"], ALERT_CHANNEL, str(event_id))
    return event_id
