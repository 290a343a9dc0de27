"""The write path's promise with real processes: an acknowledged update is stored exactly once,
a refused one is not stored, and resending makes delivery complete — through a database outage,
a `kill -9` of the server and a SIGTERM under load."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import socketio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ingest.auth import mint_token
from ingest.client import StatsClient
from tests.e2e.test_guard import socket_io
from tests.proxy import TcpProxy
from tests.servers import JWT_SECRET, ServerProcess

pytestmark = pytest.mark.slow

UPDATE = "stream:stats:update"
STEP = timedelta(milliseconds=10)


def token(stream: str) -> str:
    return mint_token(JWT_SECRET, role="streamer", streams=[stream], sub="durability", ttl=600)


@dataclass
class Stream:
    """One streamer's updates: number i has bitrate 1000 + i and time t0 + i * STEP."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    t0: datetime = field(
        default_factory=lambda: (datetime.now(UTC) - timedelta(minutes=2)).replace(microsecond=0)
    )
    acks: dict[int, Any] = field(default_factory=dict)

    def update(self, i: int) -> dict[str, Any]:
        stamp = (self.t0 + i * STEP).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        stats = {"bitrate": 1000 + i, "fps": 30, "packetLoss": 0.5, "latency": 40}
        return {"streamId": self.id, "stats": stats, "timestamp": stamp}

    def ok(self) -> set[int]:
        return {i for i, ack in self.acks.items() if isinstance(ack, dict) and ack.get("ok")}

    def refused(self, code: str) -> set[int]:
        return {
            i
            for i, ack in self.acks.items()
            if isinstance(ack, dict) and (ack.get("error") or {}).get("code") == code
        }


async def stored(database_url: str, stream: Stream) -> list[int]:
    """Update numbers stored for the stream (with their time checked against the number)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT time, bitrate_kbps FROM stream_stats WHERE stream_id = $1 ORDER BY time",
            uuid.UUID(stream.id),
        )
    finally:
        await conn.close()
    numbers = [int(r["bitrate_kbps"]) - 1000 for r in rows]
    for number, r in zip(numbers, rows, strict=True):
        assert r["time"] == stream.t0 + number * STEP
    return numbers


async def send_with_resends(url: str, stream: Stream, count: int, interval: float) -> StatsClient:
    """A streamer using the reference client: every update is resent until acknowledged."""
    client = StatsClient(ack_timeout=3, backoff_max=0.5)
    await client.connect(url, token(stream.id))

    async def one(i: int) -> None:
        stream.acks[i] = await client.send(stream.update(i))

    try:
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(interval)
        await asyncio.wait_for(asyncio.gather(*tasks), 25)
    finally:
        await client.close()
    return client


async def send_once(url: str, stream: Stream, count: int, interval: float) -> None:
    """A streamer that never resends: each update ends acknowledged, refused or unanswered."""
    client = socketio.AsyncClient(reconnection=False)
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def disconnected(*reason: Any) -> None:
        if not gone.done():
            gone.set_result(None)

    client.on("disconnect", disconnected)
    await client.connect(url, auth={"token": token(stream.id)}, transports=["websocket"])
    answered: dict[int, asyncio.Future[Any]] = {}
    try:
        for i in range(count):
            answered[i] = loop.create_future()

            def ack(data: Any, i: int = i) -> None:
                if not answered[i].done():
                    answered[i].set_result(data)

            try:
                await client.emit(UPDATE, stream.update(i), callback=ack)
            except socketio.exceptions.BadNamespaceError:
                del answered[i]
                break
            await asyncio.sleep(interval)
        # Answers of a closed connection never come: stop waiting once it is gone.
        waiting = asyncio.ensure_future(asyncio.wait(list(answered.values()), timeout=12))
        either: list[asyncio.Future[Any]] = [waiting, gone]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
    finally:
        await client.disconnect()
        await client.shutdown()
    for i, future in answered.items():
        stream.acks[i] = future.result() if future.done() else None


async def wait_status(server: ServerProcess, path: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(server.http_status, path)
        if last == status:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} answered {last}, not {status}, within {timeout}s")


async def until_waiting(conn: asyncpg.Connection, condition: str, timeout: float) -> None:
    """Return once a backend of this database matches `condition` in pg_stat_activity."""
    deadline = time.monotonic() + timeout
    while not await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND " + condition
    ):
        assert time.monotonic() < deadline, f"no backend came to: {condition}"
        await asyncio.sleep(0.02)


async def test_a_database_outage_loses_nothing_acknowledged_and_heals_by_itself(
    start_server: Callable[..., ServerProcess], database_url: str
):
    with TcpProxy.for_database(database_url) as proxy:
        server = await asyncio.to_thread(
            start_server,
            env={"DATABASE_URL": proxy.url(database_url), "STREAMSTATS_WRITE_TIMEOUT": "2s"},
        )
        resending = [Stream() for _ in range(3)]
        once = Stream()
        load = asyncio.gather(
            *(send_with_resends(server.url, s, 200, 0.02) for s in resending),
            send_once(server.url, once, 200, 0.02),
        )

        await asyncio.sleep(1.0)
        proxy.cut()
        await wait_status(server, "/readyz", 503, timeout=5)
        await asyncio.sleep(2.5)  # longer than the write timeout: waiting updates are refused
        proxy.forward()
        await wait_status(server, "/readyz", 200, timeout=10)
        clients = (await load)[: len(resending)]

    assert server.proc is not None and server.proc.poll() is None  # never restarted
    for stream in resending:
        assert stream.ok() == set(range(200))
        assert await stored(database_url, stream) == list(range(200))
    assert sum(c.resends for c in clients if isinstance(c, StatsClient)) > 0

    # Without resends: acknowledged means stored, "nothing was stored" means absent.
    unavailable = once.refused("unavailable")
    assert unavailable, "the outage refused nothing: was the database really cut?"
    maybe = {i for i in unavailable if "may have been stored" in once.acks[i]["error"]["message"]}
    rows = set(await stored(database_url, once))
    assert once.ok() <= rows
    assert not (rows & (unavailable - maybe))
    assert rows <= once.ok() | maybe


async def until_acknowledged(streams: list[Stream], count: int, timeout: float = 20) -> None:
    """Wait until every stream has `count` acknowledgements: the load is really flowing."""
    deadline = time.monotonic() + timeout
    while not all(len(s.ok()) >= count for s in streams):
        assert time.monotonic() < deadline, "the load never got going"
        await asyncio.sleep(0.02)


async def until_stored(database_url: str, streams: list[Stream], count: int) -> None:
    """Wait until every stream has `count` rows stored: the load is really flowing."""
    ids = [uuid.UUID(s.id) for s in streams]
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 20
        while await conn.fetchval(
            "SELECT count(*) FROM (SELECT stream_id FROM stream_stats "
            "WHERE stream_id = ANY($1::uuid[]) GROUP BY 1 HAVING count(*) >= $2) s",
            ids,
            count,
        ) < len(ids):
            assert time.monotonic() < deadline, "the load never got going"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def test_kill_9_under_load_then_restart_stores_every_update_exactly_once(
    start_server: Callable[..., ServerProcess], database_url: str
):
    server = await asyncio.to_thread(start_server)
    streams = [Stream() for _ in range(4)]
    load = asyncio.gather(*(send_with_resends(server.url, s, 200, 0.01) for s in streams))

    await until_acknowledged(streams, 10)
    server.kill()
    await asyncio.sleep(0.3)
    await asyncio.to_thread(start_server, port=server.port)
    clients = await load

    assert sum(c.resends for c in clients) > 0, "nothing was in flight when the server died"
    for stream in streams:
        assert stream.ok() == set(range(200))
        assert await stored(database_url, stream) == list(range(200))


async def test_sigterm_under_load_acknowledges_every_accepted_update_before_exit(
    start_server: Callable[..., ServerProcess], database_url: str
):
    server = await asyncio.to_thread(start_server)
    streams = [Stream() for _ in range(4)]
    load = asyncio.gather(*(send_once(server.url, s, 400, 0.01) for s in streams))

    await until_stored(database_url, streams, 10)
    signalled = time.monotonic()
    server.signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.wait, 15)
    exit_seconds = time.monotonic() - signalled
    await load

    assert code == 0, server.log()
    assert exit_seconds < 10
    for stream in streams:
        assert stream.ok(), "nothing was acknowledged before the signal"
        # Stored exactly when acknowledged: nothing accepted was left unanswered or unstored.
        assert set(await stored(database_url, stream)) == stream.ok()
        assert len(stream.acks) < 400, "the server kept taking updates after SIGTERM"


async def test_sigterm_while_a_commit_hangs_still_exits_within_10s_answering_every_update(
    start_server: Callable[..., ServerProcess], database_url: str
):
    stream = Stream()
    name = f"test_slow_commit_{uuid.UUID(stream.id).hex}"
    conn = await asyncpg.connect(database_url)
    try:
        # A deferred constraint trigger runs at COMMIT: this one holds this stream's COMMIT
        # longer than the drain may last (the default write timeout, 10 s, is longer too).
        await conn.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(12); RETURN NULL; END $$"
        )
        await conn.execute(
            f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT OR UPDATE ON stream_latest "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            f"WHEN (NEW.stream_id = '{stream.id}') EXECUTE FUNCTION {name}()"
        )
        server = await asyncio.to_thread(start_server)
        load = asyncio.ensure_future(send_once(server.url, stream, 5, 0.01))
        # Signal only once the updates' COMMIT is waiting on the trigger (a cold start on a
        # loaded machine may take longer than any fixed pause).
        # The writer's statement commits on its own: the trigger's sleep is where it waits.
        await until_waiting(conn, "state = 'active' AND wait_event = 'PgSleep'", 20)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.wait, 15)
        exit_seconds = time.monotonic() - signalled
        await load
        assert code == 0, server.log()
        assert exit_seconds < 10, server.log()
        # Cut short in COMMIT: each update is told it may have been stored, none left unanswered.
        maybe = {
            i
            for i in stream.refused("unavailable")
            if "may have been stored" in stream.acks[i]["error"]["message"]
        }
        assert maybe == set(range(5)), stream.acks
    finally:
        # Terminating the held COMMIT lets the trigger be dropped at once.
        await conn.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND wait_event = 'PgSleep'"
        )
        await conn.execute(f"DROP TRIGGER {name} ON stream_latest")
        await conn.execute(f"DROP FUNCTION {name}()")
        await conn.close()


async def send_without_pause(url: str, stream: Stream, window: int, stop: asyncio.Event) -> int:
    """A streamer that keeps `window` updates in flight, sending the next as soon as one is
    answered, whatever the answer, until its connection closes or `stop` is set.

    Returns how many it sent; `stream.acks` gets each answer (None: never answered).
    """
    client = socketio.AsyncClient(reconnection=False)
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    client.on("disconnect", lambda *reason: gone.set())
    await client.connect(url, auth={"token": token(stream.id)}, transports=["websocket"])
    answered: dict[int, asyncio.Future[Any]] = {}
    free = asyncio.Semaphore(window)
    sent = 0
    try:
        while not gone.is_set() and not stop.is_set():
            try:
                await asyncio.wait_for(free.acquire(), 0.2)
            except TimeoutError:
                continue  # the window is full: look again whether the connection is gone
            i = sent
            answered[i] = loop.create_future()

            def ack(data: Any, i: int = i) -> None:
                answered[i].set_result(data)
                free.release()

            try:
                await client.emit(UPDATE, stream.update(i), callback=ack)
            except socketio.exceptions.BadNamespaceError:
                del answered[i]
                break
            sent += 1
        waiting = [f for f in answered.values() if not f.done()]
        if waiting and not gone.is_set():
            await asyncio.wait(waiting, timeout=12)
    finally:
        await client.disconnect()
        await client.shutdown()
    for i, future in answered.items():
        stream.acks[i] = future.result() if future.done() else None
    return sent


async def test_sigterm_while_clients_keep_sending_drains_promptly_and_answers_them(
    start_server: Callable[..., ServerProcess], database_url: str
):
    # A rate limit clients cannot reach: every update gets to the update handler.
    server = await asyncio.to_thread(start_server, env={"STREAMSTATS_RATE_LIMIT": "1000000"})
    streams = [Stream() for _ in range(12)]
    stop = asyncio.Event()
    window = 8
    load = asyncio.gather(*(send_without_pause(server.url, s, window, stop) for s in streams))
    try:
        await until_stored(database_url, streams, 10)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.wait, 15)
        exit_seconds = time.monotonic() - signalled
    finally:
        stop.set()
        await load

    log = server.log()
    assert code == 0, log
    assert "drain did not finish" not in log, log
    assert "drained" in log, log
    assert exit_seconds < 6, f"exit took {exit_seconds:.1f}s"
    # Whether any update reaches the server between the signal and the close is a race with
    # these clients (a drain takes one batch's commit; a loaded CI run lost it): that updates
    # sent during a drain are refused at once is what the held-batch test below asserts. Here:
    # once refused, refused for good — nothing sent after a refused update is accepted.
    for stream in streams:
        refused = stream.refused("unavailable")
        assert not refused or max(stream.ok(), default=-1) < min(refused), stream.acks
        # Only what was in flight when the connection closed may be unanswered.
        unanswered = {i for i, ack in stream.acks.items() if ack is None}
        assert len(unanswered) <= window, unanswered
        # Acknowledged means stored; an update stored without an answer must be one in flight.
        rows = set(await stored(database_url, stream))
        assert stream.ok() <= rows <= stream.ok() | unanswered


def update_number(stream: Stream, timestamp: str) -> int:
    """The number of the stream's update with this (echoed) timestamp."""
    return round((datetime.fromisoformat(timestamp) - stream.t0) / STEP)


async def flood(
    ws: ClientConnection,
    stream: Stream,
    window: int,
    start: asyncio.Event,
    stop: asyncio.Event,
    limit: int = 20_000,
) -> tuple[int, int]:
    """A streamer on a raw websocket connected for `stream` that, once `start` is set, keeps
    `window` updates in flight until its connection closes, `stop` is set or it sent `limit`.
    Without acknowledgement callbacks, as the client guide sends: the answer is a
    `stream:stats:received` or an `error` event.

    Frames are written as they are, so the server, not this client, sets the pace.
    Returns how many it sent and how many were refused; `stream.acks` gets the received ones.
    """
    in_flight = 0
    refused = 0
    room = asyncio.Event()

    def answered() -> None:
        nonlocal in_flight
        in_flight -= 1
        room.set()

    async def read() -> None:
        nonlocal refused
        try:
            async for frame in ws:
                if frame == "2":  # Engine.IO ping
                    await ws.send("3")
                elif isinstance(frame, str) and frame.startswith("42"):
                    event, data = json.loads(frame[2:])
                    if event == "stream:stats:received":
                        number = update_number(stream, data["timestamp"])
                        stream.acks[number] = {"ok": True, **data}
                        answered()
                    elif event == "error" and data.get("event") == UPDATE:
                        refused += 1
                        answered()
        except ConnectionClosed:
            pass
        finally:
            room.set()

    reader = asyncio.create_task(read())
    stopping = asyncio.create_task(stop.wait())
    stopping.add_done_callback(lambda _: room.set())
    starting = asyncio.create_task(start.wait())
    sent = 0
    try:
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        while not reader.done() and not stop.is_set() and sent < limit:
            if in_flight >= window:
                room.clear()
                await room.wait()
                continue
            try:
                await ws.send("42" + json.dumps([UPDATE, stream.update(sent)]))
            except ConnectionClosed:
                break
            sent += 1
            in_flight += 1
    finally:
        starting.cancel()
        stopping.cancel()
        await ws.close()
        await reader
    return sent, refused


def readyz_problems(server: ServerProcess) -> list[str]:
    """What /readyz says is wrong (empty when ready or unreachable)."""
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=2) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError:
        return []
    return list(json.loads(body).get("problems", []))


async def until_draining(server: ServerProcess, timeout: float) -> None:
    """Wait until /readyz says the server is shutting down: its drain has begun."""
    deadline = time.monotonic() + timeout
    while "server: shutting down" not in await asyncio.to_thread(readyz_problems, server):
        assert time.monotonic() < deadline, f"no drain within {timeout}s:\n{server.log()}"
        await asyncio.sleep(0.05)


class Streamer:
    """A python-socketio streamer whose every update's answer (acknowledgement, or event when
    `ack` is false) is kept in `stream.acks`, with how long it took in `latency`."""

    def __init__(self, stream: Stream, *, ack: bool):
        self.stream = stream
        self.ack = ack
        self.client = socketio.AsyncClient(reconnection=False)
        self.answers: dict[int, asyncio.Future[Any]] = {}
        self.latency: dict[int, float] = {}
        self._waiting: list[int] = []  # without acknowledgements, answers come in order
        self.client.on("stream:stats:received", self._event)
        self.client.on("error", self._event)

    def _event(self, data: Any) -> None:
        if self._waiting:
            if isinstance(data, dict) and "code" in data:
                data = {"ok": False, "error": data}  # what an acknowledgement would have been
            self._answered(self._waiting.pop(0), data)

    def _answered(self, i: int, data: Any) -> None:
        future = self.answers[i]
        if not future.done():
            future.set_result(data)

    async def connect(self, url: str) -> Streamer:
        await self.client.connect(
            url, auth={"token": token(self.stream.id)}, transports=["websocket"]
        )
        return self

    async def send(self, i: int) -> None:
        """Send update i; its answer comes to `answers[i]`."""
        sent = time.monotonic()
        future = self.answers[i] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self.latency.setdefault(i, time.monotonic() - sent))
        if self.ack:
            await self.client.emit(
                UPDATE, self.stream.update(i), callback=lambda data: self._answered(i, data)
            )
        else:
            self._waiting.append(i)
            await self.client.emit(UPDATE, self.stream.update(i))

    async def one_at_a_time(self, numbers: range, wait: float) -> None:
        """Send these updates one after the other, each once the last was answered (or `wait`
        seconds went by without an answer)."""
        for i in numbers:
            await self.send(i)
            await asyncio.wait([self.answers[i]], timeout=wait)
            await asyncio.sleep(0.1)

    async def settle(self, timeout: float) -> None:
        """Wait for the answers still due, then keep them (None: never answered)."""
        pending = [f for f in self.answers.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for i, future in self.answers.items():
            self.stream.acks[i] = future.result() if future.done() else None

    async def close(self) -> None:
        await self.client.disconnect()
        await self.client.shutdown()


async def test_sigterm_while_a_batch_is_held_refuses_new_updates_at_once_and_drains_promptly(
    start_server: Callable[..., ServerProcess], database_url: str
):
    """While a drain waits for a batch the database holds, every update sent is answered
    `unavailable` at once, and clients that keep sending do not hold the drain open: once the
    batch commits, the server exits (status 0) long before its 6 s drain limit."""
    # A rate limit clients cannot reach: every update gets to the update handler.
    server = await asyncio.to_thread(start_server, env={"STREAMSTATS_RATE_LIMIT": "1000000"})
    held = Streamer(Stream(), ack=True)
    probes = [Streamer(Stream(), ack=True), Streamer(Stream(), ack=False)]
    floods = [Stream() for _ in range(12)]
    # Deep enough that the server always has updates waiting, even when this process pauses.
    window = 256
    start, stop = asyncio.Event(), asyncio.Event()
    sockets = [await socket_io(server.url, token(s.id)) for s in floods]
    # Each refusal is an `error` event the server awaits sending: updates coming without a
    # pause keep some handler busy all the time.
    load = asyncio.gather(
        *(flood(ws, s, window, start, stop) for ws, s in zip(sockets, floods, strict=True))
    )
    connected: list[Streamer] = []
    try:
        for streamer in (held, *probes):
            connected.append(await streamer.connect(server.url))
        for i in range(20):  # acknowledged before the signal
            await held.send(i)
        await held.settle(timeout=10)
        lock = await asyncpg.connect(database_url)
        watch = await asyncpg.connect(database_url)
        try:
            # Hold the next batch: its INSERT waits on this lock until it is released.
            await lock.execute("BEGIN; LOCK TABLE stream_stats IN EXCLUSIVE MODE")
            for i in range(20, 25):
                await held.send(i)
            await until_waiting(
                watch, "wait_event_type = 'Lock' AND query ILIKE '%stream_stats%'", 10
            )
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            await until_draining(server, timeout=3)
            start.set()  # the clients keep sending from now on
            await asyncio.gather(*(p.one_at_a_time(range(5), wait=1.0) for p in probes))
            assert server.proc is not None and server.proc.poll() is None, (
                "the server exited while its batch was held: the drain did not wait for it"
            )
        finally:
            await lock.execute("ROLLBACK")  # the held batch goes on and commits
            released = time.monotonic()
            await lock.close()
            await watch.close()
        code = await asyncio.to_thread(server.wait, 15)
        exited = time.monotonic()
    finally:
        stop.set()
        results = await load
        for streamer in connected:
            await streamer.settle(timeout=1)
            await streamer.close()

    # An update sent during the drain is answered at once, `unavailable`, and not stored.
    for probe in probes:
        kind = "acknowledgement" if probe.ack else "event"
        for i, answer in probe.stream.acks.items():
            assert answer is not None, f"an update sent during the drain got no {kind} at all"
            assert answer.get("ok") is False, answer
            assert answer["error"]["code"] == "unavailable", answer
            assert probe.latency[i] < 1.0, f"the {kind} took {probe.latency[i]:.2f}s"
        assert len(probe.stream.acks) == 5
        assert await stored(database_url, probe.stream) == []
    # Clients kept sending, yet the drain ended soon after the held batch committed.
    log = server.log()
    assert code == 0, log
    # Timed from the release, not the signal: the test itself holds the batch meanwhile.
    assert exited - released < 2.5, (
        f"exit {exited - signalled:.1f}s after SIGTERM, "
        f"{exited - released:.1f}s after the held batch was released"
    )
    assert "drain did not finish" not in log, log
    assert "drained" in log, log
    # Accepted before the signal: acknowledged, and stored, including the held batch.
    assert held.stream.ok() == set(range(25)), held.stream.acks
    assert await stored(database_url, held.stream) == list(range(25))
    # Sent during the drain: refused, and not stored; unanswered only what was in flight when
    # the connection closed.
    for stream, (sent, refused) in zip(floods, results, strict=True):
        assert sent - refused <= window, (sent, refused)
        assert not stream.acks, stream.acks
        assert await stored(database_url, stream) == []
    assert sum(refused for _, refused in results) > 0, "the clients sent nothing during the drain"
