"""`streamstats simulate` against a real server: every acknowledged update is a stored row."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from ingest.simulate import simulate
from tests.servers import JWT_SECRET

pytestmark = pytest.mark.slow


async def test_rows_stored_equal_acknowledgements(start_server, make_settings, conn, monkeypatch):
    server = start_server()
    # Streamers drop and reconnect often here, so resends are part of what is checked.
    monkeypatch.setattr("ingest.simulate.P_RECONNECT", 0.15)
    out = io.StringIO()
    tally = await simulate(
        make_settings(jwt_secret=JWT_SECRET),
        url=server.url,
        streams=6,
        viewers=4,
        duration=4,
        interval=0.5,
        seed=3,
        out=out,
    )
    rows = await conn.fetchval("SELECT count(*) FROM stream_stats")
    streams = await conn.fetchval("SELECT count(DISTINCT stream_id) FROM stream_stats")
    assert tally.sent >= 6 * 6
    assert tally.errors == {}
    assert tally.acknowledged == tally.sent
    assert rows == tally.stored == tally.acknowledged - tally.duplicates
    assert streams == 6
    assert tally.joins > 0
    # The viewers' players sent beacons, each acknowledged once stored.
    beacons = await conn.fetchval("SELECT count(*) FROM viewer_stats")
    assert beacons == tally.beacons_acknowledged == tally.beacons > 0
    assert tally.reconnects > 0
    lines = out.getvalue().splitlines()
    assert "sent" in lines[0] and "acked" in lines[0] and "errors" in lines[0]
    assert f"acknowledged {tally.acknowledged}" in lines[-1]


def test_the_command_line_runs_the_simulator(start_server, database_url):
    server = start_server()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamstats.cli",
            "simulate",
            "--url",
            server.url,
            "--streams",
            "2",
            "--viewers",
            "1",
            "--duration",
            "2",
            "--interval",
            "0.5",
        ],
        env={**server.env, "STREAMSTATS_JWT_SECRET": JWT_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "errors: none" in result.stderr
