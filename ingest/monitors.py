"""`stream:stats:update` to monitors: one broadcast per committed batch (a per-batch hook).

Each newly stored sample (duplicates are not re-sent) goes to the monitors allowed to see its
stream, in commit order, in the shape of docs/protocol.md: `{streamId, stats, timestamp,
quality}`. Who receives it is decided in ingest/rooms.py.
"""

from __future__ import annotations

from typing import Any

import socketio

from ingest import rooms
from ingest.hooks import Batch
from ingest.rows import StatsRow
from ingest.schema import isoformat, stats_payload

UPDATE_EVENT = "stream:stats:update"


def update_payload(row: StatsRow) -> dict[str, Any]:
    """The broadcast of one stored sample."""
    return {
        "streamId": str(row.stream_id),
        "stats": stats_payload(row),
        "timestamp": isoformat(row.time),
        "quality": row.quality,
    }


class MonitorBroadcast:
    """The per-batch hook that sends each committed sample to its stream's monitors."""

    def __init__(self, sio: socketio.AsyncServer, manager: rooms.StreamRooms):
        self.sio = sio
        self.manager = manager

    async def on_commit(self, batch: Batch) -> None:
        fresh = [c.row for c in batch if not c.duplicate]
        reached = {s for s in {row.stream_id for row in fresh} if self.manager.may_reach(str(s))}
        payloads = [update_payload(row) for row in fresh if row.stream_id in reached]
        await rooms.broadcast(self.sio, UPDATE_EVENT, payloads, streamers=False)
