"""Connections: thousands of streamers at one update / 5 s on ONE ingest process.

Starts a real `streamstats serve` on a scratch database, then drives it with plain Socket.IO v5
websocket clients (a few lines of the wire protocol over aiohttp, so thousands fit in two small
client processes). For each run: a baseline of B streamers, then N streamers; it reports the
server's RSS growth per connection and the acknowledgement latency (send → ack after commit),
p50/p99, for both, and the ratio. Medians over the runs are printed last.

    DATABASE_URL=postgresql:///streamstats .venv/bin/python bench/bench_connections.py \
        --streamers 5000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.auth import mint_token  # noqa: E402
from tests import dbutil  # noqa: E402
from tests.servers import JWT_SECRET, ServerProcess  # noqa: E402

FD_LIMIT = 20_000


def raise_fd_limit() -> None:
    """One socket per connection on each side: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else FD_LIMIT
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- client worker (a separate process) ------------------------------------------------------


def payload(stream_id: str) -> dict:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return {
        "streamId": stream_id,
        "stats": {
            "bitrate": round(random.uniform(2000, 6000), 1),
            "fps": 30,
            "resolution": {"width": 1920, "height": 1080},
            "audioLevel": -20,
            "packetLoss": round(random.uniform(0, 1), 2),
            "latency": round(random.uniform(20, 80), 1),
            "bandwidth": {"upload": 8000, "download": 20000},
        },
        "timestamp": stamp,
    }


async def streamer(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    stream_id: str,
    interval: float,
    window: tuple[float, float],
    stop_at: float,
    latencies: list[float],
    counts: dict[str, int],
    connected: asyncio.Event,
) -> None:
    """One streamer over the raw Socket.IO protocol: connect with the token, send, time acks."""
    async with session.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
        opening = await ws.receive_str()
        assert opening.startswith("0"), opening
        await ws.send_str("40" + json.dumps({"token": token}))
        pending: dict[int, float] = {}
        ack_id = 0

        async def sender() -> None:
            nonlocal ack_id
            await asyncio.sleep(random.uniform(0, interval))
            while time.time() < stop_at:
                ack_id += 1
                pending[ack_id] = time.time()
                event = json.dumps(["stream:stats:update", payload(stream_id)])
                await ws.send_str(f"42{ack_id}{event}")
                counts["sent"] += 1
                await asyncio.sleep(interval)

        task: asyncio.Task[None] | None = None
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = message.data
                if data == "2":
                    await ws.send_str("3")
                elif data.startswith("40"):
                    counts["connected"] += 1
                    connected.set()
                    task = asyncio.create_task(sender())
                elif data.startswith("44"):
                    counts["refused"] += 1
                    return
                elif data.startswith("43"):
                    bracket = data.index("[")
                    sent_at = pending.pop(int(data[2:bracket]), None)
                    body = json.loads(data[bracket:])[0]
                    if not body.get("ok"):
                        counts["errors"] += 1
                        code = "error:" + str((body.get("error") or {}).get("code"))
                        counts[code] = counts.get(code, 0) + 1
                    elif sent_at is not None:
                        counts["acked"] += 1
                        if window[0] <= sent_at <= window[1]:
                            latencies.append(time.time() - sent_at)
                if time.time() >= stop_at + 2:
                    break
        finally:
            if task is not None:
                task.cancel()


async def worker_main(spec: dict) -> dict:
    raise_fd_limit()
    # On a shared machine the load generator must not starve the server it measures.
    os.nice(10)
    url = spec["url"].replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    latencies: list[float] = []
    counts = {"sent": 0, "acked": 0, "errors": 0, "connected": 0, "refused": 0, "failed": 0}
    window = (spec["window_start"], spec["window_end"])
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    tasks = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for stream_id in spec["streams"]:
            token = mint_token(JWT_SECRET, role="streamer", streams=[stream_id], ttl=3600)
            event = asyncio.Event()
            tasks.append(
                asyncio.create_task(
                    streamer(
                        session,
                        url,
                        token,
                        stream_id,
                        spec["interval"],
                        window,
                        spec["stop_at"],
                        latencies,
                        counts,
                        event,
                    )
                )
            )
            await asyncio.sleep(1 / spec["ramp_per_s"])
        results = await asyncio.gather(*tasks, return_exceptions=True)
    counts["failed"] = sum(1 for r in results if isinstance(r, BaseException))
    return {"latencies": latencies, "counts": counts}


# -- driver ------------------------------------------------------------------------------------


async def drive(
    url: str, streamers: int, workers: int, interval: float, warm: float, window: float, ramp: float
) -> tuple[dict, float, float]:
    """Run `streamers` clients split over worker processes; return merged results and window."""
    streams = [str(uuid.uuid4()) for _ in range(streamers)]
    ramp_s = streamers / ramp
    start = time.time() + 1.5
    window_start = start + ramp_s + warm
    window_end = window_start + window
    stop_at = window_end + 1
    procs = []
    for w in range(workers):
        spec = {
            "url": url,
            "streams": streams[w::workers],
            "interval": interval,
            "window_start": window_start,
            "window_end": window_end,
            "stop_at": stop_at,
            "ramp_per_s": ramp / workers,
        }
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--worker",
                json.dumps(spec),
                stdout=subprocess.PIPE,
            )
        )
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    merged: dict = {"latencies": [], "counts": {}}
    for out, _ in outputs:
        result = json.loads(out.decode().strip().splitlines()[-1])
        merged["latencies"].extend(result["latencies"])
        for key, value in result["counts"].items():
            merged["counts"][key] = merged["counts"].get(key, 0) + value
    return merged, window_start, window_end


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> dict[str, float]:
    """The server's own /metrics samples (none if a saturated server does not answer in time)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
            lines = response.read().decode().splitlines()
    except OSError:
        return {}
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")
    }


async def sample_server(
    pid: int, url: str, start: float, end: float
) -> tuple[int, float, dict[str, float]]:
    """Median server RSS over the window, its CPU use there (1.0 = one core), and what the
    writer did there according to the server's own metrics."""
    await asyncio.sleep(max(0.0, start - time.time()))
    before = await asyncio.to_thread(scrape, url)
    cpu_start, t_start = cpu_seconds(pid), time.time()
    samples = []
    while time.time() < end:
        samples.append(rss_bytes(pid))
        await asyncio.sleep(1)
    cpu = (cpu_seconds(pid) - cpu_start) / max(time.time() - t_start, 1e-6)
    after = await asyncio.to_thread(scrape, url)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("streamstats_flush_seconds_count")
    writer = {
        "batch_rows": delta("streamstats_batch_rows_sum") / batches if batches else 0.0,
        "flush_ms": delta("streamstats_flush_seconds_sum") / batches * 1000 if batches else 0.0,
        "queue_rows": after.get("streamstats_queue_rows", 0.0),
    }
    return int(statistics.median(samples)), cpu, writer


async def phase(server: ServerProcess, streamers: int, args: argparse.Namespace) -> dict:
    assert server.proc is not None
    streams_task = asyncio.create_task(
        drive(server.url, streamers, args.workers, args.interval, args.warm, args.window, args.ramp)
    )
    # The driver fixes the window before starting; recompute it the same way to sample RSS.
    ramp_s = streamers / args.ramp
    window_start = time.time() + 1.5 + ramp_s + args.warm
    rss, cpu, writer = await sample_server(
        server.proc.pid, server.url, window_start + 1, window_start + args.window
    )
    merged, _, _ = await streams_task
    lat = merged["latencies"]
    rate = len(lat) / args.window
    return {
        "cpu_ms_per_update": cpu / rate * 1000 if rate else float("nan"),
        "streamers": streamers,
        "rss": rss,
        "cpu": cpu,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "samples": len(lat),
        **writer,
        **merged["counts"],
    }


def one_run(args: argparse.Namespace, database_url: str, log_dir: Path) -> dict:
    server = ServerProcess(
        database_url,
        log_dir,
        env={"STREAMSTATS_LOG_LEVEL": "WARNING", "STREAMSTATS_QUEUE_ROWS": "100000"},
    )
    server.start()
    try:
        assert server.proc is not None
        idle = rss_bytes(server.proc.pid)
        base = asyncio.run(phase(server, args.baseline, args))
        full = asyncio.run(phase(server, args.streamers, args))
    finally:
        server.stop()
    per_conn = (full["rss"] - base["rss"]) / (args.streamers - args.baseline)
    return {"idle_rss": idle, "base": base, "full": full, "rss_per_conn": per_conn}


def fanout_run(args: argparse.Namespace, database_url: str, log_dir: Path) -> dict:
    """Two nodes over Redis; updates go to node A only: what does node B pay per update?"""
    import redis

    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    client.close()
    env = {"STREAMSTATS_LOG_LEVEL": "WARNING", "REDIS_URL": args.redis_url}
    a = ServerProcess(database_url, log_dir, env=env).start()
    b = ServerProcess(database_url, log_dir, env=env).start()
    try:
        assert a.proc is not None and b.proc is not None
        idle_start = cpu_seconds(b.proc.pid)
        time.sleep(5)
        idle = (cpu_seconds(b.proc.pid) - idle_start) / 5

        async def measure() -> tuple[dict, float, float]:
            assert a.proc is not None and b.proc is not None
            task = asyncio.create_task(
                drive(a.url, args.fanout, args.workers, 1.0, 5.0, args.window, args.ramp)
            )
            await asyncio.sleep(1.5 + args.fanout / args.ramp + 5.0)
            start_a, start_b, t0 = cpu_seconds(a.proc.pid), cpu_seconds(b.proc.pid), time.time()
            await asyncio.sleep(args.window)
            span = time.time() - t0
            cpu_a = (cpu_seconds(a.proc.pid) - start_a) / span
            cpu_b = (cpu_seconds(b.proc.pid) - start_b) / span
            merged, _, _ = await task
            return merged, cpu_a, cpu_b

        merged, cpu_a, cpu_b = asyncio.run(measure())
    finally:
        a.stop()
        b.stop()
    # Acknowledged updates sent within the measured window.
    rate = len(merged["latencies"]) / args.window
    return {"rate": rate, "cpu_a": cpu_a, "cpu_b": cpu_b, "idle_b": idle, **merged["counts"]}


def main() -> None:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    top.add_argument("--streamers", type=int, default=5000)
    top.add_argument("--baseline", type=int, default=100)
    top.add_argument("--runs", type=int, default=3)
    top.add_argument("--workers", type=int, default=2, help="client processes")
    top.add_argument("--interval", type=float, default=5.0, help="seconds between updates")
    top.add_argument("--ramp", type=float, default=500.0, help="new connections per second")
    top.add_argument("--warm", type=float, default=10.0, help="seconds after the ramp")
    top.add_argument("--window", type=float, default=30.0, help="measurement seconds")
    top.add_argument(
        "--fanout",
        type=int,
        default=0,
        metavar="N",
        help="instead: N streamers at 1/s on node A of two nodes over Redis; CPU of idle node B",
    )
    top.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    top.add_argument("--worker", help=argparse.SUPPRESS)
    args = top.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker_main(json.loads(args.worker)))))
        return

    raise_fd_limit()  # inherited by the server process
    # `kill` of the benchmark still stops its server and drops its database (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not server_url:
        sys.exit("set DATABASE_URL to a PostgreSQL + TimescaleDB server")
    database_url = dbutil.create_database(server_url, "streamstats_bench")
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-connections-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        from streamstats import migrations

        asyncio.run(migrations.migrate(database_url))
        for i in range(args.runs if args.fanout else 0):
            f = fanout_run(args, database_url, log_dir)
            runs.append(f)
            per_event_us = (f["cpu_b"] - f["idle_b"]) / max(f["rate"], 1e-9) * 1e6
            f["per_event_us"] = per_event_us
            print(
                f"fanout run {i + 1}: {f['rate']:.0f} updates/s into node A "
                f"(CPU {f['cpu_a']:.0%}); "
                f"node B with no clients: CPU {f['cpu_b']:.0%} (idle {f['idle_b']:.0%}) = "
                f"{per_event_us:.0f} µs of node B's CPU per update broadcast over Redis",
                flush=True,
            )
        if args.fanout:
            per = statistics.median(r["per_event_us"] for r in runs)
            print(f"median of {len(runs)} runs: {per:.0f} µs per update per other node")
            return
        for i in range(args.runs):
            run = one_run(args, database_url, log_dir)
            runs.append(run)
            b, f = run["base"], run["full"]
            print(
                f"run {i + 1}: idle RSS {run['idle_rss'] / 2**20:.0f} MiB; "
                f"{b['streamers']} streamers: RSS {b['rss'] / 2**20:.0f} MiB, "
                f"server CPU {b['cpu']:.0%} ({b['cpu_ms_per_update']:.2f} ms/update), "
                f"ack p50 {b['p50_ms']:.1f} ms p99 {b['p99_ms']:.1f} ms ({b['samples']} acks); "
                f"{f['streamers']} streamers: RSS {f['rss'] / 2**20:.0f} MiB, "
                f"server CPU {f['cpu']:.0%} ({f['cpu_ms_per_update']:.2f} ms/update), "
                f"ack p50 {f['p50_ms']:.1f} ms p99 {f['p99_ms']:.1f} ms ({f['samples']} acks), "
                f"writer: {f['batch_rows']:.0f} rows/batch, {f['flush_ms']:.0f} ms/flush, "
                f"queue {f['queue_rows']:.0f} rows at the end; "
                f"connected {f['connected']}, errors {f['errors']}, failed {f['failed']} "
                f"{ {k: v for k, v in f.items() if k.startswith('error:')} }; "
                f"RSS/connection {run['rss_per_conn'] / 1024:.1f} KiB",
                flush=True,
            )
    finally:
        dbutil.drop_database(database_url)

    def med(get) -> float:
        return statistics.median(get(r) for r in runs)

    print(
        f"median of {len(runs)} runs: RSS/connection {med(lambda r: r['rss_per_conn']) / 1024:.1f}"
        f" KiB; ack p99 {med(lambda r: r['full']['p99_ms']):.1f} ms at {args.streamers} vs "
        f"{med(lambda r: r['base']['p99_ms']):.1f} ms at {args.baseline} (x"
        f"{med(lambda r: r['full']['p99_ms'] / r['base']['p99_ms']):.2f}); ack p50 "
        f"{med(lambda r: r['full']['p50_ms']):.1f} ms vs "
        f"{med(lambda r: r['base']['p50_ms']):.1f} ms"
    )


if __name__ == "__main__":
    main()
