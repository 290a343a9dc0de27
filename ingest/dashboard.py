"""The live dashboard's server side: its pages at `/dashboard/` and the events it reads with.

- `stream:stats:history {streamId, from, to?}`: one stream's samples or rollup buckets over a
  range, plus the alert and drop episodes overlapping it (permissions of `stream:stats:get`);
- `stream:stats:list {within?}`: every stream that reported recently, with its latest row,
  viewers, open alerts and drops, a 15-minute bitrate sparkline, and the recent alert feed
  (the overview's first paint; monitors only);
- `stream:stats:digest:subscribe {interval?}` / `unsubscribe` (ingest/digest.py);
- `stream:stats:reports {streamId, day?}`: the days a daily report exists for, or one day's page.

The pages are static files in `streamstats/static/` (packaged in the wheel): the browser signs
in with a token kept in the URL fragment or pasted, which never reaches the server's URLs or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from analytics.alerts import alert_payload
from ingest.advice import stored_advice
from ingest.auth import Action, Principal
from ingest.digest import (
    DEFAULT_INTERVAL_MS,
    MAX_INTERVAL_MS,
    MIN_INTERVAL_MS,
    Digests,
    RedisBus,
    ViewerCounts,
)
from ingest.errors import Forbidden, Invalid, Unavailable
from ingest.events import Answer, Connection, Handler, Reply
from ingest.hooks import Batch, CommitHooks
from ingest.http import HttpApp
from ingest.presence import Presence
from ingest.schema import isoformat, stats_payload, stream_ref
from streamstats.db import CONNECTION_ERRORS
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# The finest resolution whose point count stays within the cap is answered (docs/protocol.md).
# A little over an hour: "the last hour" asked with `to` left to the server's clock is raw too.
RAW_SPAN = timedelta(minutes=65)
RAW_POINTS = 3600
ROLLUPS: tuple[tuple[str, timedelta], ...] = (
    ("1m", timedelta(minutes=1)),
    ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)),
)
MAX_POINTS = 3000
# 1-day buckets up to MAX_POINTS: about eight years.
MAX_SPAN = ROLLUPS[-1][1] * MAX_POINTS
MAX_TIMESTAMP_CHARS = 64

LIVE_WITHIN = timedelta(minutes=5)
MAX_WITHIN = timedelta(hours=24)
SPARK_SPAN = timedelta(minutes=15)
SPARK_STEP_SECONDS = 15
FEED_SPAN = timedelta(hours=1)
FEED_ROWS = 100
REPORT_DAYS = 60
READ_TIMEOUT = 10.0
PRESENCE_TIMEOUT = 3.0

STATIC = "/dashboard/"


class Host(Protocol):
    """What the dashboard needs of the ingest node (ingest/app.py's IngestApp)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> asyncpg.Pool | None: ...

    @property
    def presence(self) -> Presence: ...

    @property
    def connections(self) -> Mapping[str, Connection]: ...

    @property
    def commit_hooks(self) -> CommitHooks: ...

    @property
    def on_close(self) -> list[Callable[[], Awaitable[None]]]: ...

    @property
    def http(self) -> HttpApp: ...

    def add_handler(self, event: str, handler: Handler, action: Action | None = None) -> None: ...

    async def send(self, sid: str, event: str, data: dict[str, Any]) -> None:
        """Emit to one client of this node."""
        ...

    async def digest_only(self, sid: str, on: bool) -> None:
        """Per-sample broadcasts for this client only of the streams it subscribes to (or all)."""
        ...


def install(app: Host) -> Digests:
    """Serve the pages and answer the dashboard's events on this app; digests follow commits."""
    settings = app.settings

    async def emit(event: str, data: dict[str, Any], sid: str) -> None:
        await app.send(sid, event, data)

    bus = None
    if settings.redis_url:
        from ingest.presence_redis import REDIS_TIMEOUT

        bus = RedisBus(settings.redis_url, timeout=REDIS_TIMEOUT)
    digests = Digests(
        emit=emit, viewers=app.presence, connected=lambda sid: sid in app.connections, bus=bus
    )

    def on_commit(batch: Batch) -> None:
        digests.on_commit(tuple(c.row for c in batch if not c.duplicate))

    app.commit_hooks.add(on_commit)
    events = DashboardEvents(app, digests)
    handlers: tuple[tuple[str, Handler, Action | None], ...] = (
        ("stream:stats:history", events.history, "get"),
        ("stream:stats:list", events.live, None),
        ("stream:stats:digest:subscribe", events.digest_subscribe, None),
        ("stream:stats:digest:unsubscribe", events.digest_unsubscribe, None),
        ("stream:stats:reports", events.reports, "get"),
    )
    for event, handler, action in handlers:
        app.add_handler(event, handler, action)
    app.http.routes.update(static_routes())
    app.on_close.append(digests.close)
    return digests


# -- the pages ----------------------------------------------------------------------------


def static_root() -> Path:
    return Path(str(resources.files("streamstats"))) / "static"


def static_routes() -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """`/dashboard/…` paths to the packaged files (read once: they are small)."""
    from ingest.http import Response

    root = static_root()
    routes: dict[str, Callable[[Any], Awaitable[Any]]] = {}
    for folder, prefix in ((root / "dashboard", STATIC), (root / "vendor", STATIC + "vendor/")):
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind == "application/javascript":
                kind += "; charset=utf-8"
            response = Response(200, path.read_bytes(), kind)
            routes[prefix + path.relative_to(folder).as_posix()] = _constant(response)
    index = routes[STATIC + "index.html"]
    routes[STATIC] = routes[STATIC.rstrip("/")] = index
    return routes


def _constant(response: Any) -> Callable[[Any], Awaitable[Any]]:
    async def page(app: Any) -> Any:
        return response

    return page


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime


class DashboardEvents:
    def __init__(self, app: Host, digests: Digests):
        self.app = app
        self.digests = digests

    async def history(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        _require(connection.principal, "get", "stream:stats:history")
        stream_id = stream_ref(data)
        span = parse_range(data, datetime.now(UTC))
        stream = UUID(stream_id)
        async with self._read() as conn:
            bucket, rows = await read_history(conn, stream, span)
            alerts = await conn.fetch(queries["dashboard_alerts_between"], stream, *span_args(span))
            drops = await conn.fetch(queries["dashboard_drops_between"], stream, *span_args(span))
            advice = await conn.fetch(queries["dashboard_advice_between"], stream, *span_args(span))
        body = {
            "streamId": stream_id,
            "from": isoformat(span.start),
            "to": isoformat(span.end),
            "bucket": bucket,
            "rows": rows,
            "alerts": [_episode(r) for r in alerts],
            "drops": [_drop(r) for r in drops],
            "advice": [stored_advice(stream_id, r) for r in advice],
        }
        return Reply("stream:stats:history", body)

    async def live(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        principal = _monitor(connection.principal, "stream:stats:list")
        within = _within(data)
        now = datetime.now(UTC)
        scope = None if principal.streams is None else [UUID(s) for s in principal.streams]
        async with self._read() as conn:
            latest = await conn.fetch(queries["dashboard_live"], now - within, scope)
            ids = [r["stream_id"] for r in latest]
            alerts = await conn.fetch(queries["dashboard_open_alerts"], ids)
            drops = await conn.fetch(queries["dashboard_open_drops"], ids)
            spark = await conn.fetch(
                queries["dashboard_sparklines"], now - SPARK_SPAN, ids, SPARK_STEP_SECONDS
            )
            feed_scope = ids if scope is None else scope
            feed = await conn.fetch(
                queries["dashboard_recent_alerts"],
                now - FEED_SPAN,
                feed_scope,
                self.app.settings.drop_start_ratio,
                FEED_ROWS,
            )
        viewers = await viewer_counts(self.digests.viewers, [str(i) for i in ids])
        open_alerts = _by_stream(alerts, _open_alert)
        open_drops = _by_stream(drops, _drop)
        lines: dict[UUID, tuple[list[str], list[float]]] = defaultdict(lambda: ([], []))
        for r in spark:
            times, values = lines[r["stream_id"]]
            times.append(isoformat(r["step"]))
            values.append(r["kbps"])
        streams = []
        for record in latest:
            stream = record["stream_id"]
            key = str(stream)
            times, values = lines.get(stream, ([], []))
            streams.append(
                {
                    "streamId": key,
                    "stats": stats_payload(record),
                    "quality": record["quality"],
                    "viewerCount": viewers.get(key, 0),
                    "lastUpdated": isoformat(record["time"]),
                    "alerts": open_alerts.get(stream, []),
                    "drops": open_drops.get(stream, []),
                    "sparkline": {"step": SPARK_STEP_SECONDS, "times": times, "bitrate": values},
                }
            )
        body = {
            "at": isoformat(now),
            "within": int(within.total_seconds()),
            "streams": streams,
            "feed": [_transition(r) for r in feed],
        }
        return Reply("stream:stats:list", body)

    async def digest_subscribe(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        principal = _monitor(connection.principal, "stream:stats:digest:subscribe")
        interval = _interval(data)
        await self.digests.subscribe(sid, principal, interval)
        await self.app.digest_only(sid, True)
        return Reply("stream:stats:digest:subscribed", {"subscribed": True, "interval": interval})

    async def digest_unsubscribe(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        _monitor(connection.principal, "stream:stats:digest:unsubscribe")
        was = await self.digests.unsubscribe(sid)
        await self.app.digest_only(sid, False)
        return Reply("stream:stats:digest:unsubscribed", {"subscribed": False, "was": was})

    async def reports(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        _require(connection.principal, "get", "stream:stats:reports")
        stream_id = stream_ref(data)
        day = _day(data)
        async with self._read() as conn:
            records = await conn.fetch(
                queries["dashboard_report_days"], UUID(stream_id), REPORT_DAYS
            )
        if day is None:
            body: dict[str, Any] = {
                "streamId": stream_id,
                "reports": [
                    {"day": r["day"].isoformat(), "summary": r["summary"]} for r in records
                ],
            }
        else:
            record = next((r for r in records if r["day"] == day), None)
            if record is None:
                raise Invalid(f"day: no report of stream {stream_id} for {day}", field="day")
            path = (self.app.settings.reports_dir / record["path"]).resolve()
            try:
                html = await asyncio.to_thread(path.read_text)
            except OSError as exc:
                raise Unavailable(f"the report file could not be read: {exc}") from exc
            body = {"streamId": stream_id, "day": day.isoformat(), "html": html}
        return Reply("stream:stats:reports", body)

    def _read(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return _read(self.app.pool)


async def viewer_counts(presence: ViewerCounts, stream_ids: list[str]) -> dict[str, int]:
    """Live viewer counts, bounded in time: a presence store out of reach is `unavailable`."""
    try:
        async with asyncio.timeout(PRESENCE_TIMEOUT):
            return await presence.counts(stream_ids)
    except Exception as exc:  # TimeoutError, Redis and socket errors
        logger.warning("presence failed: %r", exc, extra={"action": "presence_error"})
        raise Unavailable("viewer presence is unreachable, retry later") from exc


@contextlib.asynccontextmanager
async def _read(pool: asyncpg.Pool | None) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one answer; an unreachable or slow database is `unavailable`."""
    if pool is None:
        raise Unavailable("the database is unreachable, retry later")
    try:
        async with asyncio.timeout(READ_TIMEOUT), pool.acquire() as conn:
            yield conn
    except CONNECTION_ERRORS as exc:  # TimeoutError included
        logger.warning("dashboard read failed: %r", exc, extra={"action": "read_unavailable"})
        raise Unavailable("the database is unreachable, retry later") from exc


# -- history ------------------------------------------------------------------------------


def parse_range(data: Any, now: datetime) -> Range:
    """`from` (required) and `to` (default now) of a history request, or Invalid naming one."""
    start = _moment(data, "from", None)
    end = _moment(data, "to", now)
    assert start is not None and end is not None
    if end <= start:
        raise Invalid("to: must be after from", field="to")
    if end - start > MAX_SPAN:
        raise Invalid(f"from: the range may span at most {MAX_SPAN.days} days", field="from")
    return Range(start, end)


def span_args(span: Range) -> tuple[datetime, datetime]:
    return span.start, span.end


def choose_bucket(span: Range) -> str:
    """The finest rollup whose buckets over the range number at most MAX_POINTS."""
    length = span.end - span.start
    for name, width in ROLLUPS:
        if length / width <= MAX_POINTS:
            return name
    return ROLLUPS[-1][0]


async def read_history(
    conn: asyncpg.Connection, stream: UUID, span: Range
) -> tuple[str, list[dict[str, Any]]]:
    """(bucket, rows): raw samples for a short range with few enough samples, else a rollup."""
    if span.end - span.start <= RAW_SPAN:
        raw = await conn.fetch(
            queries["dashboard_history_raw"], stream, span.start, span.end, RAW_POINTS + 1
        )
        if len(raw) <= RAW_POINTS:
            return "raw", [_raw_row(r) for r in raw]
    bucket = choose_bucket(span)
    records = await conn.fetch(
        queries["dashboard_history_rollup"], stream, *span_args(span), bucket
    )
    return bucket, [_rollup_row(r) for r in records]


def _raw_row(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "time": isoformat(r["time"]),
        "samples": 1,
        "bitrate": r["bitrate_kbps"],
        "fps": r["fps"],
        "packetLoss": r["packet_loss_pct"],
        "latency": r["latency_ms"],
        "quality": r["quality"],
        "resolution": {"width": r["width"], "height": r["height"]},
        "audioLevel": r["audio_level_db"],
        "bandwidth": {"upload": r["upload_kbps"], "download": r["download_kbps"]},
    }


def _rollup_row(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "time": isoformat(r["bucket"]),
        "samples": r["samples"],
        "bitrate": r["bitrate_kbps_avg"],
        "fps": r["fps_avg"],
        "packetLoss": r["packet_loss_pct_avg"],
        "latency": r["latency_ms_avg"],
        "quality": r["quality"],
        "bitrateMin": r["bitrate_kbps_min"],
        "bitrateMax": r["bitrate_kbps_max"],
        "bitrateP50": r["bitrate_kbps_p50"],
        "bitrateP95": r["bitrate_kbps_p95"],
        "fpsMin": r["fps_min"],
        "packetLossMax": r["packet_loss_pct_max"],
        "latencyP95": r["latency_ms_p95"],
        "latencyMax": r["latency_ms_max"],
        "good": r["good_samples"],
        "fair": r["fair_samples"],
        "poor": r["poor_samples"],
    }


# -- shapes -------------------------------------------------------------------------------


def _episode(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "type": r["type"],
        "value": r["value"],
        "threshold": r["threshold"],
        "startedAt": isoformat(r["raised_at"]),
        "endedAt": None if r["cleared_at"] is None else isoformat(r["cleared_at"]),
    }


def _open_alert(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "type": r["type"],
        "value": r["value"],
        "threshold": r["threshold"],
        "startedAt": isoformat(r["raised_at"]),
    }


def _drop(r: asyncpg.Record) -> dict[str, Any]:
    ended = r.get("ended_at")
    return {
        "startedAt": isoformat(r["started_at"]),
        "endedAt": None if ended is None else isoformat(ended),
        "baselineKbps": r["baseline_kbps"],
        "observedKbps": r["observed_kbps"],
        "dropPct": r["drop_pct"],
    }


def _transition(r: asyncpg.Record) -> dict[str, Any]:
    """A stored transition as the `stream:alert` event that announced it."""
    return alert_payload(
        r["stream_id"],
        r["type"],
        r["state"],
        r["value"],
        r["threshold"],
        r["started_at"],
        r["ended_at"],
    )


def _by_stream(
    records: list[asyncpg.Record], shape: Callable[[asyncpg.Record], dict[str, Any]]
) -> dict[UUID, list[dict[str, Any]]]:
    grouped: dict[UUID, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        grouped[r["stream_id"]].append(shape(r))
    return grouped


# -- payload checks -----------------------------------------------------------------------


def _require(principal: Principal, action: Any, event: str) -> None:
    if not principal.can(action):
        raise Forbidden(f"a {principal.role} may not send {event}")


def _monitor(principal: Principal, event: str) -> Principal:
    _require(principal, "monitor", event)
    return principal


def _object(data: Any, shape: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Invalid(f"the payload must be an object: {shape}")
    return data


def _moment(data: Any, name: str, default: datetime | None) -> datetime | None:
    value = _object(data, "{ streamId, from, to? }").get(name)
    if value is None:
        if default is None:
            raise Invalid(f"{name}: is required", field=name)
        return default
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP_CHARS:
        raise Invalid(f"{name}: must be an ISO 8601 string", field=name)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(
            f"{name}: must be ISO 8601, e.g. 2025-01-21T10:30:00.000Z", field=name
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise Invalid(f"{name}: must carry a zone (Z or an offset)", field=name)
    return moment.astimezone(UTC)


def _number(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise Invalid(f"{name}: must be a number", field=name)
    return float(value)


def _interval(data: Any) -> float:
    value = _number(_object(data, "{ interval? }"), "interval")
    if value is None:
        return DEFAULT_INTERVAL_MS
    if not MIN_INTERVAL_MS <= value <= MAX_INTERVAL_MS:
        raise Invalid(
            f"interval: must be {MIN_INTERVAL_MS}–{MAX_INTERVAL_MS} milliseconds", field="interval"
        )
    return value


def _within(data: Any) -> timedelta:
    value = _number(_object(data, "{ within? }"), "within")
    if value is None:
        return LIVE_WITHIN
    if not 1 <= value <= MAX_WITHIN.total_seconds():
        raise Invalid(
            f"within: must be 1–{int(MAX_WITHIN.total_seconds())} seconds", field="within"
        )
    return timedelta(seconds=value)


def _day(data: Any) -> date | None:
    value = _object(data, "{ streamId, day? }").get("day")
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid("day: must be YYYY-MM-DD", field="day") from None
