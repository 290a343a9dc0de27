"""Who may connect and what each role may do, against a real server (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request
import uuid

import jwt
import pytest

from ingest.auth import mint_token
from tests.e2e.clients import Clients, guide_update, shared_server
from tests.servers import JWT_SECRET

STREAM = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides) -> dict:
    claims = {"sub": "s1", "role": "streamer", "streams": [STREAM], "exp": int(time.time()) + 600}
    claims.update(overrides)
    return claims


BAD_AUTH = {
    "no auth": None,
    "no token": {},
    "token not a string": {"token": 12345},
    "garbage": {"token": "garbage"},
    "expired": {"token": jwt.encode(_claims(exp=int(time.time()) - 60), JWT_SECRET, "HS256")},
    "alg none": {"token": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."},
    "wrong secret": {"token": jwt.encode(_claims(), "not-the-secret-" + "q" * 32, "HS256")},
    "unknown role": {"token": jwt.encode(_claims(role="root"), JWT_SECRET, "HS256")},
    "streamer without streams": {"token": jwt.encode(_claims(streams=None), JWT_SECRET, "HS256")},
}


@pytest.fixture(scope="module")
def server(migrated_database, tmp_path_factory):
    """One server for the tests here that need no settings of their own."""
    yield from shared_server(migrated_database, tmp_path_factory.mktemp("server"))


async def test_bad_tokens_are_refused_with_unauthorized(server):
    async with Clients(server) as clients:
        for name, auth in BAD_AUTH.items():
            error = await clients.refused(auth)
            assert error["data"]["code"] == "unauthorized", name
            assert error["data"]["message"], name


async def test_streamer_may_not_touch_another_stream(server, conn):
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [STREAM])
        update = await streamer.call("stream:stats:update", guide_update(OTHER))
        get = await streamer.call("stream:stats:get", {"streamId": OTHER})
        # Without a callback the refusal is an `error` event naming the event and stream.
        await streamer.emit("stream:stats:update", guide_update(OTHER))
        (error,) = await streamer.wait_for("error")
        count = await conn.fetchval("SELECT count(*) FROM stream_stats")
    assert update == {
        "ok": False,
        "error": {"code": "forbidden", "message": update["error"]["message"]},
    }
    assert get["error"]["code"] == "forbidden"
    assert error["code"] == "forbidden"
    assert (error["event"], error["streamId"]) == ("stream:stats:update", OTHER)
    assert count == 0


async def test_a_refusal_for_a_foreign_stream_comes_before_validation(server):
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [STREAM])
        answer = await streamer.call("stream:stats:update", {"streamId": OTHER, "stats": "x"})
    assert answer["error"]["code"] == "forbidden"


async def test_viewer_may_neither_update_nor_get(server, conn):
    async with Clients(server) as clients:
        viewer = await clients.connect("viewer", [STREAM])
        update = await viewer.call("stream:stats:update", guide_update(STREAM))
        get = await viewer.call("stream:stats:get", {"streamId": STREAM})
        subscribe = await viewer.call("stream:stats:subscribe", {"streamId": STREAM})
        count = await conn.fetchval("SELECT count(*) FROM stream_stats")
    assert [a["error"]["code"] for a in (update, get, subscribe)] == ["forbidden"] * 3
    assert count == 0


async def test_monitors_may_not_update_and_only_viewers_join(server):
    async with Clients(server) as clients:
        moderator = await clients.connect("moderator")
        analyst = await clients.connect("analyst", [STREAM])
        streamer = await clients.connect("streamer", [STREAM])
        answers = [
            await moderator.call("stream:stats:update", guide_update(STREAM)),
            await analyst.call("stream:stats:update", guide_update(STREAM)),
            await analyst.call("stream:stats:get", {"streamId": OTHER}),
            await analyst.call("stream:stats:subscribe", {"streamId": OTHER}),
            await moderator.call("stream:join", {"streamId": STREAM}),
            await streamer.call("stream:join", {"streamId": STREAM}),
        ]
    assert [a["error"]["code"] for a in answers] == ["forbidden"] * len(answers)


async def test_admin_may_update_any_stream(server):
    async with Clients(server) as clients:
        admin = await clients.connect("admin")
        answer = await admin.call("stream:stats:update", guide_update(OTHER))
    assert answer["ok"] is True


async def test_viewers_never_receive_monitor_traffic(server):
    async with Clients(server) as clients:
        viewer = await clients.connect("viewer", [STREAM])
        await viewer.call("stream:join", {"streamId": STREAM})
        monitor = await clients.connect("moderator")
        streamer = await clients.connect("streamer", [STREAM])
        for i in range(3):
            await streamer.call("stream:stats:update", guide_update(STREAM, fps=10 + i))
        await monitor.wait_for("stream:stats:update", 3)
        await asyncio.sleep(0.3)
    assert dict(viewer.received) == {}


def test_cross_origin_requests_are_refused_unless_allowed(start_server):
    server = start_server(env={"STREAMSTATS_CORS_ORIGINS": "https://dashboard.example"})

    def handshake(origin: str) -> int:
        request = urllib.request.Request(
            server.url + "/socket.io/?EIO=4&transport=polling", headers={"Origin": origin}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert handshake("https://dashboard.example") == 200
    assert handshake("https://evil.example") == 400


async def test_minted_tokens_are_accepted_for_every_role(server):
    async with Clients(server) as clients:
        for role in ("streamer", "viewer", "moderator", "analyst", "admin"):
            token = mint_token(JWT_SECRET, role=role, streams=[STREAM], sub=role)
            client = await clients.connect(role, token=token)
            assert client.sio.connected


async def test_an_expired_token_stops_writing_and_is_disconnected(server, conn):
    async with Clients(server) as clients:
        token = mint_token(JWT_SECRET, role="streamer", streams=[STREAM], ttl=2)
        expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
        streamer = await clients.connect("streamer", token=token)
        before = await streamer.call("stream:stats:update", guide_update(STREAM))
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.2)
        after = await streamer.call("stream:stats:update", guide_update(STREAM, fps=1))
        for _ in range(50):  # the server drops the connection right after answering
            if not streamer.sio.connected:
                break
            await asyncio.sleep(0.1)
        connected = streamer.sio.connected
        count = await conn.fetchval("SELECT count(*) FROM stream_stats")
    assert before["ok"] is True
    assert after["ok"] is False and after["error"]["code"] == "unauthorized"
    assert "expired" in after["error"]["message"]
    assert connected is False
    assert count == 1


async def test_a_token_issued_a_little_ahead_of_the_server_clock_is_accepted(server):
    token = jwt.encode(_claims(iat=int(time.time()) + 10), JWT_SECRET, "HS256")
    async with Clients(server) as clients:
        client = await clients.connect("streamer", token=token)
        assert client.sio.connected
        error = await clients.refused(
            {"token": jwt.encode(_claims(iat=int(time.time()) + 600), JWT_SECRET, "HS256")}
        )
    assert error["data"]["code"] == "unauthorized" and "ahead" in error["data"]["message"]


async def test_a_huge_token_gets_a_connect_error(server):
    # ~800 KB: below the transport's 1,000,000-byte message limit, the connect packet arrives.
    token = jwt.encode(_claims(pad="x" * 600_000), JWT_SECRET, "HS256")
    async with Clients(server) as clients:
        error = await clients.refused({"token": token})
    assert error["data"]["code"] == "unauthorized"
    assert "at most 8192" in error["data"]["message"]


async def test_stream_ids_must_be_spelled_canonically(server):
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [STREAM])
        braces = await streamer.call("stream:stats:update", guide_update("{" + STREAM + "}"))
        upper = await streamer.call("stream:stats:update", guide_update(STREAM.upper()))
    assert braces["error"]["code"] == "invalid" and braces["error"]["field"] == "streamId"
    assert upper["ok"] is True and upper["streamId"] == STREAM
