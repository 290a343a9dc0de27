"""`stream:stats:get` latency with 10 thousand vs 10 million rows stored.

Two dedicated databases are filled once in SQL (`INSERT … SELECT generate_series`, not through
the server): the same 1,000 streams with 10 rows each (10 k) or 10,000 rows each (10 M, one
sample every 5 s, ~14 h per stream), and `stream_latest` filled from the newest row per stream.
Then, alternating between the two for each run, a real `streamstats serve` is started on the
database and analyst clients send `stream:stats:get` for random streams; p50/p99 are reported
per run and as medians, with the 10 M / 10 k ratio.

    .venv/bin/python bench/bench_get.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.auth import mint_token  # noqa: E402
from streamstats import migrations  # noqa: E402
from tests.servers import JWT_SECRET, ServerProcess  # noqa: E402

STREAMS = 1000
# Stream ids are md5(PREFIX || n) in SQL and in Python alike, so both databases share them.
PREFIX = "bench-get-"

FILL = """
INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, width, height, audio_level_db,
                          packet_loss_pct, latency_ms, upload_kbps, download_kbps, quality)
SELECT $5::timestamptz - (n * interval '5 seconds'),
       md5($1::text || s::text)::uuid,
       2500 + (n % 97), 30, 1920, 1080, -12.5, (n % 7) * 0.1, 40 + (n % 13), 3000, 120, 'good'
FROM generate_series(1, $2::int) AS s, generate_series($3::int, $4::int) AS n
"""
LATEST = """
INSERT INTO stream_latest (stream_id, time, bitrate_kbps, fps, width, height, audio_level_db,
                           packet_loss_pct, latency_ms, upload_kbps, download_kbps, quality)
SELECT DISTINCT ON (stream_id) stream_id, time, bitrate_kbps, fps, width, height, audio_level_db,
       packet_loss_pct, latency_ms, upload_kbps, download_kbps, quality
FROM stream_stats
WHERE time = $1
ORDER BY stream_id, time DESC
ON CONFLICT (stream_id) DO NOTHING
"""


def stream_ids() -> list[str]:
    return [
        str(uuid.UUID(hashlib.md5(f"{PREFIX}{s}".encode()).hexdigest()))
        for s in range(1, STREAMS + 1)
    ]


async def prepare(url: str, per_stream: int) -> None:
    """Fill the database with STREAMS x per_stream rows, unless it already holds them."""
    await migrations.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        have = await conn.fetchval("SELECT count(*) FROM stream_stats")
        if have == STREAMS * per_stream:
            return
        await conn.execute("TRUNCATE stream_stats, stream_latest")
        step = 500  # rows per stream per statement: 500 k rows at a time
        newest = datetime.now(UTC) - timedelta(minutes=1)
        started = time.monotonic()
        for first in range(0, per_stream, step):
            last = min(per_stream, first + step) - 1
            await conn.execute(FILL, PREFIX, STREAMS, first, last, newest)
            print(f"  {url}: {(last + 1) * STREAMS:,} rows", end="\r", file=sys.stderr)
        await conn.execute(LATEST, newest)
        await conn.execute("ANALYZE stream_stats")
        await conn.execute("ANALYZE stream_latest")
        took = time.monotonic() - started
        print(f"  {url}: {per_stream * STREAMS:,} rows in {took:.0f}s", file=sys.stderr)
    finally:
        await conn.close()


async def client(url: str, ids: list[str], count: int, latencies: list[float]) -> None:
    """An analyst over the raw Socket.IO protocol, one get at a time."""
    token = mint_token(JWT_SECRET, role="analyst", sub="bench", ttl=3600)
    ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40" + json.dumps({"token": token}))
        while not (await ws.receive_str()).startswith("40"):
            pass
        for n in range(1, count + 1):
            event = json.dumps(["stream:stats:get", {"streamId": random.choice(ids)}])
            sent = time.perf_counter()
            await ws.send_str(f"42{n}{event}")
            while True:
                data = await ws.receive_str()
                if data == "2":
                    await ws.send_str("3")
                elif data.startswith(f"43{n}["):
                    break
            latencies.append(time.perf_counter() - sent)
            body = json.loads(data[data.index("[") :])[0]
            assert body.get("ok") and body["stats"] is not None, body


async def measure(url: str, clients: int, gets: int, warmup: int) -> list[float]:
    ids = stream_ids()
    await asyncio.gather(*(client(url, ids, warmup, []) for _ in range(clients)))
    latencies: list[float] = []
    await asyncio.gather(*(client(url, ids, gets, latencies) for _ in range(clients)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", default="postgresql:///streamstats_bench_get_10k")
    parser.add_argument("--large", default="postgresql:///streamstats_bench_get_10m")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--gets", type=int, default=500, help="per client and run")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()

    sizes = {"10k": (args.small, 10), "10M": (args.large, 10_000)}
    for url, per_stream in sizes.values():
        asyncio.run(prepare(url, per_stream))

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in sizes}
    with_logs = Path("/tmp")
    for run in range(1, args.runs + 1):
        for name, (url, _) in sizes.items():
            server = ServerProcess(
                url,
                with_logs,
                env={"STREAMSTATS_LOG_LEVEL": "WARNING", "STREAMSTATS_RATE_LIMIT": "100000"},
            )
            server.start()
            try:
                latencies = asyncio.run(measure(server.url, args.clients, args.gets, args.warmup))
            finally:
                server.stop()
            p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
            results[name].append((p50, p99))
            print(f"run {run} {name:>3}: {len(latencies)} gets, p50 {p50:.2f} ms, p99 {p99:.2f} ms")

    med = {
        name: [statistics.median(r[i] for r in runs) for i in (0, 1)]
        for name, runs in results.items()
    }
    for name, (p50, p99) in med.items():
        print(f"median {name:>3}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    ratios = [big[1] / small[1] for small, big in zip(results["10k"], results["10M"], strict=True)]
    print(
        f"p99 10M / 10k: median {statistics.median(ratios):.2f} "
        f"(runs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
