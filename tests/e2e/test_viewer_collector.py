"""The client guide's viewer collector in headless Chromium, playing a real video, against a server.

The video is made with ffmpeg at test time and served by a small local HTTP server that holds
the second half of the file back for a few seconds, so the player really runs dry and stalls.
The page is what an integrating page does (tests/js/viewer-page.html): the official
socket.io-client bundle, `collectViewerStats(video, …)`, and a player-reported down-switch.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ingest.auth import mint_token
from tests.servers import JWT_SECRET, free_port

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
COLLECTOR = ROOT / "clients" / "js" / "viewer-collector.js"
VENDOR = ROOT / "streamstats" / "static" / "vendor"
VIDEO_SECONDS = 6
# The player gets this share of the file at once, the rest after HOLD_SECONDS.
FIRST_SHARE = 0.5
HOLD_SECONDS = 5.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "needs ffmpeg (scripts/setup.sh installs it)"
    path = tmp_path_factory.mktemp("video") / "video.webm"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=320x240:rate=25:duration={VIDEO_SECONDS}",
            "-c:v",
            "libvpx",
            "-b:v",
            "400k",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-cues_to_front",
            "1",
            "-f",
            "webm",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


async def serve_page(video: Path) -> tuple[web.AppRunner, str]:
    """The page, the collector, the socket.io bundle and the video (held back halfway)."""
    data = await asyncio.to_thread(video.read_bytes)
    first = int(len(data) * FIRST_SHARE)

    async def movie(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/webm"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[:first])
        await asyncio.sleep(HOLD_SECONDS)
        await response.write(data[first:])
        await response.write_eof()
        return response

    def file(path: Path, kind: str):
        body = path.read_bytes()

        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=body, content_type=kind)

        return handler

    app = web.Application()
    app.router.add_get("/", file(JS / "viewer-page.html", "text/html"))
    app.router.add_get("/viewer-collector.js", file(COLLECTOR, "application/javascript"))
    app.router.add_get(
        "/socket.io.min.js", file(VENDOR / "socket.io.min.js", "application/javascript")
    )
    app.router.add_get("/video.webm", movie)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/"


async def run_page(url: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node and (JS / "node_modules" / "playwright-core").is_dir(), "needs `npm ci` in tests/js"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS / "viewer-page.js"),
        cwd=JS,
        env={**os.environ, "PAGE_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    seen: dict[str, Any] = {}
    for line in out.decode().splitlines():
        if line.startswith("@@"):
            item = json.loads(line[2:])
            seen.setdefault(item["event"], []).append(item["data"])
    assert proc.returncode == 0 and "beacons" in seen, out.decode()
    return seen


async def test_the_collector_reports_a_real_playback_with_its_stall_and_switch(
    start_server, video, conn
):
    server = start_server()
    stream = str(uuid.uuid4())
    token = mint_token(JWT_SECRET, role="viewer", streams=[stream], sub="browser-viewer")
    runner, page = await serve_page(video)
    try:
        seen = await run_page(
            f"{page}#server={server.url}&token={token}&stream={stream}&interval=1000"
        )
    finally:
        await runner.cleanup()
    sent = seen["beacons"][0]
    beacons = [item["beacon"] for item in sent]
    acks = [item["ack"] for item in sent]
    assert all(ack["ok"] and ack["duplicate"] is False for ack in acks), acks

    assert len({b["viewId"] for b in beacons}) == 1
    last = beacons[-1]
    assert last["state"] == "ended"
    # Started within a few seconds, watched the whole clip, stalled while the file was held back.
    assert 0 < last["startupTime"] < 5_000
    assert VIDEO_SECONDS * 1000 * 0.8 <= last["watchTime"] <= VIDEO_SECONDS * 1000 * 1.25
    assert last["stalls"]["count"] >= 1
    assert 500 <= last["stalls"]["duration"] <= (HOLD_SECONDS + 1) * 1000
    assert "stalled" in {b["state"] for b in beacons}
    # The player's reported switch from 400 to 250 kbps, and the decoded size of the clip.
    assert last["renditionChanges"] == {"up": 0, "down": 1}
    assert last["bitrate"] == 250
    assert last["resolution"] == {"width": 320, "height": 240}
    for before, after in itertools.pairwise(beacons):
        assert after["timestamp"] > before["timestamp"]
        assert after["watchTime"] >= before["watchTime"]
        assert after["stalls"]["duration"] >= before["stalls"]["duration"]

    # What the server stored is exactly what was acknowledged.
    rows = await conn.fetch(
        "SELECT * FROM viewer_stats WHERE stream_id = $1 ORDER BY time", uuid.UUID(stream)
    )
    assert [r["state"] for r in rows] == [b["state"] for b in beacons]
    assert [r["watch_ms"] for r in rows] == [b["watchTime"] for b in beacons]
    view = await conn.fetchrow("SELECT * FROM viewer_views WHERE stream_id = $1", uuid.UUID(stream))
    assert view["ended_at"] is not None and not view["exited_before_start"] and not view["failed"]
    assert view["stall_count"] == last["stalls"]["count"]
