"""clients/js/quality-advice.js in headless Chromium: the server's advice changes a real sender."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from ingest.auth import mint_token
from tests.e2e.test_js_client import JS, NodeScript
from tests.servers import JWT_SECRET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None or not (JS / "node_modules" / "playwright-core").is_dir():
        pytest.fail("the browser tests need Node.js and `npm ci` in tests/js (scripts/setup.sh)")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("the browser tests need Debian's chromium (scripts/setup.sh installs it)")
    return path


async def test_advised_lower_changes_the_encodings_and_the_bitrate_falls(
    node, start_server, conn
) -> None:
    # Reports come once a second here: a 3 s window judges three of them. A loopback link
    # between two peers of one headless browser ramps up slowly, to a few hundred kbps within
    # the test: the floor goes down so that halving it is still advised.
    server = start_server(
        env={"STREAMSTATS_ADVICE_WINDOW": "3s", "STREAMSTATS_ADVICE_FLOOR_KBPS": "50"}
    )
    stream = str(uuid.uuid4())
    token = mint_token(JWT_SECRET, role="streamer", streams=[stream], sub="studio")
    script = await NodeScript.start(node, "advice-webrtc.js", server, TOKEN=token, STREAM_ID=stream)
    code = await script.finish(timeout=120)
    assert code == 0, "".join(script.output)
    [before] = script.of("before")
    [applied] = script.of("applied")
    [after] = script.of("after")
    assert script.of("errors") == [[]]

    sent_before = sorted(s["kbps"] for s in before["samples"])[1]
    advice = await conn.fetchrow(
        "SELECT id, action, target::text, applied::text FROM stream_advice "
        "WHERE stream_id = $1 ORDER BY id LIMIT 1",
        uuid.UUID(stream),
    )
    assert advice["action"] == "lower" and applied["adviceId"] == advice["id"]
    target_kbps = applied["applied"]["maxBitrate"] / 1000
    # Loss at twice the threshold halves the bitrate the page reported.
    assert target_kbps < 0.75 * sent_before
    # The sender's encodings carry the advice...
    [encoding] = applied["encodings"]
    assert encoding["maxBitrate"] == applied["applied"]["maxBitrate"]
    assert encoding["scaleResolutionDownBy"] >= 1
    # ...the server recorded what was applied...
    assert json.loads(advice["applied"]) == applied["applied"]
    # ...and what goes out falls to the cap (give or take the encoder's overshoot).
    measured = sorted(s["kbps"] for s in after)
    assert measured, "no bitrate measured after the advice"
    median_after = measured[len(measured) // 2]
    assert median_after < 0.8 * sent_before
    assert median_after <= 1.25 * target_kbps
