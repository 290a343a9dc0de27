"""`stream:viewer:stats` beacons, validated with pydantic like updates (docs/protocol.md).

What one beacon can say about itself is checked here: types, ranges, a state that needs a startup
time. What needs the view's other beacons (counters never going backwards, no more time watched
than passed, the view staying on its stream and ending once) is checked by the database when the
beacon is stored (`viewer_stats_follows` in sql/idempotent/030_viewer_experience.sql), so it
holds across nodes, resends and late arrivals alike; those refusals name the field too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingest.auth import parse_stream_id
from ingest.errors import Invalid
from ingest.schema import (
    MAX_TIMESTAMP_CHARS,
    Kbps,
    Resolution,
    check_size,
    invalid_from,
    isoformat,
    parse_timestamp,
    stream_uuid,
)

State = Literal["starting", "playing", "paused", "stalled", "ended", "failed"]
# States in which the first frame has been shown, so the startup time is known.
STARTED_STATES = frozenset({"playing", "paused", "stalled"})
# Longest startup time accepted (ms): a player that waits longer has failed in all but name.
MAX_STARTUP_MS = 600_000
# Longest cumulative duration of one view (ms): a week of watching.
MAX_VIEW_MS = 7 * 86_400_000
MAX_COUNT = 1_000_000

_STRICT = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)

Millis = Annotated[float, Field(ge=0, le=MAX_VIEW_MS)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class Stalls(BaseModel):
    model_config = _STRICT
    count: Count
    duration: Millis


class RenditionChanges(BaseModel):
    model_config = _STRICT
    up: Count
    down: Count


class PlaybackError(BaseModel):
    model_config = _STRICT
    code: Annotated[str, Field(min_length=1, max_length=64)]
    message: Annotated[str, Field(max_length=500)] = ""


class Beacon(BaseModel):
    model_config = _STRICT
    streamId: str
    viewId: str
    timestamp: Annotated[str, Field(max_length=MAX_TIMESTAMP_CHARS)] | None = None
    state: State
    startupTime: Annotated[float, Field(ge=0, le=MAX_STARTUP_MS)] | None
    watchTime: Millis
    stalls: Stalls
    renditionChanges: RenditionChanges
    bitrate: Kbps | None = None
    resolution: Resolution | None = None
    error: PlaybackError | None = None


class BeaconRow(NamedTuple):
    """One `viewer_stats` row (minus received_at), in table column order."""

    time: datetime
    view_id: UUID
    stream_id: UUID
    state: str
    startup_ms: float | None
    watch_ms: float
    stall_count: int
    stall_ms: float
    switches_up: int
    switches_down: int
    bitrate_kbps: float | None
    width: int | None
    height: int | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class ValidBeacon:
    """A validated beacon: the row to store and the ids and time to answer with."""

    row: BeaconRow
    stream_id: str
    view_id: str
    timestamp: str


def parse_beacon(
    data: Any, *, now: datetime, retention: timedelta, stream: UUID | None = None
) -> ValidBeacon:
    """Validate a `stream:viewer:stats` payload into the row to store, or raise Invalid/TooLarge.

    `stream`: `data["streamId"]` already parsed by the caller (it is not parsed again).
    """
    check_size(data)
    if not isinstance(data, dict):
        raise Invalid(
            "the payload must be an object: { streamId, viewId, timestamp, state, startupTime, "
            "watchTime, stalls, renditionChanges, bitrate, resolution, error? }"
        )
    try:
        beacon = Beacon.model_validate(data)
    except ValidationError as exc:
        raise invalid_from(exc) from None
    if stream is None:
        stream = stream_uuid(beacon.streamId)
    view = parse_stream_id(beacon.viewId)
    if view is None:
        raise Invalid("viewId: must be a UUID string", field="viewId")
    if beacon.state in STARTED_STATES and beacon.startupTime is None:
        raise Invalid(
            f"startupTime: is required once the first frame was shown (state {beacon.state})",
            field="startupTime",
        )
    if beacon.stalls.count == 0 and beacon.stalls.duration > 0:
        raise Invalid(
            "stalls.duration: time stalled without any stall (stalls.count is 0)",
            field="stalls.duration",
        )
    moment = parse_timestamp(beacon.timestamp, now, retention)
    resolution = beacon.resolution
    error = beacon.error
    row = BeaconRow(
        time=moment,
        view_id=view,
        stream_id=stream,
        state=beacon.state,
        startup_ms=beacon.startupTime,
        watch_ms=beacon.watchTime,
        stall_count=beacon.stalls.count,
        stall_ms=beacon.stalls.duration,
        switches_up=beacon.renditionChanges.up,
        switches_down=beacon.renditionChanges.down,
        bitrate_kbps=beacon.bitrate,
        width=resolution.width if resolution else None,
        height=resolution.height if resolution else None,
        error_code=None if error is None else error.code,
        error_message=None if error is None else error.message,
    )
    return ValidBeacon(
        row=row, stream_id=str(stream), view_id=str(view), timestamp=isoformat(moment)
    )


def experience_payload(record: Any) -> dict[str, Any]:
    """`viewerExperience` of `stream:stats:current` from a viewer_experience_bucket() row."""
    if record is None:
        return {
            "views": 0,
            "rebufferPct": None,
            "startupP50Ms": None,
            "startupP95Ms": None,
            "switchesPerView": None,
            "failurePct": None,
            "score": None,
        }
    return {
        "views": record["views"],
        "rebufferPct": record["rebuffer_pct"],
        "startupP50Ms": record["startup_ms_p50"],
        "startupP95Ms": record["startup_ms_p95"],
        "switchesPerView": record["switches_per_view"],
        "failurePct": record["failure_pct"],
        "score": record["score"],
    }
