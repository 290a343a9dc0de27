"""Ingest throughput and acknowledgement latency: (a) no-op server, (b) our path, (c) naive path.

For each run, each server in turn is started on its own port, driven by the same load generator
(the same connections, payloads and schedule), then stopped:
  (a) bench/noop_server.py — python-socketio acking without storing: the framework's ceiling;
  (b) `streamstats serve` — validation, batch writer, acknowledgement after COMMIT;
  (c) bench/naive_server.py — the same app with one INSERT (one transaction) per event;
  (m) `streamstats serve` again, with --monitors all-streams monitors (a Node.js process,
      bench/streamers.js) connected and reading every broadcast: (m)/(b) is what monitors cost.
Two phases per server:
  max  — C connections, each keeping W updates awaiting their acknowledgement (closed loop):
         acknowledged events/s and p50/p99 latency;
  rate — a fixed offered load (default 2,000 events/s over 500 connections, open loop: latency
         is measured from the scheduled send time, so a stall cannot hide itself).
After (b) and (c), the rows stored are compared with the acknowledgements: every update is new,
so stored rows must equal acknowledged updates and no acknowledgement may say `duplicate`.

The load generator speaks the Socket.IO v5 wire protocol directly over aiohttp websockets (a few
lines, far cheaper per event than python-socketio's client), in worker processes; the server
runs in one process. Both share the machine's cores: compare ratios within one run.

    .venv/bin/python bench/bench_ingest.py --database postgresql:///streamstats_bench_ingest \
        --runs 3
    .venv/bin/python bench/bench_ingest.py --servers abm --modes max --runs 3   # with a monitor

The database is created when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.auth import mint_token  # noqa: E402
from tests.servers import free_port  # noqa: E402

SECRET = "bench-secret-" + "b" * 32
SERVERS = {
    "a": ("no-op python-socketio", [sys.executable, str(ROOT / "bench" / "noop_server.py")]),
    "b": ("streamstats serve", [sys.executable, "-m", "streamstats.cli", "serve"]),
    "c": ("naive INSERT per event", [sys.executable, str(ROOT / "bench" / "naive_server.py")]),
    # (b) again, with --monitors all-streams monitors connected and reading every broadcast.
    "m": ("serve + monitors", [sys.executable, "-m", "streamstats.cli", "serve"]),
}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- load generator (worker processes) ----------------------------------------------------------


def update_event(stream_id: str, stamp: datetime, seq: int) -> dict[str, Any]:
    """The client guide's update, every metric present; unique timestamp per (stream, seq)."""
    return {
        "streamId": stream_id,
        "stats": {
            "bitrate": 2500 + seq % 500,
            "fps": 30,
            "resolution": {"width": 1920, "height": 1080},
            "audioLevel": -12.5,
            "packetLoss": 0.2,
            "latency": 45,
            "bandwidth": {"upload": 3000, "download": 120},
        },
        "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


async def connection(
    session: aiohttp.ClientSession,
    spec: dict[str, Any],
    stream_id: str,
    out: dict[str, Any],
    go: asyncio.Event,
) -> None:
    """One streamer over the raw protocol; `max` keeps W in flight, `rate` sends on a schedule."""
    token = mint_token(SECRET, role="streamer", streams=[stream_id], ttl=3600)
    base = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    acked: list[int] = []
    out["acked"][stream_id] = [base.isoformat(), acked]
    async with session.ws_connect(spec["ws"], heartbeat=None, max_msg_size=0) as ws:
        opening = await ws.receive_str()
        assert opening.startswith("0"), opening
        await ws.send_str("40" + json.dumps({"token": token}))
        while not (await ws.receive_str()).startswith("40"):
            pass
        out["connected"] += 1
        pending: dict[int, float] = {}
        seq = 0
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        clock_offset = time.time() - loop.time()  # schedule in wall-clock, measure in loop time

        async def send(scheduled: float) -> None:
            nonlocal seq
            seq += 1
            pending[seq] = scheduled
            event = [
                "stream:stats:update",
                update_event(stream_id, base + timedelta(milliseconds=seq), seq),
            ]
            await ws.send_str(f"42{seq}{json.dumps(event)}")
            out["sent"] += 1

        async def reader() -> None:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = message.data
                if data == "2":
                    await ws.send_str("3")
                    continue
                if not data.startswith("43"):
                    continue
                now = loop.time() + clock_offset
                bracket = data.index("[")
                scheduled = pending.pop(int(data[2:bracket]))
                body = json.loads(data[bracket:])[0]
                if body.get("ok"):
                    out["ok"] += 1
                    acked.append(int(data[2:bracket]))
                    out["duplicate"] += bool(body.get("duplicate"))
                    if spec["window_start"] <= now <= spec["window_end"]:
                        out["acked_in_window"] += 1
                    if spec["window_start"] <= scheduled <= spec["window_end"]:
                        out["latencies"].append(now - scheduled)
                else:
                    code = body.get("error", {}).get("code", "?")
                    out["errors"][code] = out["errors"].get(code, 0) + 1
                if spec["mode"] == "max" and now < spec["stop_at"]:
                    await send(loop.time() + clock_offset)
                if now >= spec["stop_at"] and not pending:
                    done.set()
                    return

        reading = asyncio.create_task(reader())
        await go.wait()
        await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        if spec["mode"] == "max":
            for _ in range(spec["window"]):
                await send(time.time())
        else:
            interval = spec["interval"]
            next_at = spec["start_at"] + random.uniform(0, interval)
            while next_at < spec["stop_at"]:
                await asyncio.sleep(max(0.0, next_at - time.time()))
                await send(next_at)
                next_at += interval
        # Let every acknowledgement arrive, so stored rows can be compared with them.
        await asyncio.sleep(max(0.0, spec["stop_at"] - time.time()))
        if pending:
            try:
                await asyncio.wait_for(done.wait(), 15)
            except TimeoutError:
                out["unanswered"] += len(pending)
        reading.cancel()


async def worker(spec: dict[str, Any]) -> dict[str, Any]:
    # On a shared machine the load generator must not starve the server it measures.
    os.nice(10)
    out: dict[str, Any] = {
        "connected": 0,
        "sent": 0,
        "ok": 0,
        "duplicate": 0,
        "acked_in_window": 0,
        "unanswered": 0,
        "errors": {},
        "latencies": [],
        "acked": {},
    }
    connector = aiohttp.TCPConnector(limit=0)
    go = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            asyncio.create_task(connection(session, spec, stream_id, out, go))
            for stream_id in spec["streams"]
        ]
        # Everyone connected first; then the driver hands out one schedule to all workers.
        while out["connected"] < len(tasks) and not any(t.done() for t in tasks):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        times = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
        spec.update(times)
        go.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    out["failed"] = [repr(r) for r in results if isinstance(r, BaseException)][:3]
    return out


# -- driver ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_monitors(url: str, count: int) -> subprocess.Popen[bytes]:
    """All-streams monitors in a Node.js process (bench/streamers.js with no streamers)."""
    token = mint_token(SECRET, role="moderator", ttl=3600)
    spec = {
        "url": url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket",
        "monitors": [token] * count,
        "streams": [],
        "interval": 1,
        "rampPerS": 1000,
        "base": datetime.now(UTC).isoformat(),
    }
    proc = subprocess.Popen(
        ["node", str(ROOT / "bench" / "streamers.js"), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(ROOT / "tests" / "js" / "node_modules")},
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps(spec) + "\n").encode())
    proc.stdin.flush()
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("monitors did not connect")
    return proc


def phase(url: str, mode: str, args: argparse.Namespace, pid: int, monitors: int) -> dict[str, Any]:
    """Run one load phase over worker processes; merged counts and latencies."""
    connections = args.connections if mode == "max" else args.rate_connections
    watching = start_monitors(url, monitors) if monitors else None
    streams = [str(uuid.uuid4()) for _ in range(connections)]
    spec_base = {
        "ws": url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket",
        "mode": mode,
        "window": args.window,
        "interval": connections / args.rate,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps({**spec_base, "streams": part})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for part in (streams[w :: args.workers] for w in range(args.workers))
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"load worker failed: {line!r}")
    start_at = time.time() + 0.5
    window_start = start_at + args.warmup
    window_end = window_start + args.duration
    times = {
        "start_at": start_at,
        "window_start": window_start,
        "window_end": window_end,
        "stop_at": window_end + 0.5,
    }
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(times) + "\n").encode())
        proc.stdin.flush()
    if watching is not None:
        assert watching.stdin is not None
        watching.stdin.write((json.dumps({"stopAt": times["stop_at"] * 1000}) + "\n").encode())
        watching.stdin.flush()
    # The server's CPU per acknowledged event holds up better than events/s on a shared machine.
    time.sleep(max(0.0, window_start - time.time()))
    cpu_start = cpu_seconds(pid)
    time.sleep(max(0.0, window_end - time.time()))
    cpu_used = cpu_seconds(pid) - cpu_start
    merged: dict[str, Any] = {"latencies": [], "errors": {}, "failed": []}
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        result = json.loads(stdout.decode().strip().splitlines()[-1])
        for key, value in result.items():
            if key == "latencies" or key == "failed":
                merged[key].extend(value)
            elif key == "acked":
                merged.setdefault("acked", {}).update(value)
            elif key == "errors":
                for code, n in value.items():
                    merged["errors"][code] = merged["errors"].get(code, 0) + n
            else:
                merged[key] = merged.get(key, 0) + value
    if watching is not None:
        stdout, _ = watching.communicate(timeout=120)
        merged["monitor_events"] = json.loads(stdout.decode().strip().splitlines()[-1])[
            "monitorEvents"
        ]
    merged["throughput"] = merged["acked_in_window"] / args.duration
    merged["server_cpu"] = cpu_used / args.duration
    merged["cpu_ms_per_event"] = cpu_used / max(merged["acked_in_window"], 1) * 1000
    merged["p50_ms"] = percentile(merged["latencies"], 0.50) * 1000
    merged["p99_ms"] = percentile(merged["latencies"], 0.99) * 1000
    merged["max_ms"] = max(merged["latencies"], default=float("nan")) * 1000
    del merged["latencies"]
    return merged


def start_server(key: str, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "STREAMSTATS_JWT_SECRET": SECRET,
        "STREAMSTATS_PORT": str(port),
        "STREAMSTATS_HOST": "127.0.0.1",
        # The per-connection limit (50/s) would cap the closed-loop phase, not the write path.
        "STREAMSTATS_RATE_LIMIT": "1000000",
        "STREAMSTATS_LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    command = [*SERVERS[key][1], *(["--port", str(port)] if key != "b" else [])]
    with log.open("ab") as handle:
        proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/socket.io/?EIO=4&transport=polling", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server {key} did not start; see {log}")


def writer_metrics(url: str) -> dict[str, float]:
    """Mean rows per batch and mean flush time, from the server's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (
            "streamstats_batch_rows_sum",
            "streamstats_batch_rows_count",
            "streamstats_flush_seconds_sum",
        ):
            values[name] = float(value)
    batches = values.get("streamstats_batch_rows_count", 0) or 1
    return {
        "batches": values.get("streamstats_batch_rows_count", 0),
        "rows_per_batch": values.get("streamstats_batch_rows_sum", 0) / batches,
        "flush_ms": values.get("streamstats_flush_seconds_sum", 0) / batches * 1000,
    }


async def reset_database(url: str) -> None:
    import asyncpg

    from streamstats import migrations

    try:
        await (await asyncpg.connect(url)).close()
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(url, database="postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
        finally:
            await admin.close()
    await migrations.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE stream_stats, stream_latest, viewer_stats, viewer_views")
    finally:
        await conn.close()


async def check_rows(url: str, acked: dict[str, list[Any]]) -> dict[str, int]:
    """Compare the rows stored with the acknowledgements (update n of a stream: base + n ms)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT stream_id::text AS s, time FROM stream_stats")
    finally:
        await conn.close()
    stored: dict[str, set[datetime]] = {}
    for row in rows:
        stored.setdefault(row["s"], set()).add(row["time"])
    expected: dict[str, set[datetime]] = {}
    for stream, (base, numbers) in acked.items():
        start = datetime.fromisoformat(base)
        expected[stream] = {start + timedelta(milliseconds=n) for n in numbers}
    missing = sum(len(times - stored.get(s, set())) for s, times in expected.items())
    unacked = sum(len(times - expected.get(s, set())) for s, times in stored.items())
    return {"stored": len(rows), "acked_missing": missing, "stored_unacked": unacked}


def run_server(key: str, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    if key != "a":
        asyncio.run(reset_database(args.database))
    proc, url = start_server(key, args, log)
    spy = None
    if args.py_spy:
        # Samples the server during the first phase: where does its time go?
        seconds = int(args.warmup + args.duration + 4)
        out = Path(args.py_spy) / f"{key}-{args.modes[0]}.txt"
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(proc.pid),
                "-d",
                str(seconds),
                "-f",
                "raw",
                "-r",
                "200",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        result: dict[str, Any] = {
            mode: phase(url, mode, args, proc.pid, args.monitors if key == "m" else 0)
            for mode in args.modes
        }
        if spy is not None:
            spy.wait(60)
        if key in "bm":
            result["writer"] = writer_metrics(url)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    if key != "a":
        acked: dict[str, list[Any]] = {}
        for m in args.modes:
            acked.update(result[m].pop("acked"))
        result.update(asyncio.run(check_rows(args.database, acked)))
        result["acked_new"] = sum(result[m]["ok"] - result[m]["duplicate"] for m in args.modes)
        result["acked_duplicate"] = sum(result[m]["duplicate"] for m in args.modes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--database", default="postgresql:///streamstats_bench_ingest")
    parser.add_argument("--servers", default="abc", help="which of a, b, c, m to run")
    parser.add_argument("--monitors", type=int, default=1, help="all-streams monitors for (m)")
    parser.add_argument("--modes", nargs="+", default=["max", "rate"], choices=["max", "rate"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100, help="max phase")
    parser.add_argument("--window", type=int, default=8, help="updates in flight per connection")
    parser.add_argument("--rate", type=float, default=2000, help="rate phase: events/s offered")
    parser.add_argument("--rate-connections", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--log", default="/tmp/bench_ingest.log")
    parser.add_argument("--py-spy", metavar="DIR", help="profile each server (raw py-spy stacks)")
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(asyncio.run(worker(json.loads(args.worker)))))
        return

    log = Path(args.log)
    runs: list[dict[str, Any]] = []
    for number in range(1, args.runs + 1):
        run: dict[str, Any] = {}
        for key in args.servers:
            run[key] = run_server(key, args, log)
            line = {
                m: {
                    k: run[key][m][k]
                    for k in (
                        "throughput",
                        "server_cpu",
                        "cpu_ms_per_event",
                        "p50_ms",
                        "p99_ms",
                        "max_ms",
                        "unanswered",
                        "errors",
                        "failed",
                    )
                }
                for m in args.modes
            }
            extra = {
                k: run[key][k]
                for k in (
                    "stored",
                    "acked_new",
                    "acked_duplicate",
                    "acked_missing",
                    "stored_unacked",
                    "writer",
                )
                if k in run[key]
            }
            print(
                f"run {number} ({key}) {SERVERS[key][0]}: {json.dumps(line)} {json.dumps(extra)}",
                flush=True,
            )
        runs.append(run)

    def med(key: str, mode: str, field: str) -> float:
        return statistics.median(r[key][mode][field] for r in runs)

    print(f"\nmedians of {args.runs} runs")
    for mode in args.modes:
        print(
            f"[{mode}]  {'server':<26} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'server CPU':>10} {'CPU ms/event':>12}"
        )
        for key in args.servers:
            print(
                f"        ({key}) {SERVERS[key][0]:<22} {med(key, mode, 'throughput'):>9,.0f} "
                f"{med(key, mode, 'p50_ms'):>8.1f} {med(key, mode, 'p99_ms'):>8.1f} "
                f"{med(key, mode, 'server_cpu'):>10.0%} {med(key, mode, 'cpu_ms_per_event'):>12.3f}"
            )
        if "b" in args.servers and "m" in args.servers and mode == "max":
            ratios = [r["m"][mode]["throughput"] / r["b"][mode]["throughput"] for r in runs]
            events = [r["m"][mode].get("monitor_events", 0) for r in runs]
            print(
                f"        (m)/(b) throughput with {args.monitors} all-streams monitor(s): median "
                f"{statistics.median(ratios):.2f} (runs: {', '.join(f'{x:.2f}' for x in ratios)}); "
                f"broadcasts received per run {events}"
            )
        if "a" in args.servers and mode == "max":
            for key in (k for k in args.servers if k in "bc"):
                ratios = [r[key][mode]["throughput"] / r["a"][mode]["throughput"] for r in runs]
                cpu = [
                    r["a"][mode]["cpu_ms_per_event"] / r[key][mode]["cpu_ms_per_event"]
                    for r in runs
                ]
                print(
                    f"        ({key})/(a) throughput: median {statistics.median(ratios):.2f} "
                    f"(runs: {', '.join(f'{x:.2f}' for x in ratios)}); "
                    f"per core (CPU per event of (a) / of ({key})): "
                    f"median {statistics.median(cpu):.2f} "
                    f"(runs: {', '.join(f'{x:.2f}' for x in cpu)})"
                )
    for key in args.servers.replace("a", ""):
        lost = [r[key]["acked_missing"] for r in runs]
        unacked = [r[key]["stored_unacked"] for r in runs]
        dups = [r[key]["acked_duplicate"] for r in runs]
        print(
            f"({key}) per run: acknowledged but not stored {lost}; duplicate acks {dups}; "
            f"stored, acknowledgement still on its way when the generator stopped {unacked}"
        )


if __name__ == "__main__":
    main()
