"""What clients send, validated with pydantic (docs/protocol.md, "Client → server").

Every error names the offending field; unknown fields are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analytics.quality import quality
from ingest.auth import parse_stream_id
from ingest.errors import Invalid, TooLarge
from ingest.rows import StatsRow

# How far ahead of the server's clock a client timestamp may be (clock skew).
MAX_FUTURE = timedelta(minutes=5)
MAX_TIMESTAMP_CHARS = 64

# The RFC 3339 form of ISO 8601 that docs/protocol.md accepts: `T`, seconds, a zone, and up to
# 9 fractional digits (nanosecond clocks); the 7th digit on is cut, storage keeps microseconds.
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(?P<fraction>\d{1,9}))?(?:Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)
# Where an event packet's `["name", …]` array starts; JSON allows whitespace around `[`.
_ARRAY_START = re.compile(r"\s*\[\s*")

_STRICT = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)


Kbps = Annotated[float, Field(ge=0, le=1_000_000)]
Pixels = Annotated[int, Field(ge=0, le=16_384)]
BandwidthKbps = Annotated[float, Field(ge=0, le=100_000_000)]


class Resolution(BaseModel):
    model_config = _STRICT
    width: Pixels | None = None
    height: Pixels | None = None


class Bandwidth(BaseModel):
    model_config = _STRICT
    upload: BandwidthKbps | None = None
    download: BandwidthKbps | None = None


# The absent nested objects (the models are frozen, so one instance serves every event).
NO_RESOLUTION = Resolution()
NO_BANDWIDTH = Bandwidth()


class Stats(BaseModel):
    """The `stats` object of the client guide (wire names are camelCase); every metric optional."""

    model_config = _STRICT
    bitrate: Kbps | None = None
    fps: Annotated[float, Field(ge=0, le=1_000)] | None = None
    resolution: Resolution | None = None
    audioLevel: Annotated[float, Field(ge=-200, le=20)] | None = None
    packetLoss: Annotated[float, Field(ge=0, le=100)] | None = None
    latency: Annotated[float, Field(ge=0, le=600_000)] | None = None
    bandwidth: Bandwidth | None = None


class Update(BaseModel):
    model_config = _STRICT
    streamId: str
    stats: Stats
    timestamp: Annotated[str, Field(max_length=MAX_TIMESTAMP_CHARS)] | None = None


class StreamRef(BaseModel):
    """`{ streamId }`: the payload of get, subscribe, unsubscribe, join and leave."""

    model_config = _STRICT
    streamId: str


@dataclass(frozen=True)
class Oversize:
    """Stands in for an event body larger than the limit, which is never parsed."""

    size: int
    limit: int


@dataclass(frozen=True)
class Unparseable:
    """Stands in for an event body the JSON parser gave up on (nesting too deep)."""

    reason: str


class WireJson:
    """The JSON module for Socket.IO packets: bounds the size and depth of what clients send.

    python-socketio parses a whole event before any handler runs; deciding here lets an oversize
    event be answered with `too_large` without parsing it, and a too-deeply nested one with
    `invalid` instead of an exception that would drop the event without any answer.
    """

    def __init__(self, max_event_bytes: int):
        self.max_event_bytes = max_event_bytes
        # UTF-8 takes at most 4 bytes a character: a text this short cannot be over the limit.
        self._short_chars = max_event_bytes // 4
        self._decoder = json.JSONDecoder()

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        # orjson writes compact JSON ~10x faster (bench/bench_validation.py); what it cannot
        # write (non-string keys, integers over 64 bits) the stdlib writes as before.
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return json.dumps(obj, **kwargs)

    def loads(self, text: str | bytes, **kwargs: Any) -> Any:
        if isinstance(text, bytes):
            size = len(text)
        elif len(text) <= self._short_chars:
            size = 0  # not encoded just to be measured (every ordinary event)
        else:
            size = len(text.encode("utf-8", "surrogatepass"))
        # Only arrays are client events; objects are e.g. the Redis manager's own messages.
        if size > self.max_event_bytes and self._is_array(text):
            name = self._event_name(text)
            if name is None:
                # An event we could not answer: drop it rather than let it in unbounded.
                raise ValueError(f"event packet of {size} bytes refused")
            return [name, Oversize(size, self.max_event_bytes)]
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            # NaN/Infinity literals, integers over 64 bits, nesting over 1,024 levels, lone
            # surrogates: the stdlib reads them as before, so the refusal names the same field.
            pass
        try:
            return json.loads(text, **kwargs)
        except RecursionError:
            reason = "the payload is nested too deeply"
        except ValueError as exc:
            # Valid JSON can still be refused, e.g. an integer of more than 4,300 digits.
            reason = f"the payload is not acceptable JSON: {exc}"
        name = self._event_name(text)
        if name is None:
            raise ValueError(reason)
        return [name, Unparseable(reason)]

    @staticmethod
    def _is_array(text: str | bytes) -> bool:
        head = text[:64].decode("utf-8", "replace") if isinstance(text, bytes) else text[:64]
        return _ARRAY_START.match(head) is not None

    def _event_name(self, text: str | bytes) -> str | None:
        """The event name at the start of an event packet's `["name", ...]` array."""
        head = text[:512].decode("utf-8", "replace") if isinstance(text, bytes) else text[:512]
        start = _ARRAY_START.match(head)
        if start is None:
            return None
        try:
            name, _ = self._decoder.raw_decode(head, start.end())
        except ValueError:
            return None
        return name if isinstance(name, str) else None


@dataclass(frozen=True)
class ValidUpdate:
    """A validated `stream:stats:update`: the row to store and what to echo to monitors."""

    row: StatsRow
    stream_id: str
    # The row's time as answered and broadcast (isoformat), computed once.
    timestamp: str

    @property
    def stats(self) -> dict[str, Any]:
        """The `stats` object of the client guide for the broadcast, built only when one is sent."""
        return stats_payload(self.row)


def isoformat(moment: datetime) -> str:
    """UTC ISO 8601 with `Z`, milliseconds unless the value has finer precision (like JS)."""
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def check_size(data: Any) -> None:
    """Raise for the stand-ins WireJson puts where an unacceptable body was."""
    if isinstance(data, Oversize):
        raise TooLarge(f"the event is {data.size} bytes; at most {data.limit} are accepted")
    if isinstance(data, Unparseable):
        raise Invalid(data.reason)


def _field(loc: tuple[int | str, ...]) -> str | None:
    return ".".join(str(part) for part in loc) or None


def invalid_from(exc: ValidationError) -> Invalid:
    """The Invalid naming the first field pydantic refused."""
    error = exc.errors(include_url=False)[0]
    field = _field(error["loc"])
    message = error["msg"]
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "model_type":
        message = "must be an object"
    return Invalid(f"{field}: {message}" if field else message, field=field)


def stream_ref(data: Any) -> str:
    """The canonical stream id of a `{ streamId }` payload, or Invalid."""
    check_size(data)
    if not isinstance(data, dict):
        raise Invalid("the payload must be an object: { streamId }")
    try:
        ref = StreamRef.model_validate(data)
    except ValidationError as exc:
        raise invalid_from(exc) from None
    return _stream_id(ref.streamId)


def _stream_id(value: str) -> str:
    return str(stream_uuid(value))


def stream_uuid(value: str) -> UUID:
    """The UUID of a stream id string, or Invalid naming `streamId`."""
    stream = parse_stream_id(value)
    if stream is None:
        raise Invalid("streamId: must be a UUID string", field="streamId")
    return stream


def parse_timestamp(value: str | None, now: datetime, retention: timedelta) -> datetime:
    """A client timestamp (missing = `now`) in UTC, or Invalid naming `timestamp`."""
    if value is None:
        return now
    match = _TIMESTAMP.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        fraction = match.end("fraction")
        if fraction - match.start("fraction") > 6:
            value = value[: match.start("fraction") + 6] + value[fraction:]
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(
            "timestamp: must be ISO 8601 with a zone, e.g. 2025-01-21T10:30:00.000Z",
            field="timestamp",
        ) from None
    if moment > now + MAX_FUTURE:
        raise Invalid("timestamp: is more than 5 minutes in the future", field="timestamp")
    if moment < now - retention:
        raise Invalid(
            f"timestamp: is older than the raw-data retention ({retention})", field="timestamp"
        )
    return moment.astimezone(UTC)


def parse_update(
    data: Any, *, now: datetime, retention: timedelta, stream: UUID | None = None
) -> ValidUpdate:
    """Validate a `stream:stats:update` payload into the row to store, or raise Invalid/TooLarge.

    `stream`: `data["streamId"]` already parsed by the caller (it is not parsed again).
    """
    check_size(data)
    if not isinstance(data, dict):
        raise Invalid("the payload must be an object: { streamId, stats, timestamp }")
    try:
        update = Update.model_validate(data)
    except ValidationError as exc:
        raise invalid_from(exc) from None
    if stream is None:
        stream = stream_uuid(update.streamId)
    stats = update.stats
    resolution = stats.resolution or NO_RESOLUTION
    bandwidth = stats.bandwidth or NO_BANDWIDTH
    metrics = (
        _plus_zero(stats.bitrate),
        _plus_zero(stats.fps),
        resolution.width,
        resolution.height,
        _plus_zero(stats.audioLevel),
        _plus_zero(stats.packetLoss),
        _plus_zero(stats.latency),
        _plus_zero(bandwidth.upload),
        _plus_zero(bandwidth.download),
    )
    if all(value is None for value in metrics):
        raise Invalid("stats: at least one metric is required", field="stats")
    band = quality(stats.packetLoss, stats.latency, stats.fps)
    moment = parse_timestamp(update.timestamp, now, retention)
    row = StatsRow(moment, stream, *metrics, band)
    return ValidUpdate(row=row, stream_id=str(stream), timestamp=isoformat(moment))


def _plus_zero(value: float | None) -> float | None:
    """`-0.0` as `0.0`: adding +0.0 does it and changes no other float (ints have no -0)."""
    return value + 0.0 if isinstance(value, float) else value


def stats_payload(row: Any) -> dict[str, Any]:
    """The guide's `stats` object from a stored row (a StatsRow or a database record)."""
    return {
        "bitrate": _get(row, "bitrate_kbps"),
        "fps": _get(row, "fps"),
        "resolution": {"width": _get(row, "width"), "height": _get(row, "height")},
        "audioLevel": _get(row, "audio_level_db"),
        "packetLoss": _get(row, "packet_loss_pct"),
        "latency": _get(row, "latency_ms"),
        "bandwidth": {"upload": _get(row, "upload_kbps"), "download": _get(row, "download_kbps")},
    }


def _get(row: Any, name: str) -> Any:
    return getattr(row, name) if isinstance(row, tuple) else row[name]
