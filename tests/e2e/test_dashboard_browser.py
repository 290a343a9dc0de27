"""The live dashboard in a real browser (headless Chromium driven by Playwright) on a real server.

Screenshots are kept in `test-artifacts/dashboard/` at the top of the checkout (or in
`$STREAMSTATS_TEST_ARTIFACTS/dashboard/`), overwritten by each run.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from ingest.auth import mint_token
from tests.e2e.clients import Clients, guide_update, now_iso
from tests.e2e.test_js_client import JS, NodeScript
from tests.servers import JWT_SECRET

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# A change committed on the server shows on the overview within this long.
SHOWS_WITHIN_MS = 2000


def artifacts() -> Path:
    base = Path(os.environ.get("STREAMSTATS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder = base / "dashboard"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> str:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "playwright-core").is_dir():
        pytest.fail("the browser tests need Node.js and `npm ci` in tests/js (scripts/setup.sh)")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("the browser tests need Debian's chromium (scripts/setup.sh installs it)")
    return node


def token(role: str, streams: list[str] | None = None) -> str:
    return mint_token(JWT_SECRET, role=role, streams=streams, sub=f"browser-{role}")


async def test_dashboard_shows_health_alerts_history_and_viewers_live(browser, start_server, conn):
    server = start_server()
    stream, other = str(uuid.uuid4()), str(uuid.uuid4())
    # History written before the page opens: one sample every 10 s for the last 4 minutes.
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [stream])
        for k in range(24):
            update = guide_update(stream, now_iso(-250 + 10 * k), bitrate=2400 + 10 * k)
            assert (await streamer.call("stream:stats:update", update))["ok"]
    seeded = await conn.fetchval(
        "SELECT count(*) FROM stream_stats WHERE stream_id = $1", uuid.UUID(stream)
    )
    shots = artifacts()
    tokens = {
        "moderator": token("moderator"),
        "streamer": token("streamer", [stream]),
        "other": token("streamer", [other]),
        "viewer": token("viewer", [stream]),
    }
    script = await NodeScript.start(
        browser,
        "dashboard-browser.js",
        server,
        STREAM_ID=stream,
        OTHER_STREAM_ID=other,
        TOKENS=json.dumps(tokens),
        JWT_SECRET=JWT_SECRET,
        SHOTS_DIR=str(shots),
    )
    code = await script.finish(timeout=150)
    output = "".join(script.output)
    # What the run saw (latencies included), next to its screenshots.
    kept = [item for item in script.seen if item["event"] != "requests"]
    (shots / "observations.json").write_text(json.dumps(kept, indent=1))
    assert code == 0, output
    assert script.of("page-errors") == [[]], output

    # Signed in from the fragment, which then left the address bar; no request carried it.
    (address,) = script.of("address")
    assert address == f"{server.url}/dashboard/"
    for secret in tokens.values():
        assert not any(secret in url for url in script.of("requests")[0])
        assert secret not in server.log()

    (congested,) = script.of("congested")
    assert congested["poorMs"] <= SHOWS_WITHIN_MS, congested
    assert congested["raisedMs"] <= SHOWS_WITHIN_MS, congested
    assert congested["tile"]["quality"].endswith("Poor")
    assert congested["tile"]["first"] == stream, "the poor stream with open alerts comes first"
    (cleared,) = script.of("cleared")
    assert cleared["clearedMs"] <= SHOWS_WITHIN_MS, cleared
    # Newest first: the clears after the raises, for both alerts of the episode.
    assert cleared["feed"][:2] == ["packet_loss_high:cleared", "fps_low:cleared"] or cleared[
        "feed"
    ][:2] == ["fps_low:cleared", "packet_loss_high:cleared"]
    assert set(cleared["feed"]) == {
        "packet_loss_high:raised",
        "fps_low:raised",
        "packet_loss_high:cleared",
        "fps_low:cleared",
    }
    assert script.of("filtered") == [[other]]

    (page,) = script.of("stream-page")
    assert page["url"] == f"{server.url}/dashboard/#stream={stream}"
    # The 15-minute window opened with every sample written so far: the seeded history plus
    # the 1 + 2 + 3 the script sent before opening the page, then grew by the live ones.
    assert page["history"] == {"bucket": "raw", "points": seeded + 6}
    assert page["before"] == seeded + 6
    assert page["after"] >= page["before"] + 3
    assert script.of("viewers") == [[2, 1]]
    # The two beacons the script sent: startups 800 and 1,200 ms, 10 s watched each, one stall
    # of 500 ms, one down-switch. Rebuffering 500 / (20,000 + 500); startup percentiles as
    # percentile_cont gives them: p50 1,000 ms, p95 1,180 ms.
    (experience,) = script.of("experience")
    assert experience["Views"] == "2", experience
    assert experience["Rebuffering"] == f"{100 * 500 / 20_500:.1f} %", experience
    assert experience["Startup p50 / p95"] == "1.00 s / 1.18 s", experience
    assert experience["Switches per view"] == "0.50", experience
    assert experience["Failed"] == "0.0 %", experience
    score = experience["Score"]
    assert score.endswith(" / 100") and 0 <= int(score.split()[0]) <= 100, experience

    refused = {r["role"]: r["message"] for r in script.of("refused")}
    assert "A viewer token cannot open the dashboard" in refused["viewer"]
    assert "A streamer token cannot open the dashboard" in refused["streamer"]
    assert script.of("pasted") == [True]
    (expired,) = script.of("expired")
    assert "expired" in expired["message"]
    assert expired["afterExpiryMs"] < 3000

    names = sorted(p.name for p in shots.glob("*.png"))
    assert names == sorted(Path(p).name for p in script.of("screenshot"))
    assert len(names) == 8
