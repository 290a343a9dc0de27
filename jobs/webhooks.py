"""Webhook delivery: every outbox event POSTed, signed, to each configured endpoint, at least once.

Each alert transition is in `alert_events`, and the transaction that wrote it also queued one
`webhook_deliveries` row per active endpoint (streamstats/outbox.py). A worker runs in every job
runner (and in `streamstats run`), one loop per endpoint, each on its own connection:

1. in a transaction, lock the due deliveries of the endpoint with `FOR UPDATE SKIP LOCKED`, at
   most the oldest pending one per stream (so a stream's events arrive in order);
2. POST them (different streams concurrently), each with a timeout;
3. record each outcome: delivered, or failed with the next attempt after an exponential backoff
   with jitter, or `dead` once that would fall after the retry period; then commit.

A row stays locked while its attempt is in flight, so several workers or runners never make the
same attempt twice; a worker that dies mid-attempt rolls back, and the attempt is made again
(which is why delivery is at least once and receivers drop duplicates by `id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from analytics.alerts import ALERT_CHANNEL, wire_time
from streamstats import db
from streamstats.errors import DatabaseUnavailable
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "StreamStats-Signature"
# What receivers should accept between the signature's `t` and their clock (docs/webhooks.md).
SIGNATURE_TOLERANCE = timedelta(minutes=5)
# An endpoint's queue is looked at this often when it has nothing due (retries come due; new
# events also wake the loop through the outbox's NOTIFY, which is only a hint).
POLL_SECONDS = 0.5
# Attempts locked and made together per endpoint (different streams).
BATCH = 20
# However many failures, attempts are at most this far apart.
MAX_BACKOFF = timedelta(hours=1)
RECONNECT_MAX_SECONDS = 10.0
USER_AGENT = "stream-stats-webhooks"
_UNAVAILABLE: tuple[type[BaseException], ...] = (*db.CONNECTION_ERRORS, DatabaseUnavailable)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `StreamStats-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(
    attempts: int, base: timedelta, rand: Callable[[], float] = random.random
) -> timedelta:
    """How long after its `attempts`-th failure a delivery is tried again.

    Doubling from `base`, capped at MAX_BACKOFF, and jittered down to half ("equal jitter"), so
    endpoints coming back from an outage are not hit by every delivery at the same moment.
    """
    ceiling = min(base * 2 ** min(attempts - 1, 32), MAX_BACKOFF)
    return ceiling * (0.5 + 0.5 * rand())


def slack_text(data: dict[str, Any]) -> str:
    """One line for chat: what happened on which stream."""
    if data["state"] == "raised":
        return (
            f"{data['type']} raised on stream {data['streamId']}: {data['value']:g} "
            f"(threshold {data['threshold']:g}) since {data['startedAt']}"
        )
    return f"{data['type']} cleared on stream {data['streamId']} at {data.get('endedAt')}"


def event_body(record: asyncpg.Record | dict[str, Any], *, slack: bool) -> bytes:
    """The JSON body of one event: `{id, type, createdAt, data}` (and `text` for Slack)."""
    data = json.loads(record["data"])
    body: dict[str, Any] = {
        "id": str(record["public_id"]),
        "type": record["type"],
        "createdAt": wire_time(record["created_at"]),
        "data": data,
    }
    if slack:
        body["text"] = slack_text(data)
    return json.dumps(body, separators=(",", ":")).encode()


def shown(url: str) -> str:
    """An endpoint for logs and listings: scheme, host and port only (paths can hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str | None = None


class WebhookWorker:
    """Delivers the outbox to `settings.webhook_urls`; start() once, stop() on shutdown."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.secret = settings.require_webhook_secret() if settings.webhook_urls else b""
        self.slack = settings.webhook_format == "slack"
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.endpoints: dict[int, str] = {}

    async def start(self) -> None:
        """Make the configured URLs the active endpoints, then deliver to each in the background.

        Every long-running job runner does this at start, so they must all have the same
        STREAMSTATS_WEBHOOK_URLS: an endpoint missing from a runner's list is retired.
        """
        async with db.connection(self.settings.database_url) as conn:
            rows = await conn.fetch(queries["webhook_endpoints_sync"], self.settings.webhook_urls)
        self.endpoints = {row["id"]: row["url"] for row in rows}
        if not self.endpoints:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        for endpoint_id, url in self.endpoints.items():
            self._tasks.append(
                asyncio.create_task(self._run(endpoint_id, url), name=f"webhook-{endpoint_id}")
            )
        logger.info(
            "delivering webhooks to %s",
            ", ".join(shown(url) for url in self.endpoints.values()),
            extra={"action": "webhooks_started", "endpoints": len(self.endpoints)},
        )

    async def stop(self) -> None:
        """Stop delivering; an attempt in flight is rolled back and made again later."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, endpoint_id: int, url: str) -> None:
        delay = 0.5
        wake = asyncio.Event()
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await db.connect(self.settings.database_url)
                await conn.add_listener(ALERT_CHANNEL, lambda *_: wake.set())
                delay = 0.5
                while True:
                    wake.clear()
                    if not await self.deliver_due(conn, endpoint_id, url):
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), POLL_SECONDS)
            except _UNAVAILABLE as exc:
                logger.warning(
                    "webhook delivery to %s paused: the database is unreachable: %s",
                    shown(url),
                    exc,
                    extra={"action": "webhooks_unavailable"},
                )
            except Exception:
                logger.exception("webhook delivery failed", extra={"action": "webhooks_error"})
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def deliver_due(self, conn: asyncpg.Connection, endpoint_id: int, url: str) -> int:
        """Make the due attempts of one endpoint (one transaction); returns how many were made."""
        async with conn.transaction():
            due = await conn.fetch(queries["webhook_claim"], endpoint_id, BATCH)
            if not due:
                return 0
            outcomes = await asyncio.gather(*(self._post(url, record) for record in due))
            for record, outcome in zip(due, outcomes, strict=True):
                await self._record(conn, endpoint_id, url, record, outcome)
        return len(due)

    async def _post(self, url: str, record: asyncpg.Record) -> Outcome:
        assert self._session is not None
        body = event_body(record, slack=self.slack)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, int(time.time()), body),
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout.total_seconds())
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return Outcome(True)
                return Outcome(False, f"HTTP {response.status}")
        except TimeoutError:
            return Outcome(False, f"no answer within {self.settings.webhook_timeout}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}")

    async def _record(
        self,
        conn: asyncpg.Connection,
        endpoint_id: int,
        url: str,
        record: asyncpg.Record,
        outcome: Outcome,
    ) -> None:
        extra = {"event_id": str(record["public_id"]), "endpoint": shown(url)}
        if outcome.ok:
            await conn.execute(queries["webhook_delivered"], record["event_id"], endpoint_id)
            logger.debug("webhook delivered", extra={**extra, "action": "webhook_delivered"})
            return
        attempts = record["attempts"] + 1
        retry_at = datetime.now(UTC) + retry_delay(attempts, self.settings.webhook_backoff)
        status = await conn.fetchval(
            queries["webhook_failed"],
            record["event_id"],
            endpoint_id,
            outcome.error,
            retry_at,
            self.settings.webhook_retry_for,
        )
        if status == "dead":
            logger.error(
                "webhook %s to %s is dead after %d attempts: %s",
                record["public_id"],
                shown(url),
                attempts,
                outcome.error,
                extra={**extra, "action": "webhook_dead", "attempts": attempts},
            )
        else:
            logger.warning(
                "webhook %s to %s failed (attempt %d, next at %s): %s",
                record["public_id"],
                shown(url),
                attempts,
                retry_at.isoformat(timespec="seconds"),
                outcome.error,
                extra={**extra, "action": "webhook_failed", "attempts": attempts},
            )


async def start_worker(settings: Settings) -> WebhookWorker:
    """A started worker (one that delivers nothing when no URL is configured)."""
    worker = WebhookWorker(settings)
    await worker.start()
    return worker


async def webhooks_command(settings: Settings, *, requeue: bool, limit: int = 100) -> None:
    """`streamstats webhooks [--requeue]`: list pending and dead deliveries; re-queue dead ones."""
    async with db.connection(settings.database_url) as conn:
        if requeue:
            count = await conn.fetchval(queries["webhook_requeue"])
            print(f"re-queued {count} dead deliveries")
        rows = await conn.fetch(queries["webhook_list"], limit)
    if not rows:
        print("no pending or dead deliveries")
        return
    print(f"{'status':8} {'attempts':>8}  {'event id':36}  {'stream':36}  alert, endpoint, error")
    for row in rows:
        alert = f"{row['type'].removeprefix('alert.')} {row['alert']}"
        due = row["next_attempt_at"] if row["status"] == "pending" else None
        print(
            f"{row['status']:8} {row['attempts']:>8}  {row['public_id']!s:36}  "
            f"{row['stream_id']!s:36}  {alert}  {shown(row['url'])}"
            + (f"  next {due:%Y-%m-%d %H:%M:%S}Z" if due else "")
            + (f"  {row['last_error']}" if row["last_error"] else "")
        )
