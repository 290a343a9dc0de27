"""Per-batch hooks (ingest/hooks.py): commit order, one batch at a time, failures contained;
threshold alerts fed from them raise and clear each episode once (published to the outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.alerts import ThresholdAlerts
from ingest.hooks import Batch, CommitHooks
from ingest.rows import Committed, StatsRow
from streamstats.settings import Settings

SETTINGS = Settings.model_validate(
    {"database_url": "postgresql:///unused", "jwt_secret": "unit-secret-" + "u" * 32}
)
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STREAM = uuid.uuid4()


def sample(second: int, loss: float = 0.0, stream: uuid.UUID = STREAM) -> StatsRow:
    return StatsRow(
        T0 + timedelta(seconds=second), stream, None, 30.0, None, None, None, loss, None, None,
        None, "good",
    )  # fmt: skip


def batch(*seconds: int, duplicate: bool = False) -> Batch:
    return [Committed(sample(s), duplicate) for s in seconds]


async def test_async_hooks_see_batches_one_at_a_time_in_commit_order():
    hooks = CommitHooks()
    seen: list[int] = []
    busy = 0

    async def slow(committed: Batch) -> None:
        nonlocal busy
        busy += 1
        assert busy == 1, "two batches in the hook at once"
        await asyncio.sleep(0.01)
        seen.extend(c.row.time.second for c in committed)
        busy -= 1

    hooks.add_async(slow, "slow")
    for start in range(0, 10, 2):
        hooks(batch(start, start + 1))
    await hooks.drain()
    assert seen == list(range(10))
    await hooks.close()


async def test_a_slow_hook_delays_neither_the_plain_hooks_nor_the_other_lanes():
    hooks = CommitHooks()
    plain: list[int] = []
    fast: list[int] = []
    release = asyncio.Event()

    async def stuck(committed: Batch) -> None:
        await release.wait()

    async def quick(committed: Batch) -> None:
        fast.extend(c.row.time.second for c in committed)

    hooks.add_async(stuck, "stuck")
    hooks.add(lambda committed: plain.extend(c.row.time.second for c in committed))
    hooks.add_async(quick, "quick")
    hooks(batch(1))
    hooks(batch(2))
    assert plain == [1, 2]  # called in the writer's loop, at once
    await asyncio.sleep(0.05)
    assert fast == [1, 2]
    release.set()
    await hooks.drain()
    await hooks.close()


async def test_a_failing_hook_is_logged_and_everything_else_still_runs(caplog):
    hooks = CommitHooks()
    ran: list[str] = []

    def fails_at_once(committed: Batch) -> None:
        raise RuntimeError("boom")

    async def fails_later(committed: Batch) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("later")

    async def works(committed: Batch) -> None:
        ran.append("works")

    hooks.add(fails_at_once)
    hooks.add_async(fails_later, "fails_later")
    hooks.add_async(works, "works")
    hooks(batch(1))
    hooks(batch(2))
    await hooks.drain()
    assert ran == ["works", "works"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("commit hook failed") == 2
    assert messages.count("fails_later hook failed") == 2
    await hooks.close()


class Episodes:
    """stream_alerts and the outbox for the alert hook: one open episode per (stream, type)."""

    def __init__(self) -> None:
        self.open: dict[tuple[Any, str], dict[str, Any]] = {}
        self.published: list[dict[str, Any]] = []
        self.in_transaction = False
        self.changes = 0  # raise and clear statements run

    async def fetch(self, query: str, streams: list[Any]) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        assert "cleared_at IS NULL" in query
        return [{"stream_id": s, "type": t} for s, t in self.open if s in streams]

    async def fetchrow(self, query: str, stream: Any, kind: str, *args: Any) -> Any:
        await asyncio.sleep(0)  # a round trip: the hook suspends here
        self.changes += 1
        if "INSERT INTO stream_alerts" in query:
            _value, threshold, raised_at = args
            if (stream, kind) in self.open:
                return None
            self.open[stream, kind] = {"threshold": threshold, "raised_at": raised_at}
            return {"raised_at": raised_at}
        episode = self.open.pop((stream, kind), None)
        if episode is None:
            return None
        return {**episode, "cleared_at": args[0]}

    async def execute(self, query: str, *args: Any) -> None:
        await asyncio.sleep(0)

    async def fetchval(self, query: str, *args: Any) -> int:
        payload = next(json.loads(a) for a in args if isinstance(a, str) and a.startswith("{"))
        self.published.append(payload)
        return len(self.published)

    def is_in_transaction(self) -> bool:
        return self.in_transaction

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.in_transaction = True
        try:
            yield
        finally:
            self.in_transaction = False

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Episodes]:
        yield self


class Node:
    """The alert hook's host (settings and a pool), with the alerts on its per-batch hooks."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.pool = Episodes()
        self.hooks = CommitHooks()
        self.hooks.add_async(ThresholdAlerts(self).on_commit, "alerts")  # type: ignore[arg-type]


async def test_alerts_follow_commit_order_and_each_episode_is_published_once():
    node = Node()
    hooks = node.hooks
    losses = [1, 9, 9, 9, 1, 1, 1, 1]  # raise after two breaching samples, clear after three
    for second, loss in enumerate(losses):
        hooks([Committed(sample(second, loss), False)])
        # A resent sample is committed as a duplicate: it must not count twice.
        hooks([Committed(sample(second, loss), True)])
    await hooks.drain()
    assert [p["state"] for p in node.pool.published] == ["raised", "cleared"]
    raised, cleared = node.pool.published
    assert raised["streamId"] == cleared["streamId"] == str(STREAM)
    assert raised["startedAt"] == cleared["startedAt"]
    assert not node.pool.open
    await hooks.close()


async def test_streams_with_nothing_open_are_not_cleared_one_by_one():
    """Every stream's first good streak proposes a clear; only open episodes cost a statement."""
    node = Node()
    hooks = node.hooks
    streams = [uuid.uuid4() for _ in range(50)]
    # One stream had an episode open before this node started (another node raised it).
    node.pool.open[streams[0], "packet_loss_high"] = {"threshold": 5.0, "raised_at": T0}
    for second in range(4):  # clear after three good samples
        hooks([Committed(sample(second, 0.0, stream), False) for stream in streams])
    await hooks.drain()
    assert node.pool.changes == 1
    assert [(p["streamId"], p["state"]) for p in node.pool.published] == [
        (str(streams[0]), "cleared")
    ]
    assert not node.pool.open
    await hooks.close()


async def test_an_episode_raised_and_cleared_within_one_batch_is_published_twice():
    node = Node()
    hooks = node.hooks
    losses = [9, 9, 1, 1, 1]
    hooks([Committed(sample(second, loss), False) for second, loss in enumerate(losses)])
    await hooks.drain()
    assert [p["state"] for p in node.pool.published] == ["raised", "cleared"]
    assert not node.pool.open
    await hooks.close()
