"""Random and malicious `stream:stats:update` payloads against one real server (hypothesis).

Payloads go out as exact Socket.IO text frames over a raw websocket, so the test can send what
no well-behaved client library would: NaN and Infinity literals, integers of thousands of
digits, nesting thousands deep, oversize events. Every one must be answered `invalid` or
`too_large`, nothing may be stored, and the same server must still serve a good client.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from ingest.auth import mint_token
from tests.e2e.clients import Clients, guide_update
from tests.servers import JWT_SECRET

pytestmark = pytest.mark.slow

STREAM = str(uuid.uuid4())
LIMIT = 16 * 1024
RAW = "\u0000raw\u0000"  # stands for raw JSON text spliced into the dumped payload
RETENTION_DAYS = 30


class RawSocketIO:
    """A Socket.IO v5 client over Engine.IO v4 websocket that sends exact event text."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.next_id = 0

    @classmethod
    async def open(cls, url: str, token: str) -> RawSocketIO:
        ws = await connect(
            url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket",
            max_size=None,
        )
        client = cls(ws)
        opening = await ws.recv()
        assert isinstance(opening, str) and opening.startswith("0"), opening
        await ws.send("40" + json.dumps({"token": token}))
        connected = await client._receive()
        assert connected.startswith("40{"), connected
        return client

    async def _receive(self) -> str:
        while True:
            message = await asyncio.wait_for(self.ws.recv(), 10)
            assert isinstance(message, str)
            if message == "2":  # Engine.IO ping
                await self.ws.send("3")
                continue
            return message

    async def call(self, event: str, args_text: str) -> Any:
        """Send `42<id>["event"<args_text>]` and return the acknowledgement's first argument."""
        self.next_id += 1
        await self.ws.send(f"42{self.next_id}[{json.dumps(event)}{args_text}]")
        prefix = f"43{self.next_id}"
        while True:
            message = await self._receive()
            if message.startswith(prefix):
                return json.loads(message[len(prefix) :])[0]

    async def close(self) -> None:
        await self.ws.close()


def event_bytes(args_text: str) -> int:
    """The size of the event as sent: the JSON array of its name and arguments."""
    return len(f'["stream:stats:update"{args_text}]'.encode())


# -- what to throw ---------------------------------------------------------------------------

NUMERIC_RANGES = {
    "stats.bitrate": (0, 1_000_000),
    "stats.fps": (0, 1_000),
    "stats.audioLevel": (-200, 20),
    "stats.packetLoss": (0, 100),
    "stats.latency": (0, 600_000),
    "stats.bandwidth.upload": (0, 100_000_000),
    "stats.bandwidth.download": (0, 100_000_000),
}
INTEGER_RANGES = {"stats.resolution.width": (0, 16_384), "stats.resolution.height": (0, 16_384)}

small_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
not_a_number = (
    st.text(max_size=16)
    | st.booleans()
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
)
raw_literals = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
huge_digits = st.integers(min_value=400, max_value=6000).map(lambda n: "9" * n)


def deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_text = st.builds(
    deep, st.integers(min_value=1, max_value=6000), st.sampled_from(["list", "dict"])
)


def bad_number(low: float, high: float, integer: bool) -> st.SearchStrategy[Any]:
    out_of_range = (
        st.floats(max_value=low, exclude_max=True, allow_infinity=False)
        | st.floats(min_value=high, exclude_min=True, allow_infinity=False)
        | st.integers(max_value=math.floor(low) - 1)
        | st.integers(min_value=math.ceil(high) + 1)
    )
    choices = not_a_number | out_of_range
    if integer:
        choices = choices | st.floats(min_value=low, max_value=high).filter(
            lambda x: not float(x).is_integer()
        )
    return choices


def valid_iso_in_window(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    now = datetime.now(UTC)
    return now - timedelta(days=RETENTION_DAYS) <= moment <= now + timedelta(minutes=5)


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _set(payload: dict, path: str, value: Any) -> dict:
    target = payload
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    return payload


@st.composite
def field_with_bad_value(draw) -> tuple[str, str, str | None]:
    """A good update with one field spoiled; (args text, expected code, expected field)."""
    ranges = {**{k: (*v, False) for k, v in NUMERIC_RANGES.items()}}
    ranges.update({k: (*v, True) for k, v in INTEGER_RANGES.items()})
    path = draw(st.sampled_from([*ranges, "streamId", "timestamp", "stats", "resolution"]))
    payload = guide_update(STREAM)
    raw = None
    field: str | None = path
    if path in ranges:
        low, high, integer = ranges[path]
        choice = draw(st.sampled_from(["value", "literal", "digits", "deep"]))
        if choice == "value":
            value = draw(bad_number(low, high, integer))
        else:
            raw = draw({"literal": raw_literals, "digits": huge_digits, "deep": deep_text}[choice])
            value = RAW
            if choice != "literal":
                # Past the parser's limits the payload cannot be read, so no field is named.
                field = None
    elif path == "streamId":
        value = draw((st.text(max_size=40) | small_json).filter(lambda v: not is_uuid(v)))
    elif path == "timestamp":
        future = st.floats(min_value=301, max_value=1e9).map(
            lambda s: (datetime.now(UTC) + timedelta(seconds=s)).isoformat()
        )
        past = st.floats(min_value=RETENTION_DAYS * 86400 + 60, max_value=1e10).map(
            lambda s: (datetime.now(UTC) - timedelta(seconds=s)).isoformat()
        )
        naive = st.datetimes().map(lambda d: d.isoformat())
        value = draw(
            (st.text(max_size=40) | future | past | naive | not_a_number).filter(
                lambda v: not valid_iso_in_window(v)
            )
        )
    elif path == "stats":
        value = draw(small_json.filter(lambda v: not isinstance(v, dict) or not v))
        field = "stats"
    else:
        path = draw(st.sampled_from(["stats.resolution", "stats.bandwidth"]))
        field = path
        value = draw(not_a_number.filter(lambda v: not isinstance(v, dict)))
    _set(payload, path, value)
    text = json.dumps(payload, allow_nan=True)
    if raw is not None:
        text = text.replace(json.dumps(RAW), raw)
    return "," + text, "invalid", field


@st.composite
def missing_parts(draw) -> tuple[str, str, str | None]:
    payload = guide_update(STREAM)
    what = draw(st.sampled_from(["streamId", "stats", "metrics", "all-null"]))
    if what in ("streamId", "stats"):
        del payload[what]
        field = what
    elif what == "metrics":
        payload["stats"] = draw(st.dictionaries(st.text(max_size=8), small_json, max_size=4))
        payload["stats"] = {k: v for k, v in payload["stats"].items() if k not in NAMES}
        field = "stats"
    else:
        payload["stats"] = {name: None for name in NAMES}
        field = "stats"
    return "," + json.dumps(payload), "invalid", field


NAMES = ("bitrate", "fps", "resolution", "audioLevel", "packetLoss", "latency", "bandwidth")


@st.composite
def not_an_update(draw) -> tuple[str, str, str | None]:
    """Anything but an object with a streamId and stats, including no or several arguments."""
    kind = draw(st.sampled_from(["json", "object", "none", "two", "deep"]))
    if kind == "json":
        value = draw(small_json.filter(lambda v: not isinstance(v, dict)))
        return "," + json.dumps(value, allow_nan=True), "invalid", None
    if kind == "object":
        value = draw(st.dictionaries(st.text(max_size=10), small_json, max_size=5))
        value.pop("stats", None)
        field = None if "streamId" in value and is_uuid(value["streamId"]) else "streamId"
        if field is None:
            value.pop("streamId")
            field = "streamId"
        return "," + json.dumps(value, allow_nan=True), "invalid", field
    if kind == "none":
        return "", "invalid", None
    if kind == "two":
        return "," + json.dumps(guide_update(STREAM)) + ",1", "invalid", None
    return "," + draw(deep_text), "invalid", None


@st.composite
def oversize(draw) -> tuple[str, str, str | None]:
    payload = guide_update(STREAM)
    size = draw(st.integers(min_value=LIMIT + 512, max_value=200_000))
    filler = draw(st.sampled_from(["x", "é", "[", "9"]))
    if filler == "[":
        return "," + deep(size // 2, "list"), "too_large", None
    if filler == "9":
        # Oversize and unreadable at once: the size decides.
        return "," + json.dumps(payload)[:-1] + ',"n":' + "9" * size + "}", "too_large", None
    payload["padding"] = filler * size
    return "," + json.dumps(payload, ensure_ascii=False), "too_large", None


cases = field_with_bad_value() | missing_parts() | not_an_update() | oversize()


def test_random_and_malicious_updates_are_refused_and_nothing_is_stored(start_server, database_url):
    server = start_server(env={"STREAMSTATS_RATE_LIMIT": "100000"})
    token = mint_token(JWT_SECRET, role="streamer", streams=[STREAM], sub="fuzz")
    loop = asyncio.new_event_loop()
    raw = loop.run_until_complete(RawSocketIO.open(server.url, token))
    seen: dict[str, int] = {}
    try:

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(cases)
        def throw(case: tuple[str, str, str | None]) -> None:
            args_text, code, field = case
            # Any case may come out larger than 16 KiB (the whole event array counts).
            if event_bytes(args_text) > LIMIT:
                code, field = "too_large", None
            answer = loop.run_until_complete(raw.call("stream:stats:update", args_text))
            assert answer["ok"] is False, (args_text[:300], answer)
            assert answer["error"]["code"] == code, (args_text[:300], answer)
            if field is not None:
                assert answer["error"].get("field") == field, (args_text[:300], answer)
            seen[code] = seen.get(code, 0) + 1

        started = time.monotonic()
        throw()
        elapsed = time.monotonic() - started
    finally:
        loop.run_until_complete(raw.close())
        loop.close()

    print(f"answers: {seen}, {elapsed:.1f}s")
    assert seen.get("invalid", 0) > 50 and seen.get("too_large", 0) > 5, seen
    assert elapsed < 30

    async def afterwards() -> tuple[int, dict, dict]:
        import asyncpg

        db = await asyncpg.connect(database_url)
        try:
            stored = await db.fetchval(
                "SELECT (SELECT count(*) FROM stream_stats) + (SELECT count(*) FROM stream_latest)"
            )
        finally:
            await db.close()
        async with Clients(server) as clients:
            streamer = await clients.connect("streamer", [STREAM])
            ack = await streamer.call("stream:stats:update", guide_update(STREAM))
            current = await streamer.call("stream:stats:get", {"streamId": STREAM})
        return stored, ack, current

    stored, ack, current = asyncio.run(afterwards())
    assert stored == 0
    assert ack["ok"] is True and ack["duplicate"] is False
    assert current["stats"]["bitrate"] == 2500
    assert server.proc is not None and server.proc.poll() is None
    # Every payload was handled, none crashed a handler.
    assert "Traceback" not in server.log()
