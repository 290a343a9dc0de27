"""The ingest side of quality advice on a real database: recorded once, sent once, carried on."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ingest.advice import ADVICE_EVENT, QualityAdvice, policy_from
from ingest.rows import Committed, StatsRow
from streamstats.db import create_pool

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
STEP = timedelta(seconds=5)


def row(stream: uuid.UUID, i: int, *, bitrate: float, loss: float, upload: float) -> StatsRow:
    return StatsRow(
        T0 + i * STEP, stream, bitrate, 30.0, 1920, 1080, -20.0, loss, 50.0, upload, 9000.0, "good"
    )


class Node:
    """The part of an ingest node advice uses: its pool, and what it broadcast, in order."""

    def __init__(self, pool: asyncpg.Pool | None) -> None:
        self.pool = pool
        self.events: list[tuple[str, dict[str, Any], bool]] = []

    async def broadcast(
        self, event: str, payloads: list[dict[str, Any]], *, streamers: bool, local: bool = False
    ) -> None:
        self.events.extend((event, p, streamers) for p in payloads)


async def feed(service: QualityAdvice, rows: list[StatsRow]) -> None:
    """Hand rows over one committed batch each, as the writer's hook lane does."""
    for r in rows:
        await service.on_commit([Committed(r, False)])


async def test_congestion_advice_is_recorded_and_sent_once(make_settings, conn) -> None:
    settings = make_settings()
    stream = uuid.uuid4()
    pool = await create_pool(settings.database_url)
    node = Node(pool)
    service = QualityAdvice(policy_from(settings), node)
    try:
        good = [row(stream, i, bitrate=4000, loss=0.1, upload=9000) for i in range(6)]
        bad = [row(stream, i, bitrate=4000, loss=12, upload=9000) for i in range(6, 10)]
        await feed(service, good + bad)
    finally:
        await pool.close()
    assert [(e, p["action"]) for e, p, _ in node.events] == [(ADVICE_EVENT, "lower")]
    _, payload, to_streamers = node.events[0]
    assert to_streamers
    assert payload["streamId"] == str(stream)
    assert payload["reasons"] == ["packet_loss"]
    assert payload["severity"] == "critical"
    assert payload["target"]["bitrate"] == 2000
    assert payload["basis"]["packetLoss"] == 12
    stored = await conn.fetch("SELECT * FROM stream_advice WHERE stream_id = $1", stream)
    assert len(stored) == 1
    assert stored[0]["id"] == payload["adviceId"]
    assert stored[0]["action"] == "lower"
    assert stored[0]["reasons"] == ["packet_loss"]
    assert stored[0]["issued_at"] == T0 + 7 * STEP


async def test_a_restarted_or_second_node_does_not_repeat_the_advice(make_settings, conn) -> None:
    settings = make_settings()
    stream = uuid.uuid4()
    pool = await create_pool(settings.database_url)
    first_node, second_node = Node(pool), Node(pool)
    first = QualityAdvice(policy_from(settings), first_node)
    second = QualityAdvice(policy_from(settings), second_node)
    try:
        await feed(first, [row(stream, i, bitrate=4000, loss=12, upload=9000) for i in range(4)])
        # The streamer moves to the other node and goes on sending at the old bitrate for a
        # moment: the same congestion, judged from the recorded state, is not advised again.
        await feed(second, [row(stream, i, bitrate=2000, loss=0.2, upload=9000) for i in (4, 5)])
        # The first node, still holding its stale advisor, sees a later congestion at once
        # from another sample the stream sent there: only one node's advice goes through.
        later = [row(stream, i, bitrate=2000, loss=15, upload=9000) for i in (8, 9)]
        await asyncio.gather(feed(first, later), feed(second, later))
    finally:
        await pool.close()
    actions = [p["action"] for _, p, _ in first_node.events + second_node.events]
    stored = await conn.fetch(
        "SELECT action, target FROM stream_advice WHERE stream_id = $1 ORDER BY id", stream
    )
    assert [r["action"] for r in stored] == ["lower", "lower"]
    assert sorted(actions) == ["lower", "lower"]
    assert json.loads(stored[1]["target"])["bitrate"] == 1000
    version = await conn.fetchval(
        "SELECT version FROM stream_advisor_state WHERE stream_id = $1", stream
    )
    assert version == 2


async def test_without_a_database_nothing_is_sent(make_settings) -> None:
    settings = make_settings()
    node = Node(None)
    service = QualityAdvice(policy_from(settings), node)
    stream = uuid.uuid4()
    await feed(service, [row(stream, i, bitrate=4000, loss=12, upload=9000) for i in range(5)])
    assert node.events == []


async def test_analysts_may_read_the_advice(conn: asyncpg.Connection) -> None:
    allowed = await conn.fetchval(
        "SELECT has_table_privilege('streamstats_analyst', 'stream_advice', 'SELECT')"
    )
    internal = await conn.fetchval(
        "SELECT has_table_privilege('streamstats_analyst', 'stream_advisor_state', 'SELECT')"
    )
    assert allowed and not internal
