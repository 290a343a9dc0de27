"""The row the ingest path stores: one validated `stream:stats:update`, in table column order."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

# Column order of `stream_stats` (minus received_at, set by the writer), used by the writer's
# bulk insert and by anything that builds rows.
COLUMNS = (
    "time",
    "stream_id",
    "bitrate_kbps",
    "fps",
    "width",
    "height",
    "audio_level_db",
    "packet_loss_pct",
    "latency_ms",
    "upload_kbps",
    "download_kbps",
    "quality",
)


class StatsRow(NamedTuple):
    time: datetime
    stream_id: UUID
    bitrate_kbps: float | None
    fps: float | None
    width: int | None
    height: int | None
    audio_level_db: float | None
    packet_loss_pct: float | None
    latency_ms: float | None
    upload_kbps: float | None
    download_kbps: float | None
    quality: str | None


class Committed(NamedTuple):
    """A row of a committed batch, as the writer hands it to `on_commit`."""

    # A StatsRow, or a BeaconRow (ingest/beacon.py) from the viewer beacons' writer.
    row: Any
    # The row was stored before (or earlier in the same batch): this commit added nothing.
    duplicate: bool
