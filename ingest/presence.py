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

    async def close(self) -> None: ...
