"""Webhook delivery against a real local HTTP receiver: failures, timeouts, restarts, runners."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from analytics.alerts import alert_payload
from ingest import metrics
from jobs.webhooks import SIGNATURE_HEADER, WebhookWorker
from streamstats import outbox
from streamstats.db import create_pool
from tests.servers import free_port

SECRET = "webhook-secret-" + "w" * 32


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The receiver's check, written from the documented header format."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(fields["t"])) <= tolerance
    return fresh and hmac.compare_digest(expected, fields["v1"])


class Receiver:
    """An aiohttp server on 127.0.0.1 whose answers a test scripts, recording every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[dict[str, Any]] = []
        # Per request, in order: an HTTP status, or ("sleep", seconds) before a 200.
        self.script: list[Any] = []
        self.hold: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        record = {
            "body": json.loads(body),
            "signed": verify(SECRET, request.headers[SIGNATURE_HEADER], body),
            "at": time.monotonic(),
        }
        self.requests.append(record)
        if self.hold is not None:
            await self.hold.wait()
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, tuple):
            await asyncio.sleep(step[1])
            step = 200
        return web.Response(status=step)

    def ids(self) -> list[str]:
        return [r["body"]["id"] for r in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    if r.hold is not None:
        r.hold.set()
    await r.stop()


def webhook_settings(make_settings: Callable[..., Any], url: str, **overrides: Any) -> Any:
    values = {
        "webhook_urls": [url],
        "webhook_secret": SECRET,
        "webhook_timeout": timedelta(milliseconds=500),
        "webhook_backoff": timedelta(milliseconds=100),
        **overrides,
    }
    return make_settings(**values)


async def publish(conn: asyncpg.Connection, stream: str, n: int) -> list[dict[str, Any]]:
    """Alternating raised/cleared transitions of one stream, each in its own transaction."""
    payloads = []
    start = datetime.now(UTC)
    for i in range(n):
        at = start + timedelta(seconds=i)
        state = "raised" if i % 2 == 0 else "cleared"
        payload = alert_payload(
            stream, "fps_low", state, float(i), 20.0, at, at if state == "cleared" else None
        )
        async with conn.transaction():
            await outbox.publish(conn, payload)
        payloads.append(payload)
    return payloads


async def eventually(check: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await _value(check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _value(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) else result


async def delivered(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")


def per_stream_order(requests: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each stream's alert values in the order first received (a repeat of an id is skipped)."""
    seen: set[str] = set()
    order: dict[str, list[float]] = {}
    for r in requests:
        if r["body"]["id"] in seen:
            continue
        seen.add(r["body"]["id"])
        order.setdefault(r["body"]["data"]["streamId"], []).append(r["body"]["data"]["value"])
    return order


async def test_every_event_arrives_signed_and_in_order_through_failures_a_timeout_and_a_restart(
    conn, make_settings, receiver
):
    settings = webhook_settings(make_settings, receiver.url)
    worker = WebhookWorker(settings)
    await worker.start()
    streams = [str(uuid.uuid4()) for _ in range(3)]
    # Two failures, then an answer that comes after the 0.5 s timeout: three failed attempts.
    receiver.script = [500, 503, ("sleep", 1.5)]
    sent = []
    for stream in streams:
        sent += await publish(conn, stream, 4)
    await eventually(lambda: _all_delivered(conn, len(sent)), timeout=30)

    # The runner stops, the receiver goes down; events keep coming; the runner comes back first.
    await worker.stop()
    await receiver.stop()
    later = await publish(conn, streams[0], 3)
    worker = WebhookWorker(settings)
    await worker.start()
    await asyncio.sleep(1.0)  # attempts fail: connection refused
    await receiver.start()
    try:
        await eventually(lambda: _all_delivered(conn, len(sent) + len(later)), timeout=30)
    finally:
        await worker.stop()

    ids = receiver.ids()
    stored = {
        str(r["event_id"]): r["data"]
        for r in await conn.fetch("SELECT event_id, data::text FROM alert_events")
    }
    assert set(ids) == set(stored)  # every event, nothing else
    assert all(r["signed"] for r in receiver.requests)
    for r in receiver.requests:  # a repeat carries the same id and the same event
        assert r["body"]["data"] == json.loads(stored[r["body"]["id"]])
        assert r["body"]["type"] == f"alert.{r['body']['data']['state']}"
    # The two failures and the timed-out attempt (which the receiver did get) were made again;
    # attempts refused while it was down never reached it.
    # (Which events they hit depends on timing: one event may take all three.)
    assert len(ids) == len(stored) + 3
    attempts = await conn.fetchval("SELECT sum(attempts) FROM webhook_deliveries")
    assert attempts > len(ids)
    order = per_stream_order(receiver.requests)
    assert order[streams[0]] == [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0]
    assert order[streams[1]] == [0.0, 1.0, 2.0, 3.0]


async def _all_delivered(conn: asyncpg.Connection, n: int) -> bool:
    return await delivered(conn) == n


async def test_two_workers_make_each_attempt_once(conn, make_settings, receiver, database_url):
    settings = webhook_settings(make_settings, receiver.url, webhook_timeout=timedelta(seconds=5))
    # Slow answers keep attempts in flight while the other worker looks for work.
    receiver.script = [("sleep", 0.05)] * 200
    first, second = WebhookWorker(settings), WebhookWorker(settings)
    await first.start()
    await second.start()
    try:
        sent = []
        for _ in range(8):
            sent += await publish(conn, str(uuid.uuid4()), 5)
        await eventually(lambda: _all_delivered(conn, len(sent)), timeout=60)
        await asyncio.sleep(0.5)
    finally:
        await first.stop()
        await second.stop()
    assert sorted(Counter(receiver.ids()).values()) == [1] * len(sent)
    assert await conn.fetchval("SELECT max(attempts) FROM webhook_deliveries") == 1
    order = per_stream_order(receiver.requests)
    assert all(values == [0.0, 1.0, 2.0, 3.0, 4.0] for values in order.values())


class JobsProcess:
    """`streamstats jobs` in a subprocess, logging to a file."""

    def __init__(self, database_url: str, log_dir: Path, env: dict[str, str]):
        self.log_path = log_dir / f"jobs-{time.monotonic_ns()}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STREAMSTATS_")},
            "DATABASE_URL": database_url,
            "STREAMSTATS_REPORTS_DIR": str(log_dir / "reports"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> JobsProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamstats.cli", "jobs"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def start_jobs(database_url, tmp_path) -> Any:
    started: list[JobsProcess] = []

    def start(env: dict[str, str]) -> JobsProcess:
        process = JobsProcess(database_url, tmp_path, env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def runner_env(receiver: Receiver) -> dict[str, str]:
    return {
        "STREAMSTATS_WEBHOOK_URLS": receiver.url,
        "STREAMSTATS_WEBHOOK_SECRET": SECRET,
        "STREAMSTATS_WEBHOOK_TIMEOUT": "2s",
        "STREAMSTATS_WEBHOOK_BACKOFF": "100ms",
    }


async def test_two_job_runners_at_once_deliver_each_attempt_once(conn, receiver, start_jobs):
    receiver.script = [("sleep", 0.05)] * 200
    runners = [start_jobs(runner_env(receiver)) for _ in range(2)]
    for runner in runners:
        await eventually(lambda r=runner: "delivering webhooks to" in r.log(), timeout=30)
    sent = []
    for _ in range(6):
        sent += await publish(conn, str(uuid.uuid4()), 4)
    await eventually(lambda: _all_delivered(conn, len(sent)), timeout=60)
    await asyncio.sleep(0.5)
    assert sorted(Counter(receiver.ids()).values()) == [1] * len(sent)
    assert await conn.fetchval("SELECT max(attempts) FROM webhook_deliveries") == 1


async def test_a_runner_killed_between_commit_and_delivery_loses_nothing(
    conn, receiver, start_jobs
):
    stream = str(uuid.uuid4())
    receiver.hold = asyncio.Event()  # the first attempt hangs until the runner is dead
    runner = start_jobs(runner_env(receiver))
    await eventually(lambda: "delivering webhooks to" in runner.log(), timeout=30)
    sent = await publish(conn, stream, 2)
    await eventually(lambda: len(receiver.requests) >= 1)
    assert runner.proc is not None
    runner.proc.kill()  # kill -9 with the attempt in flight: its transaction rolls back
    runner.proc.wait(10)
    # Committed while no runner is alive.
    sent += await publish(conn, stream, 2)
    assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
    receiver.hold.set()
    receiver.hold = None

    runner = start_jobs(runner_env(receiver))
    await eventually(lambda: _all_delivered(conn, len(sent)), timeout=60)
    ids = receiver.ids()
    assert len(set(ids)) == len(sent)
    # The attempt cut short by the crash was made again, with the same id.
    assert ids.count(ids[0]) == 2
    assert per_stream_order(receiver.requests)[stream] == [0.0, 1.0, 0.0, 1.0]


async def test_a_delivery_past_its_retry_period_is_dead_listed_and_requeued(
    conn, make_settings, receiver, database_url
):
    settings = webhook_settings(make_settings, receiver.url, webhook_retry_for=timedelta(seconds=1))
    receiver.script = [500] * 1000
    worker = WebhookWorker(settings)
    await worker.start()
    stream = str(uuid.uuid4())
    try:
        await publish(conn, stream, 1)
        await eventually(
            lambda: conn.fetchval("SELECT status = 'dead' FROM webhook_deliveries"), timeout=30
        )
        pool = await create_pool(database_url, max_size=2)
        try:
            page = (await metrics.render(pool)).decode()
        finally:
            await pool.close()
        assert 'streamstats_webhook_deliveries{status="dead"} 1.0' in page
        assert 'streamstats_webhook_deliveries{status="pending"} 0.0' in page
        failed = await conn.fetchval("SELECT attempts FROM webhook_deliveries")
        assert f"streamstats_webhook_failed_attempts {float(failed)}" in page

        env = {**os.environ, "DATABASE_URL": database_url}
        listing = cli(env)
        assert "dead" in listing and stream in listing and "HTTP 500" in listing
        assert "/hook" not in listing  # endpoint paths may hold tokens: never shown

        receiver.script = []
        requeued = cli(env, "--requeue")
        assert "re-queued 1 dead deliveries" in requeued
        await eventually(lambda: _all_delivered(conn, 1), timeout=30)
        assert "no pending or dead deliveries" in cli(env)
    finally:
        await worker.stop()


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streamstats.cli", "webhooks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_slack_format_adds_a_text_line(conn, make_settings, receiver):
    settings = webhook_settings(make_settings, receiver.url, webhook_format="slack")
    worker = WebhookWorker(settings)
    await worker.start()
    stream = str(uuid.uuid4())
    try:
        await publish(conn, stream, 2)
        await eventually(lambda: len(receiver.requests) == 2)
    finally:
        await worker.stop()
    texts = [r["body"]["text"] for r in receiver.requests]
    assert (
        texts[0]
        == f"fps_low raised on stream {stream}: 0 (threshold 20) since "
        + (receiver.requests[0]["body"]["data"]["startedAt"])
    )
    assert texts[1].startswith(f"fps_low cleared on stream {stream} at ")
    assert {"id", "type", "createdAt", "data"} <= set(receiver.requests[0]["body"])


async def test_a_bitrate_drop_from_the_job_is_queued_for_every_endpoint(
    conn, make_settings, receiver, database_url
):
    from jobs import drops
    from jobs.base import JobContext
    from tests.e2e.test_alerts import seed_drop

    second = Receiver()
    settings = webhook_settings(make_settings, receiver.url)
    settings = settings.model_copy(update={"webhook_urls": [receiver.url, second.url]})
    worker = WebhookWorker(settings)
    await worker.start()  # registers both endpoints
    await worker.stop()
    stream = uuid.uuid4()
    now = datetime.now(UTC)
    await seed_drop(conn, stream, now)
    pool = await create_pool(database_url, max_size=2)
    try:
        assert await drops.run(JobContext(settings, pool, now)) == 2
    finally:
        await pool.close()
    rows = await conn.fetch(
        "SELECT e.type, e.data->>'type' AS alert, count(*) AS endpoints FROM webhook_deliveries d "
        "JOIN alert_events e ON e.id = d.event_id GROUP BY 1, 2 ORDER BY 1 DESC"
    )
    assert [tuple(r) for r in rows] == [
        ("alert.raised", "bitrate_drop", 2),
        ("alert.cleared", "bitrate_drop", 2),
    ]
