"""Viewer presence: which connections watch which stream, counted across all nodes."""

from __future__ import annotations

from typing import Protocol


class Presence(Protocol):
    """Where viewer connections are recorded; `count` is the live number across every node.

    A connection joining the same stream twice counts once; `leave_all` runs on disconnect.
    """

    async def join(self, stream_id: str, sid: str) -> None: ...

    async def leave(self, stream_id: str, sid: str) -> None: ...

    async def leave_all(self, sid: str) -> None: ...

    async def count(self, stream_id: str) -> int: ...

    async def counts(self, stream_ids: list[str]) -> dict[str, int]:
        """`count` of several streams at once (one round trip where there is one)."""
        ...

    async def close(self) -> None: ...


class MemoryPresence:
    """Presence for a single ingest process: connection ids per stream, in memory."""

    def __init__(self) -> None:
        self._viewers: dict[str, set[str]] = {}
        self._streams: dict[str, set[str]] = {}

    async def join(self, stream_id: str, sid: str) -> None:
        self._viewers.setdefault(stream_id, set()).add(sid)
        self._streams.setdefault(sid, set()).add(stream_id)

    async def leave(self, stream_id: str, sid: str) -> None:
        viewers = self._viewers.get(stream_id)
        if viewers is not None:
            viewers.discard(sid)
            if not viewers:
                del self._viewers[stream_id]
        streams = self._streams.get(sid)
        if streams is not None:
            streams.discard(stream_id)
            if not streams:
                del self._streams[sid]

    async def leave_all(self, sid: str) -> None:
        for stream_id in list(self._streams.get(sid, ())):
            await self.leave(stream_id, sid)

    async def count(self, stream_id: str) -> int:
        return len(self._viewers.get(stream_id, ()))

    async def counts(self, stream_ids: list[str]) -> dict[str, int]:
        return {s: len(self._viewers.get(s, ())) for s in stream_ids}

    @property
    def local_viewers(self) -> int:
        """Viewer memberships held by this process (for /metrics)."""
        return sum(len(sids) for sids in self._viewers.values())

    async def close(self) -> None:
        self._viewers.clear()
        self._streams.clear()
