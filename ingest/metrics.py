"""Prometheus metrics of an ingest node, and the `/metrics` page that exposes them.

Hot paths only bump counters and histograms; gauges (queue depth, connections, viewers) are
read from the live objects when Prometheus scrapes, and the jobs' last runs come from
`job_runs` then, so they cover every job runner, not only one in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ingest.auth import ROLES
from streamstats.db import CONNECTION_ERRORS
from streamstats.settings import Settings
from streamstats.sql import queries


class WriterStatus(Protocol):
    @property
    def healthy(self) -> bool: ...

    @property
    def problem(self) -> str | None: ...

    @property
    def depth(self) -> int: ...

    def committed_within(self, seconds: float) -> bool: ...


class NodeStatus(Protocol):
    """What /readyz and /metrics read of a running ingest node."""

    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> asyncpg.Pool | None: ...

    @property
    def writer(self) -> WriterStatus | None: ...

    @property
    def beacon_writer(self) -> WriterStatus | None: ...

    @property
    def draining(self) -> bool: ...

    def connections_by_role(self) -> Mapping[str, int]: ...

    def local_viewers(self) -> int | None: ...


logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

EVENTS = Counter(
    "streamstats_events",
    "stream:stats:update events by outcome (stored, duplicate, rejected) and error code",
    ["outcome", "code"],
)
BATCH_ROWS = Histogram(
    "streamstats_batch_rows",
    "Rows per committed write batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
FLUSH_SECONDS = Histogram(
    "streamstats_flush_seconds",
    "Time to write and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACK_SECONDS = Histogram(
    "streamstats_ack_seconds",
    "From receiving an update to acknowledging it after commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
MALFORMED = Counter(
    "streamstats_malformed_packets",
    "Packets refused below the events, by kind (engineio, socketio, binary, oversize)",
    ["kind"],
)
DROPPED = Counter(
    "streamstats_connections_dropped",
    "Connections the server closed, by reason (malformed, oversize, connect_timeout)",
    ["reason"],
)
CONNECTS_REFUSED = Counter(
    "streamstats_connects_refused", "Socket.IO connects refused for a bad or missing token"
)
QUEUE_ROWS = Gauge("streamstats_queue_rows", "Rows waiting in the write queue")
QUEUE_CAPACITY = Gauge(
    "streamstats_queue_capacity_rows", "Bound of the write queue (STREAMSTATS_QUEUE_ROWS)"
)
READY = Gauge("streamstats_ready", "1 when /readyz would answer 200, else 0")
CONNECTIONS = Gauge(
    "streamstats_connections", "Socket.IO connections on this node by role", ["role"]
)
VIEWERS = Gauge("streamstats_viewers", "Viewer memberships (connection x stream) held by this node")
JOB_LAST_SUCCESS = Gauge(
    "streamstats_job_last_success_timestamp_seconds",
    "When each job last finished successfully (Unix time), from job_runs",
    ["job"],
)
JOB_DURATION = Gauge(
    "streamstats_job_duration_seconds",
    "How long each job's last successful run took, from job_runs",
    ["job"],
)

WEBHOOK_DELIVERIES = Gauge(
    "streamstats_webhook_deliveries",
    "Webhook deliveries kept in the outbox by status (pending, delivered, dead), all runners",
    ["status"],
)
WEBHOOK_FAILED = Gauge(
    "streamstats_webhook_failed_attempts",
    "Failed webhook attempts recorded on the deliveries kept in the outbox",
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "streamstats_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook delivery (0 when none is pending)",
)


# The labelled children of EVENTS: `labels()` costs a lock and a dict build per call.
_EVENT_COUNTERS: dict[tuple[str, str], Any] = {}


def event(outcome: str, code: str = "") -> None:
    """Count one update: outcome `stored`, `duplicate` or `rejected` (with its error code)."""
    counter = _EVENT_COUNTERS.get((outcome, code))
    if counter is None:
        counter = _EVENT_COUNTERS[outcome, code] = EVENTS.labels(outcome, code)
    counter.inc()


def malformed(kind: str) -> None:
    """Count one packet refused by ingest/guard.py."""
    MALFORMED.labels(kind).inc()


def dropped(reason: str) -> None:
    """Count one connection closed by ingest/guard.py."""
    DROPPED.labels(reason).inc()


def connect_refused() -> None:
    """Count one connect refused with connect_error."""
    CONNECTS_REFUSED.inc()


def flushed(rows: int, seconds: float) -> None:
    """Record one committed batch."""
    BATCH_ROWS.observe(rows)
    FLUSH_SECONDS.observe(seconds)


def acknowledged(seconds: float) -> None:
    """Record the latency of one acknowledgement."""
    ACK_SECONDS.observe(seconds)


async def refresh_jobs(pool: asyncpg.Pool | None) -> None:
    """Load the jobs' last successful runs; a missing table or database leaves them as they were."""
    if pool is None:
        return
    try:
        rows = await pool.fetch(queries["job_last_successes"], timeout=2)
    except asyncpg.UndefinedTableError:
        return  # the jobs' migration is not applied on this database
    except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
        logger.debug("job metrics unavailable: %s", exc, extra={"action": "metrics_jobs_failed"})
        return
    for row in rows:
        JOB_LAST_SUCCESS.labels(row["job"]).set(row["finished_at"].timestamp())
        JOB_DURATION.labels(row["job"]).set(row["duration_s"])


async def refresh_webhooks(pool: asyncpg.Pool | None) -> None:
    """Load the webhook queue's state from the outbox (it covers every job runner)."""
    if pool is None:
        return
    try:
        row = await pool.fetchrow(queries["webhook_stats"], timeout=2)
    except asyncpg.UndefinedTableError:
        return  # the outbox migration is not applied on this database
    except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
        logger.debug("webhook metrics unavailable: %s", exc, extra={"action": "metrics_failed"})
        return
    for status in ("pending", "delivered", "dead"):
        WEBHOOK_DELIVERIES.labels(status).set(row[status])
    WEBHOOK_FAILED.set(row["failed"])
    WEBHOOK_OLDEST_PENDING.set(row["oldest_pending_s"])


async def render(pool: asyncpg.Pool | None = None, registry: CollectorRegistry = REGISTRY) -> bytes:
    """The text exposition format of every metric (serve it with `CONTENT_TYPE`)."""
    await refresh_jobs(pool)
    await refresh_webhooks(pool)
    return generate_latest(registry)


async def page(node: NodeStatus, *, ready: bool) -> bytes:
    """The `/metrics` body: this node's state read now, then every metric in the text format."""
    READY.set(1 if ready else 0)
    QUEUE_CAPACITY.set(node.settings.queue_rows)
    if node.writer is not None:
        QUEUE_ROWS.set(node.writer.depth)
    roles = node.connections_by_role()
    for role in ROLES:
        CONNECTIONS.labels(role).set(roles.get(role, 0))
    viewers = node.local_viewers()
    if viewers is not None:
        VIEWERS.set(viewers)
    return await render(node.pool)
