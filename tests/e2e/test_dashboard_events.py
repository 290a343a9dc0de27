"""The dashboard's events against a real server: history, the live list, digests, reports."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import socketio

from tests.e2e.clients import Clients, guide_update, now_iso


@pytest.fixture(autouse=True)
def client_json() -> Iterator[None]:
    """python-socketio keeps its JSON module on a class: an in-process server (a unit test's)
    leaves its 16 KiB event limit there, which would refuse this client the long answers."""
    kept = socketio.packet.Packet.json
    socketio.packet.Packet.json = json
    yield
    socketio.packet.Packet.json = kept


@pytest.fixture(scope="module")
def server(migrated_database, tmp_path_factory):
    """One server keeping raw rows for ten years (history over a year needs old rows)."""
    from tests.servers import ServerProcess

    server = ServerProcess(
        migrated_database,
        tmp_path_factory.mktemp("server"),
        env={"STREAMSTATS_RAW_RETENTION": "3650d"},
    ).start()
    yield server
    server.stop()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


# Rows every 20 s over the last 8 days, with a congested hour two days ago (SQL, not the code
# under test: generate_series and the writer's band rule written out).
SEED = """
INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, width, height, packet_loss_pct,
                          latency_ms, quality)
SELECT t, $1, 2000 + 500 * sin(extract(epoch FROM t) / 600), fps, 1280, 720, loss, 60,
       CASE WHEN loss > 3 OR fps < 20 THEN 'poor' WHEN loss >= 1 OR fps < 25 THEN 'fair'
            ELSE 'good' END
FROM generate_series($2::timestamptz - interval '8 days', $2::timestamptz, interval '20 seconds') t,
     LATERAL (SELECT CASE WHEN t BETWEEN $2::timestamptz - interval '49 hours'
                                     AND $2::timestamptz - interval '48 hours'
                          THEN 6.5 ELSE 0.2 END AS loss,
                     CASE WHEN extract(minute FROM t)::int % 7 = 0 THEN 22 ELSE 30 END AS fps) m
"""


@pytest.fixture
async def seeded(conn) -> tuple[str, datetime]:
    stream = str(uuid.uuid4())
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    await conn.execute(SEED, uuid.UUID(stream), now)
    return stream, now


def view_sql(view: str) -> str:
    return f"""
    SELECT * FROM {view}
    WHERE stream_id = $1 AND bucket + $4::text::interval > $2 AND bucket <= $3 ORDER BY bucket
    """


@pytest.mark.parametrize(
    ("span", "bucket", "view", "width"),
    [
        (timedelta(hours=24), "1m", "stream_stats_1m", "1 minute"),
        (timedelta(days=7), "1h", "stream_stats_1h", "1 hour"),
        (timedelta(days=365), "1d", "stream_stats_1d", "1 day"),
    ],
)
async def test_history_over_a_range_answers_the_rollup_view_rows(
    server, conn, seeded, span, bucket, view, width
):
    stream, now = seeded
    start = now - span
    async with Clients(server) as clients:
        monitor = await clients.connect("moderator")
        answer = await monitor.call(
            "stream:stats:history", {"streamId": stream, "from": iso(start), "to": iso(now)}
        )
    expected = await conn.fetch(view_sql(view), uuid.UUID(stream), start, now, width)
    assert answer["ok"] is True and answer["bucket"] == bucket
    assert answer["streamId"] == stream
    rows = answer["rows"]
    assert len(rows) == len(expected) > 0
    for got, want in zip(rows, expected, strict=True):
        assert parse(got["time"]) == want["bucket"]
        assert got["samples"] == want["samples"]
        assert got["bitrate"] == pytest.approx(want["bitrate_kbps_avg"])
        assert got["bitrateMin"] == pytest.approx(want["bitrate_kbps_min"])
        assert got["bitrateMax"] == pytest.approx(want["bitrate_kbps_max"])
        assert got["fps"] == pytest.approx(want["fps_avg"])
        assert got["fpsMin"] == pytest.approx(want["fps_min"])
        assert got["packetLoss"] == pytest.approx(want["packet_loss_pct_avg"])
        assert got["packetLossMax"] == pytest.approx(want["packet_loss_pct_max"])
        assert got["latencyP95"] == pytest.approx(want["latency_ms_p95"])
        counts = {"good": want["good_samples"], "fair": want["fair_samples"]}
        counts["poor"] = want["poor_samples"]
        assert {k: got[k] for k in counts} == counts
        # The band most samples had, ties to the worse one.
        top = max(counts.values())
        assert got["quality"] == next(b for b in ("poor", "fair", "good") if counts[b] == top)


async def test_history_of_a_short_range_is_the_raw_samples(server, conn, seeded):
    stream, now = seeded
    start = now - timedelta(minutes=15)
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [stream])
        answer = await streamer.call(
            "stream:stats:history", {"streamId": stream, "from": iso(start)}
        )
    expected = await conn.fetch(
        "SELECT * FROM stream_stats WHERE stream_id = $1 AND time >= $2 ORDER BY time",
        uuid.UUID(stream),
        start,
    )
    assert answer["bucket"] == "raw"
    assert [parse(r["time"]) for r in answer["rows"]] == [r["time"] for r in expected]
    assert [r["bitrate"] for r in answer["rows"]] == [r["bitrate_kbps"] for r in expected]
    assert [r["quality"] for r in answer["rows"]] == [r["quality"] for r in expected]
    assert answer["rows"][0]["resolution"] == {"width": 1280, "height": 720}


async def test_history_carries_the_alert_and_drop_episodes_of_the_range(server, conn):
    stream = uuid.uuid4()
    now = datetime.now(UTC)
    await conn.execute(
        "INSERT INTO stream_alerts (stream_id, type, value, threshold, raised_at, cleared_at)"
        " VALUES ($1, 'packet_loss_high', 7.5, 5, $2, $3), ($1, 'fps_low', 12, 20, $4, NULL)",
        stream,
        now - timedelta(minutes=30),
        now - timedelta(minutes=20),
        now - timedelta(hours=5),
    )
    await conn.execute(
        "INSERT INTO bitrate_drops (stream_id, started_at, ended_at, baseline_kbps,"
        " observed_kbps, drop_pct) VALUES ($1, $2, NULL, 3000, 900, 70)",
        stream,
        now - timedelta(minutes=10),
    )
    async with Clients(server) as clients:
        monitor = await clients.connect("analyst")
        answer = await monitor.call(
            "stream:stats:history",
            {"streamId": str(stream), "from": iso(now - timedelta(hours=1)), "to": iso(now)},
        )
    assert answer["rows"] == []
    assert [(a["type"], a["endedAt"] is None) for a in answer["alerts"]] == [
        ("fps_low", True),
        ("packet_loss_high", False),
    ]
    (drop,) = answer["drops"]
    assert (drop["baselineKbps"], drop["observedKbps"], drop["dropPct"]) == (3000, 900, 70)


async def test_history_carries_the_quality_advice_of_the_range(server, conn):
    stream = uuid.uuid4()
    now = datetime.now(UTC)
    for minutes, action, applied in ((90, "lower", None), (40, "lower", True), (5, "raise", None)):
        await conn.execute(
            "INSERT INTO stream_advice (stream_id, issued_at, action, target, reasons, severity,"
            ' basis, applied_at) VALUES ($1, $2, $3, \'{"bitrate": 1200, "height": 540}\','
            " $4, 'warning', '{\"window\": 15}', $5)",
            stream,
            now - timedelta(minutes=minutes),
            action,
            ["packet_loss"] if action == "lower" else ["recovered"],
            now - timedelta(minutes=minutes - 1) if applied else None,
        )
    async with Clients(server) as clients:
        monitor = await clients.connect("moderator")
        answer = await monitor.call(
            "stream:stats:history",
            {"streamId": str(stream), "from": iso(now - timedelta(hours=1)), "to": iso(now)},
        )
    assert [(a["action"], a["reasons"], a["appliedAt"] is None) for a in answer["advice"]] == [
        ("lower", ["packet_loss"], False),
        ("raise", ["recovered"], True),
    ]
    assert answer["advice"][0]["target"] == {"bitrate": 1200, "height": 540}
    assert answer["advice"][0]["streamId"] == str(stream)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-01-01T00:00:00"}, "from"),
        ({"from": 1700000000}, "from"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "1990-01-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "soon"}, "to"),
    ],
)
async def test_history_with_a_bad_range_is_invalid_naming_the_field(server, payload, field):
    stream = str(uuid.uuid4())
    async with Clients(server) as clients:
        monitor = await clients.connect("moderator")
        answer = await monitor.call("stream:stats:history", {"streamId": stream, **payload})
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid"
    assert answer["error"]["field"] == field


async def test_history_has_the_permissions_of_get(server):
    own, foreign = str(uuid.uuid4()), str(uuid.uuid4())
    ask = {"from": now_iso(-600)}
    async with Clients(server) as clients:
        viewer = await clients.connect("viewer", [own])
        streamer = await clients.connect("streamer", [own])
        scoped = await clients.connect("moderator", [own])
        answers = {
            "viewer": await viewer.call("stream:stats:history", {"streamId": own, **ask}),
            "streamer-own": await streamer.call("stream:stats:history", {"streamId": own, **ask}),
            "streamer-foreign": await streamer.call(
                "stream:stats:history", {"streamId": foreign, **ask}
            ),
            "scoped-foreign": await scoped.call(
                "stream:stats:history", {"streamId": foreign, **ask}
            ),
        }
    codes = {k: (v["ok"], v.get("error", {}).get("code")) for k, v in answers.items()}
    assert codes == {
        "viewer": (False, "forbidden"),
        "streamer-own": (True, None),
        "streamer-foreign": (False, "forbidden"),
        "scoped-foreign": (False, "forbidden"),
    }


async def test_list_has_every_live_stream_with_its_latest_row_alerts_and_sparkline(server, conn):
    streams = [str(uuid.uuid4()) for _ in range(3)]
    old = str(uuid.uuid4())
    async with Clients(server) as clients:
        for i, stream in enumerate(streams):
            streamer = await clients.connect("streamer", [stream])
            for k in range(4):
                sent = guide_update(stream, now_iso(-60 + 15 * k), bitrate=1000 * (i + 1) + k)
                assert (await streamer.call("stream:stats:update", sent))["ok"]
        streamer = await clients.connect("streamer", [old])
        assert (await streamer.call("stream:stats:update", guide_update(old, now_iso(-900))))["ok"]
        await conn.execute(
            "INSERT INTO stream_alerts (stream_id, type, value, threshold, raised_at)"
            " VALUES ($1, 'packet_loss_high', 9, 5, now() - interval '1 minute')",
            uuid.UUID(streams[1]),
        )
        viewer = await clients.connect("viewer", [streams[2]])
        await viewer.call("stream:join", {"streamId": streams[2]})
        monitor = await clients.connect("moderator")
        scoped = await clients.connect("moderator", [streams[0], old])
        answer = await monitor.call("stream:stats:list", {})
        narrow = await scoped.call("stream:stats:list")
        refused = await viewer.call("stream:stats:list")
    mine = {s["streamId"]: s for s in answer["streams"] if s["streamId"] in [*streams, old]}
    assert set(mine) == set(streams), "a stream silent for 15 minutes is not live"
    for i, stream in enumerate(streams):
        item = mine[stream]
        assert item["stats"]["bitrate"] == 1000 * (i + 1) + 3
        assert item["quality"] == "good"
        assert parse(item["lastUpdated"]) > datetime.now(UTC) - timedelta(seconds=30)
        assert sum(item["sparkline"]["bitrate"]) > 0 and len(item["sparkline"]["times"]) >= 2
    assert mine[streams[2]]["viewerCount"] == 1
    assert [a["type"] for a in mine[streams[1]]["alerts"]] == ["packet_loss_high"]
    feed = [f for f in answer["feed"] if f["streamId"] == streams[1]]
    assert [(f["type"], f["state"]) for f in feed] == [("packet_loss_high", "raised")]
    assert [s["streamId"] for s in narrow["streams"]] == [streams[0]]
    assert refused["error"]["code"] == "forbidden"


class DigestRecorder:
    def __init__(self) -> None:
        self.digests: list[tuple[float, dict[str, Any]]] = []

    def __call__(self, data: dict[str, Any]) -> None:
        self.digests.append((time.monotonic(), data))

    def rows(self, streams: set[str]) -> list[tuple[str, str]]:
        return [
            (item["streamId"], item["lastUpdated"])
            for _, digest in self.digests
            for item in digest["streams"]
            if item["streamId"] in streams
        ]


async def test_digest_comes_once_per_interval_with_each_new_row_once(server):
    streams = [str(uuid.uuid4()) for _ in range(3)]
    async with Clients(server) as clients:
        monitor = await clients.connect("moderator")
        scoped = await clients.connect("moderator", [streams[0]])
        recorders = {"all": DigestRecorder(), "scoped": DigestRecorder()}
        monitor.sio.on("stream:stats:digest", recorders["all"])
        scoped.sio.on("stream:stats:digest", recorders["scoped"])
        assert (await monitor.call("stream:stats:digest:subscribe", {"interval": 500}))[
            "interval"
        ] == 500
        await scoped.call("stream:stats:digest:subscribe", {"interval": 250})
        started = time.monotonic()
        sent: list[tuple[str, str]] = []
        streamers = [await clients.connect("streamer", [s]) for s in streams]
        for k in range(6):
            for stream, streamer in zip(streams, streamers, strict=True):
                update = guide_update(stream, now_iso(-10 + k), bitrate=900 + k)
                assert (await streamer.call("stream:stats:update", update))["ok"]
                sent.append((stream, update["timestamp"]))
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.8)
        elapsed = time.monotonic() - started
        await monitor.call("stream:stats:digest:unsubscribe")
        stopped = len(recorders["all"].digests)
        await asyncio.sleep(1.2)
    every = recorders["all"]
    # Each row in one digest only; a row superseded before its digest went out is not resent,
    # but the newest row of each stream always arrives.
    got = every.rows(set(streams))
    assert len(got) == len(set(got))
    assert set(got) <= set(sent)
    assert {s: max(t for x, t in sent if x == s) for s in streams} == {
        s: max(t for x, t in got if x == s) for s in streams
    }
    assert elapsed / 0.5 - 2 <= stopped <= elapsed / 0.5 + 1
    assert len(every.digests) == stopped, "no digest after unsubscribe"
    gaps = [b - a for (a, _), (b, _) in zip(every.digests, every.digests[1:], strict=False)]
    assert all(0.3 < gap < 0.8 for gap in gaps), gaps
    # A scoped monitor sees only its stream, twice as often (and 1.2 s longer).
    narrow = recorders["scoped"]
    assert {s for s, _ in narrow.rows(set(streams))} == {streams[0]}
    assert len(narrow.digests) >= 2 * stopped


async def test_digest_follows_viewer_counts_without_a_new_row(server):
    stream = str(uuid.uuid4())
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [stream])
        monitor = await clients.connect("moderator")
        recorder = DigestRecorder()
        monitor.sio.on("stream:stats:digest", recorder)
        await monitor.call("stream:stats:digest:subscribe", {"interval": 250})
        assert (await streamer.call("stream:stats:update", guide_update(stream)))["ok"]
        viewers = [await clients.connect("viewer", [stream]) for _ in range(2)]

        async def count_becomes(n: int) -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                counts = [
                    item["viewerCount"]
                    for _, d in recorder.digests
                    for item in d["streams"]
                    if item["streamId"] == stream
                ]
                if counts and counts[-1] == n:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"viewerCount did not become {n}: {counts}")

        await count_becomes(0)
        for viewer in viewers:
            await viewer.call("stream:join", {"streamId": stream})
        await count_becomes(2)
        await viewers[0].call("stream:leave", {"streamId": stream})
        await count_becomes(1)


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"interval": 100}, "interval"), ({"interval": "fast"}, "interval"), ([1], None)],
)
async def test_digest_subscribe_refuses_a_bad_interval(server, payload, field):
    async with Clients(server) as clients:
        monitor = await clients.connect("moderator")
        answer = await monitor.call("stream:stats:digest:subscribe", payload)
    assert answer["error"]["code"] == "invalid"
    assert answer["error"].get("field") == field


async def test_digest_is_for_monitors_only(server):
    stream = str(uuid.uuid4())
    async with Clients(server) as clients:
        answers = []
        for role in ("viewer", "streamer"):
            client = await clients.connect(role, [stream])
            answers.append(await client.call("stream:stats:digest:subscribe", {}))
    assert [a["error"]["code"] for a in answers] == ["forbidden", "forbidden"]


@pytest.mark.redis
@pytest.mark.slow
async def test_two_nodes_deliver_each_digest_once_with_rows_committed_on_either(start_server):
    import redis

    url = "redis://127.0.0.1:6379/8"
    env = {"REDIS_URL": url}
    a, b = start_server(env=env), start_server(env=env)
    streams = {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())}
    recorders = {"a": DigestRecorder(), "b": DigestRecorder()}
    async with Clients(a) as on_a, Clients(b) as on_b:
        monitors = {"a": await on_a.connect("moderator"), "b": await on_b.connect("moderator")}
        for name, monitor in monitors.items():
            monitor.sio.on("stream:stats:digest", recorders[name])
            await monitor.call("stream:stats:digest:subscribe", {"interval": 500})
        streamers = {
            "a": await on_a.connect("streamer", [streams["a"]]),
            "b": await on_b.connect("streamer", [streams["b"]]),
        }
        started = time.monotonic()
        sent = []
        for k in range(5):
            for node in ("a", "b"):
                update = guide_update(streams[node], now_iso(-10 + k))
                assert (await streamers[node].call("stream:stats:update", update))["ok"]
                sent.append((streams[node], update["timestamp"]))
            await asyncio.sleep(0.6)
        await asyncio.sleep(0.8)
        elapsed = time.monotonic() - started
        for monitor in monitors.values():
            await monitor.call("stream:stats:digest:unsubscribe")
    redis.Redis.from_url(url).close()
    for name, recorder in recorders.items():
        got = recorder.rows(set(streams.values()))
        # A digest carries each changed stream's latest row: rows sent 0.6 s apart are each seen
        # when their commits stay apart, but a loaded machine may commit two of a stream within
        # one interval, and a row comes again when only its viewer count changed. So: only rows
        # that were sent, and both streams' last rows, whichever node committed them.
        assert set(got) <= set(sent), name
        for stream in streams.values():
            assert max(t for s, t in sent if s == stream) in {t for s, t in got if s == stream}
        assert len(got) >= len(sent) // 2, name
        assert elapsed / 0.5 - 2 <= len(recorder.digests) <= elapsed / 0.5 + 1, name


async def test_the_guides_overview_example_merges_the_list_and_digests(server):
    import shutil

    from ingest.auth import mint_token
    from tests.e2e.clients import GUIDE_STREAM
    from tests.e2e.test_js_client import JS, NodeScript
    from tests.servers import JWT_SECRET

    node = shutil.which("node")
    assert node is not None and (JS / "node_modules" / "socket.io-client").is_dir()
    stream = str(uuid.uuid4())
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [stream])
        guide = await clients.connect("streamer", [GUIDE_STREAM])
        first = guide_update(stream, now_iso(-2), bitrate=1111)
        assert (await streamer.call("stream:stats:update", first))["ok"]
        assert (await guide.call("stream:stats:update", guide_update(timestamp=now_iso(-1))))["ok"]
        script = await NodeScript.start(
            node,
            "guide-overview.js",
            server,
            TOKEN=mint_token(JWT_SECRET, role="moderator", sub="guide"),
            STREAM_ID=stream,
        )
        # The example's own list (or a digest) brought the first row before the next is sent.
        seen = 1
        while stream not in (await script.until("state", seen))[-1]:
            seen += 1
        later = guide_update(stream, now_iso(), bitrate=2222)
        assert (await streamer.call("stream:stats:update", later))["ok"]
        assert await script.finish() == 0, "".join(script.output)
    states = script.of("state")
    first = next(state[stream] for state in states if stream in state)
    assert first["stats"]["bitrate"] == 1111, "the first row first"
    assert states[-1][stream]["stats"]["bitrate"] == 2222, "then the digest's"
    assert states[-1][stream]["lastUpdated"] == later["timestamp"]
    (logged,) = script.of("console")
    assert logged[0] == "raw" and logged[1] >= 1 and logged[2] == "points"


async def test_a_digest_subscriber_gets_per_sample_broadcasts_only_of_streams_it_asks_for(server):
    watched, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with Clients(server) as clients:
        dashboard = await clients.connect("moderator")
        plain = await clients.connect("moderator")
        await dashboard.call("stream:stats:digest:subscribe", {"interval": 250})
        await dashboard.call("stream:stats:subscribe", {"streamId": watched})
        streamers = {s: await clients.connect("streamer", [s]) for s in (watched, other)}

        async def send(stream: str, **stats: Any) -> None:
            update = guide_update(stream, now_iso(), **stats)
            assert (await streamers[stream].call("stream:stats:update", update))["ok"]

        for k in range(2):
            await send(watched)
            await send(other, packetLoss=9.0, bitrate=1000 + k)
        await plain.wait_for("stream:stats:update", 4)
        await dashboard.wait_for("stream:alert", 1)
        await asyncio.sleep(0.6)
        before = [u["streamId"] for u in dashboard.received["stream:stats:update"]]
        await dashboard.call("stream:stats:digest:unsubscribe")
        await send(other)
        await dashboard.wait_for("stream:stats:update", 3)
    assert before == [watched, watched], "no per-sample broadcast of a stream not asked for"
    alerts = dashboard.received["stream:alert"]
    assert [(a["streamId"], a["type"]) for a in alerts] == [(other, "packet_loss_high")]
    after = [u["streamId"] for u in dashboard.received["stream:stats:update"]]
    assert after[2:] == [other], "without digests, every stream's broadcasts again"
