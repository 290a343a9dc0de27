"""`stream:viewer:stats` against a real server: stored, acknowledged after commit, refused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.clients import NO_VIEWER_EXPERIENCE, Clients, now_iso, shared_server


@pytest.fixture(scope="module")
def server(migrated_database, tmp_path_factory):
    """One server for the tests here that need no settings of their own."""
    yield from shared_server(migrated_database, tmp_path_factory.mktemp("server"))


def beacon(stream: str, view: str, offset_s: float, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "streamId": stream,
        "viewId": view,
        "timestamp": now_iso(offset_s),
        "state": "playing",
        "startupTime": 1200,
        "watchTime": 0,
        "stalls": {"count": 0, "duration": 0},
        "renditionChanges": {"up": 0, "down": 0},
        "bitrate": 2500,
        "resolution": {"width": 1280, "height": 720},
    }
    body.update(fields)
    return body


async def beacons_of(conn, view: str) -> list:
    return await conn.fetch(
        "SELECT * FROM viewer_stats WHERE view_id = $1 ORDER BY time", uuid.UUID(view)
    )


async def test_beacons_are_stored_acknowledged_and_resends_are_duplicates(server, conn):
    stream, view = str(uuid.uuid4()), str(uuid.uuid4())
    first = beacon(stream, view, -20, state="starting", startupTime=None)
    second = beacon(stream, view, -10, watchTime=8_500, stalls={"count": 1, "duration": 300})
    async with Clients(server) as clients:
        viewer = await clients.connect("viewer", [stream])
        ack = await viewer.call("stream:viewer:stats", first)
        assert ack == {
            "ok": True,
            "streamId": stream,
            "viewId": view,
            "timestamp": first["timestamp"],
            "duplicate": False,
        }
        assert (await viewer.call("stream:viewer:stats", second))["duplicate"] is False
        assert (await viewer.call("stream:viewer:stats", second))["duplicate"] is True
        # Without a callback the answer is an event.
        await viewer.emit("stream:viewer:stats", second)
        (received,) = await viewer.wait_for("stream:viewer:received")
    assert received == {
        "streamId": stream,
        "viewId": view,
        "timestamp": second["timestamp"],
        "duplicate": True,
    }
    rows = await beacons_of(conn, view)
    assert [(r["state"], r["watch_ms"], r["stall_count"]) for r in rows] == [
        ("starting", 0, 0),
        ("playing", 8_500, 1),
    ]
    summary = await conn.fetchrow("SELECT * FROM viewer_views WHERE view_id = $1", uuid.UUID(view))
    assert (summary["startup_ms"], summary["watch_time_ms"], summary["ended_at"]) == (
        1200,
        8500,
        None,
    )


async def test_get_answers_the_viewer_experience_of_the_last_five_minutes(server):
    stream = str(uuid.uuid4())
    smooth, stalling, failed = (str(uuid.uuid4()) for _ in range(3))
    async with Clients(server) as clients:
        viewers = [await clients.connect("viewer", [stream]) for _ in range(3)]
        sent = [
            (viewers[0], beacon(stream, smooth, -30, startupTime=1000, watchTime=0)),
            (viewers[0], beacon(stream, smooth, -20, startupTime=1000, watchTime=10_000)),
            (viewers[1], beacon(stream, stalling, -30, startupTime=3000, watchTime=0)),
            (
                viewers[1],
                beacon(
                    stream,
                    stalling,
                    -20,
                    startupTime=3000,
                    watchTime=8_000,
                    stalls={"count": 2, "duration": 2_000},
                    renditionChanges={"up": 0, "down": 2},
                ),
            ),
            (
                viewers[2],
                beacon(
                    stream,
                    failed,
                    -25,
                    state="failed",
                    startupTime=None,
                    error={"code": "MEDIA_ERR_NETWORK", "message": "lost"},
                ),
            ),
            # Stamped before the window: not counted.
            (viewers[2], beacon(stream, str(uuid.uuid4()), -400, watchTime=9_000)),
        ]
        for viewer, body in sent:
            assert (await viewer.call("stream:viewer:stats", body))["ok"], body
        monitor = await clients.connect("moderator")
        current = await monitor.call("stream:stats:get", {"streamId": stream})
        silent = await monitor.call("stream:stats:get", {"streamId": str(uuid.uuid4())})
    experience = current["viewerExperience"]
    assert experience["views"] == 3
    assert experience["rebufferPct"] == pytest.approx(100 * 2_000 / 20_000)
    assert (experience["startupP50Ms"], experience["startupP95Ms"]) == (2000, pytest.approx(2900))
    assert experience["switchesPerView"] == pytest.approx(2 / 3)
    assert experience["failurePct"] == pytest.approx(100 / 3)
    assert 0 < experience["score"] < 100
    assert current["stats"] is None and current["viewerCount"] == 0  # the seed's fields as ever
    assert silent["viewerExperience"] == NO_VIEWER_EXPERIENCE


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"watchTime": 4_000}, "watchTime"),  # backwards
        ({"stalls": {"count": 0, "duration": 0}}, "stalls.count"),
        ({"renditionChanges": {"up": 0, "down": 0}}, "renditionChanges.down"),
        ({"watchTime": 70_000}, "watchTime"),  # 65 s watched in 10 s
        ({"startupTime": 99}, "startupTime"),
        ({"watchTime": -1}, "watchTime"),
        ({"state": "buffering"}, "state"),
        ({"viewId": "view-1"}, "viewId"),
    ],
)
async def test_bad_beacons_are_refused_naming_the_field_and_nothing_is_stored(
    server, conn, second, field
):
    stream, view = str(uuid.uuid4()), str(uuid.uuid4())
    first = beacon(
        stream,
        view,
        -20,
        watchTime=5_000,
        stalls={"count": 1, "duration": 100},
        renditionChanges={"up": 0, "down": 1},
    )
    async with Clients(server) as clients:
        viewer = await clients.connect("viewer", [stream])
        assert (await viewer.call("stream:viewer:stats", first))["ok"]
        bad = {**first, "timestamp": now_iso(-10), **second}
        answer = await viewer.call("stream:viewer:stats", bad)
        await viewer.emit("stream:viewer:stats", bad)
        (event,) = await viewer.wait_for("error")
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid"
    assert answer["error"]["field"] == field, answer
    assert (event["code"], event["field"], event["event"]) == (
        "invalid",
        field,
        "stream:viewer:stats",
    )
    assert len(await beacons_of(conn, view)) == 1


async def test_only_viewers_send_beacons_and_only_for_their_own_streams(server, conn):
    stream, other, view = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    async with Clients(server) as clients:
        viewer = await clients.connect("viewer", [stream])
        streamer = await clients.connect("streamer", [stream])
        admin = await clients.connect("admin")
        foreign = await viewer.call("stream:viewer:stats", beacon(other, view, -5))
        by_streamer = await streamer.call("stream:viewer:stats", beacon(stream, view, -4))
        by_admin = await admin.call("stream:viewer:stats", beacon(stream, view, -3))
    for answer in (foreign, by_streamer, by_admin):
        assert answer["ok"] is False and answer["error"]["code"] == "forbidden", answer
    assert other in foreign["error"]["message"]
    assert await beacons_of(conn, view) == []


async def test_an_oversize_beacon_is_too_large(server, conn):
    stream, view = str(uuid.uuid4()), str(uuid.uuid4())
    async with Clients(server) as clients:
        viewer = await clients.connect("viewer", [stream])
        body = beacon(stream, view, -5, error={"code": "X", "message": "m"}, padding="x" * 20_000)
        answer = await viewer.call("stream:viewer:stats", body)
    assert answer["error"]["code"] == "too_large"
    assert await beacons_of(conn, view) == []
