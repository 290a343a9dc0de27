"""`streamstats run`: one process migrates, serves, runs the jobs and says how to start."""

from __future__ import annotations

import asyncio
import signal
import time


def wait_for_log(server, text: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the output:\n{server.log()}")


async def test_run_serves_runs_jobs_and_prints_where_to_start(start_server, conn):
    server = start_server(command="run", env={"STREAMSTATS_ROLLUP_INTERVAL": "1s"})
    log = wait_for_log(server, "Ctrl-C stops")
    assert server.url in log
    assert "streamstats token --role moderator" in log
    assert "FROM stream_stats_1m" in log
    assert "reports" in log
    assert server.http_status("/readyz") == 200

    # The job runner lives in the same process: a rollup run is recorded within seconds.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if await conn.fetchval("SELECT count(*) FROM job_runs WHERE status = 'succeeded'"):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"no job ran:\n{server.log()}")

    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
