"""What a hostile client can do below the events, against a real server over raw websockets.

Frames go out exactly as written (Engine.IO v4 / Socket.IO v5 text, or binary), so the tests
send what no client library would: garbage, binary attachments, sockets that never connect.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ingest.auth import mint_token
from tests.e2e.clients import Clients, guide_update
from tests.e2e.test_metrics import scrape
from tests.servers import JWT_SECRET

STREAM = str(uuid.uuid4())


async def engine_io(url: str) -> ClientConnection:
    """A websocket that completed the Engine.IO handshake (nothing more)."""
    ws = await connect(
        url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", max_size=None
    )
    opening = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(opening, str) and opening.startswith("0{"), opening
    return ws


async def socket_io(url: str, token: str) -> ClientConnection:
    """A websocket connected to the default namespace with `token`."""
    ws = await engine_io(url)
    await ws.send("40" + json.dumps({"token": token}))
    answer = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(answer, str) and answer.startswith("40{"), answer
    return ws


async def closed_code(ws: ClientConnection, timeout: float) -> int | None:
    """Answer pings until the server closes the websocket; its close code (None: still open)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await ws.recv() == "2":
                    await ws.send("3")
    except ConnectionClosed:
        return ws.close_code
    except TimeoutError:
        return None


def metric(server, name: str) -> float:
    return scrape(server.url).get(name, 0.0)


def rss(server) -> float:
    return metric(server, "process_resident_memory_bytes")


async def test_a_connection_that_never_sends_the_socket_io_connect_is_closed(start_server):
    server = start_server(env={"STREAMSTATS_CONNECT_TIMEOUT": "1s"})
    token = mint_token(JWT_SECRET, role="streamer", streams=[STREAM])
    silent = [await engine_io(server.url) for _ in range(20)]
    connected = await socket_io(server.url, token)
    left = await socket_io(server.url, token)
    await left.send("41")  # leaves the namespace, keeps the Engine.IO connection
    started = time.monotonic()
    codes = await asyncio.gather(*(closed_code(ws, 5) for ws in [*silent, left]))
    elapsed = time.monotonic() - started
    still = await closed_code(connected, 0.5)
    await connected.close()
    assert codes == [1008] * 21
    assert elapsed < 3  # 1 s, plus at most a fifth of it, plus a loaded machine
    assert still is None
    assert metric(server, 'streamstats_connections_dropped_total{reason="connect_timeout"}') == 21


def test_a_long_polling_session_that_never_connects_is_closed(start_server):
    server = start_server(env={"STREAMSTATS_CONNECT_TIMEOUT": "1s"})
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    with urllib.request.urlopen(base, timeout=5) as response:
        sid = json.loads(response.read().decode()[1:])["sid"]
    deadline = time.monotonic() + 5
    status = 200
    while status == 200 and time.monotonic() < deadline:
        try:  # a poll returns a ping (answered) or, once the session is closed, its CLOSE
            with urllib.request.urlopen(f"{base}&sid={sid}", timeout=5) as response:
                body = response.read().decode()
            if body == "2":
                urllib.request.urlopen(
                    urllib.request.Request(f"{base}&sid={sid}", data=b"3"), timeout=5
                ).close()
            status = 200 if "1" not in body.split("\x1e") else 0
        except urllib.error.HTTPError as exc:
            status = exc.code
    assert status in (0, 400), status  # closed, or already forgotten
    assert time.monotonic() < deadline


async def settles_at(server, name: str, value: float, seconds: float) -> bool:
    """Whether the metric reads `value` within `seconds`."""
    for _ in range(int(seconds * 10)):
        if metric(server, name) == value:
            return True
        await asyncio.sleep(0.1)
    return metric(server, name) == value


def handshake_only(url: str) -> None:
    urllib.request.urlopen(url + "/socket.io/?EIO=4&transport=polling", timeout=5).close()


def polling_session(url: str, token: str) -> dict:
    """A long-polling Engine.IO session joined to the namespace: its OPEN packet's fields."""
    base = url + "/socket.io/?EIO=4&transport=polling"
    with urllib.request.urlopen(base, timeout=5) as response:
        opening = json.loads(response.read().decode()[1:])
    connect = b"40" + json.dumps({"token": token}).encode()
    urllib.request.urlopen(
        urllib.request.Request(f"{base}&sid={opening['sid']}", data=connect), timeout=5
    ).close()
    return opening


async def test_a_client_that_stops_answering_pings_is_dropped(start_server):
    """python-engineio's monitor task is off: the connection sweep closes silent sessions."""
    server = start_server(
        env={
            "STREAMSTATS_PING_INTERVAL": "1s",
            "STREAMSTATS_PING_TIMEOUT": "1s",
            "STREAMSTATS_CONNECT_TIMEOUT": "1s",
        }
    )
    token = mint_token(JWT_SECRET, role="streamer", streams=[STREAM])
    # A handshake and nothing more, not even a poll: closing it must not hold up the sweep
    # (python-engineio's disconnect would wait for a poll that never comes).
    await asyncio.to_thread(handshake_only, server.url)
    await asyncio.sleep(1.5)  # past the connect timeout: the sweep has closed it
    opening = await asyncio.to_thread(polling_session, server.url, token)
    assert opening["pingInterval"] == 1000
    answering = await socket_io(server.url, token)  # answers its pings: kept
    gauge = 'streamstats_connections{role="streamer"}'
    assert await settles_at(server, gauge, 2, 15)
    # The long-polling client now goes silent: no poll, no pong. Nothing it sends wakes the
    # server; it must be closed by the server alone, within ping interval + timeout + a sweep.
    started = time.monotonic()
    pinged = asyncio.ensure_future(closed_code(answering, 30))
    assert await settles_at(server, gauge, 1, 15)
    assert time.monotonic() - started < 6  # 1 s + 1 s + a half-second sweep, on a loaded machine
    await asyncio.sleep(3)  # the websocket that answers stays through several ping rounds
    assert not pinged.done()
    assert metric(server, gauge) == 1
    pinged.cancel()
    await answering.close()


GARBAGE = {
    "not Engine.IO": "x",
    "empty frame": "",
    "unknown Engine.IO type": "9",
    "Engine.IO message, not Socket.IO": "4{}",
    "unknown Socket.IO type": "49",
    "client acknowledgement": "43[1]",
    "unreadable event": "42[oops",
    "event that is not an array": '42{"a":1}',
    "event with a number for a name": "42[1]",
    "event with a reserved name": '42["disconnect"]',
    "binary event header": '451-["stream:stats:update",{"_placeholder":true,"num":0}]',
    "binary frame": b"\x00" * 1000,
}


async def test_garbage_is_counted_closes_the_connection_and_is_not_logged(start_server):
    server = start_server()
    token = mint_token(JWT_SECRET, role="streamer", streams=[STREAM])
    log_before = server.log_path.stat().st_size
    codes = {}
    for name, frame in GARBAGE.items():
        for authenticated in (False, True):
            ws = await (socket_io(server.url, token) if authenticated else engine_io(server.url))
            await ws.send(frame)
            codes[name, authenticated] = await closed_code(ws, 5)
    # An event before the Socket.IO connect is garbage too.
    ws = await engine_io(server.url)
    await ws.send('42["stream:stats:get",{"streamId":"' + STREAM + '"}]')
    codes["event before connect", False] = await closed_code(ws, 5)

    # One socket sending garbage as fast as it can: the server reads one frame of it.
    flood = await engine_io(server.url)
    sent = 0
    with pytest.raises(ConnectionClosed):
        for _ in range(5_000):
            await flood.send("4x")
            sent += 1
            await asyncio.sleep(0)
    await asyncio.sleep(0.5)
    logged = server.log_path.stat().st_size - log_before

    assert set(codes.values()) == {1008}, codes
    refused = 2 * len(GARBAGE) + 2
    kinds = ("engineio", "socketio", "binary")
    counted = sum(
        metric(server, f'streamstats_malformed_packets_total{{kind="{kind}"}}') for kind in kinds
    )
    assert counted == refused
    assert metric(server, 'streamstats_connections_dropped_total{reason="malformed"}') == refused
    # At most one line per 10 s, no tracebacks (unguarded: ~950 bytes per refused packet).
    assert logged < 1000, server.log()[-3000:]
    assert "Traceback" not in server.log()
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [STREAM])
        assert (await streamer.call("stream:stats:update", guide_update(STREAM)))["ok"] is True


async def test_binary_attachments_are_refused_before_any_is_buffered(start_server):
    """The attack of declaring 99,999 attachments and sending 180 x 1 MB: memory stays flat."""
    server = start_server()
    token = mint_token(JWT_SECRET, role="viewer", streams=[STREAM])
    header = '4599999-["stream:stats:update",{"_placeholder":true,"num":0}]'
    chunk = b"\xff" * 1_000_000
    before = rss(server)
    sent = connections = 0
    while sent < 180 and connections < 400:
        ws = await socket_io(server.url, token)
        connections += 1
        await ws.send(header)
        try:
            while sent < 180:
                await ws.send(chunk)
                sent += 1
                await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        assert await closed_code(ws, 5) == 1008
    await asyncio.sleep(0.5)
    grown = rss(server) - before
    print(f"sent {sent} MB over {connections} connections; RSS grew {grown / 1e6:.1f} MB")
    assert sent == 180
    assert grown < 30e6  # unguarded: +179 MB
    assert metric(server, 'streamstats_malformed_packets_total{kind="binary"}') == connections


async def test_a_message_over_the_engine_io_limit_closes_with_message_too_big(start_server):
    server = start_server()
    ws = await engine_io(server.url)
    await ws.send("40" + json.dumps({"token": "x" * 1_200_000}))
    assert await closed_code(ws, 5) == 1009
    assert metric(server, 'streamstats_malformed_packets_total{kind="oversize"}') == 1


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"x", "engineio"),
        (b"3\x1e\x1e3", "engineio"),
        (b"4[1]", "socketio"),
        (b"bAAAA", "binary"),
        (b"\xff\xfe", "engineio"),
        (b'42["stream:stats:get",{}]', "socketio"),  # before the connect
    ],
)
def test_long_polling_garbage_ends_the_session_without_a_traceback(start_server, payload, kind):
    server = start_server()
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    with urllib.request.urlopen(base, timeout=5) as response:
        sid = json.loads(response.read().decode()[1:])["sid"]

    def status(data: bytes | None) -> int:
        request = urllib.request.Request(f"{base}&sid={sid}", data=data)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    first = status(payload)
    assert first in (200, 400)  # refused here (400), or by the Socket.IO decoder (200)
    assert status(None) == 400  # the session is gone
    assert metric(server, f'streamstats_malformed_packets_total{{kind="{kind}"}}') == 1
    assert "Traceback" not in server.log()


async def test_refused_connects_are_counted_and_logged_as_a_sample(start_server):
    server = start_server()
    ws = await engine_io(server.url)
    await asyncio.sleep(0.2)
    log_before = server.log_path.stat().st_size
    for _ in range(300):
        await ws.send('40{"token":"x"}')
        answer = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(answer, str) and answer.startswith("44"), answer
    await ws.close()
    await asyncio.sleep(0.3)
    logged = server.log_path.stat().st_size - log_before
    assert metric(server, "streamstats_connects_refused_total") == 300
    assert logged < 1000, server.log()[-2000:]  # unlimited: ~130 bytes per refusal
