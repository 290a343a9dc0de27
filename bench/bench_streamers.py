"""10,000 streamers on one ingest process: idle cost, then one update per 5 s each.

For each run, each server in turn — (a) bench/noop_server.py (python-socketio acking without
storing, the same uvicorn stack) and (b) `streamstats serve` — is started on its own port and
driven by Node.js load generators (bench/streamers.js: raw Socket.IO v5 over the `ws` package,
separate processes at nice 10), then stopped:
  idle — every streamer connected, nothing sent: the server's CPU over the window (from
         /proc/<pid>/stat, 1.0 = one core) and its RSS;
  load — every streamer sends one update per --interval with an acknowledgement id (open loop:
         latency from the scheduled send time); after --warm seconds, --window seconds measured:
         acknowledged updates/s against the offered rate, p50/p99 latency, server CPU.
After (b) the rows stored are compared with the acknowledgements: every update is new, so each
acknowledged update must be stored exactly once, and none may be answered `duplicate`.

With --viewers V, V viewers (each watching one of the streams, round robin) connect too and send
one `stream:viewer:stats` beacon per --viewer-interval each, measured the same way and reported
apart; every acknowledged beacon must be a stored viewer_stats row.

    .venv/bin/python bench/bench_streamers.py --database postgresql:///streamstats_bench_streamers \
        --streamers 10000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_connections import raise_fd_limit, rss_bytes
from bench_ingest import (
    ROOT,
    SECRET,
    SERVERS,
    check_rows,
    cpu_seconds,
    percentile,
    reset_database,
    start_server,
)

from ingest.auth import mint_token

NODE_MODULES = ROOT / "tests" / "js" / "node_modules"


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_over(pid: int, seconds: float) -> float:
    """The process's CPU use over the next `seconds` (1.0 = one core)."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / (time.monotonic() - t0)


def spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid)),
            *("-f", "raw", "-d", str(int(seconds)), "-r", "100", "-o", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_server(key: str, args: argparse.Namespace, log: Path, number: int) -> dict[str, Any]:
    noop = key == "a"
    if not noop:
        asyncio.run(reset_database(args.database))
    proc, url = start_server(key, args, log)
    base = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    streams = [str(uuid.uuid4()) for _ in range(args.streamers)]
    pairs = [[s, mint_token(SECRET, role="streamer", streams=[s], ttl=7200)] for s in streams]
    monitor = mint_token(SECRET, role="moderator", ttl=7200) if args.monitor else None
    viewers = [
        [s, str(uuid.uuid4()), mint_token(SECRET, role="viewer", streams=[s], ttl=7200)]
        for s in (streams[i % len(streams)] for i in range(args.viewers))
    ]
    result: dict[str, Any] = {"load_before": load_average()}
    workers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for w in range(args.workers):
                spec = {
                    "url": url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket",
                    "interval": args.interval,
                    "rampPerS": args.ramp / args.workers,
                    "base": base.isoformat().replace("+00:00", "Z"),
                    "streams": pairs[w :: args.workers],
                    "viewers": viewers[w :: args.workers],
                    "viewerInterval": args.viewer_interval,
                    "monitors": [monitor] if monitor and w == 0 else [],
                }
                path = Path(tmp) / f"spec-{w}.json"
                path.write_text(json.dumps(spec))
                workers.append(
                    subprocess.Popen(
                        ["nice", "-n", "10", "node", str(ROOT / "bench" / "streamers.js"), path],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
                    )
                )
            for worker in workers:
                assert worker.stdout is not None
                line = worker.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"load generator failed: {line!r}")
            time.sleep(args.settle)
            profile = args.py_spy and Path(args.py_spy)
            if profile:
                spy(proc.pid, args.idle, profile / f"{key}-idle-{number}.txt")
            result["load_idle"] = load_average()
            result["idle_cpu"] = cpu_over(proc.pid, args.idle)
            result["idle_rss"] = rss_bytes(proc.pid)
            send_at = time.time() + 0.5
            window_start = send_at + args.warm
            window_end = window_start + args.window
            times = {
                "sendAt": send_at * 1000,
                "windowStart": window_start * 1000,
                "windowEnd": window_end * 1000,
                "stopAt": (window_end + 0.5) * 1000,
            }
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write((json.dumps(times) + "\n").encode())
                worker.stdin.flush()
            time.sleep(max(0.0, window_start - time.time()))
            if profile:
                spy(proc.pid, args.window, profile / f"{key}-load-{number}.txt")
            result["load_cpu"] = cpu_over(proc.pid, window_end - time.time())
            result["load_window"] = load_average()
            merged: dict[str, Any] = {"latencies": [], "errors": {}, "closeCodes": {}, "acked": {}}
            beacons: dict[str, Any] = {"latencies": [], "errors": {}}
            for worker in workers:
                stdout, _ = worker.communicate(timeout=120)
                part = json.loads(stdout.decode().strip().splitlines()[-1])
                viewer = part.pop("viewer")
                beacons["latencies"].extend(viewer.pop("latencies"))
                for code, n in viewer.pop("errors").items():
                    beacons["errors"][code] = beacons["errors"].get(code, 0) + n
                for field, value in viewer.items():
                    beacons[field] = beacons.get(field, 0) + value
                merged["latencies"].extend(part.pop("latencies"))
                merged["acked"].update(part.pop("acked"))
                for field in ("errors", "closeCodes"):
                    for code, n in part.pop(field).items():
                        merged[field][code] = merged[field].get(code, 0) + n
                for field, value in part.items():
                    merged[field] = merged.get(field, 0) + value
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = merged.pop("latencies")
    acked = merged.pop("acked")
    result.update(merged)
    result["offered"] = args.streamers / args.interval
    result["throughput"] = merged["ackedInWindow"] / args.window
    result["p50_ms"] = percentile(lat, 0.50)
    result["p99_ms"] = percentile(lat, 0.99)
    result["max_ms"] = max(lat, default=float("nan"))
    if args.viewers:
        blat = beacons.pop("latencies")
        result["viewer"] = {
            **beacons,
            "offered": args.viewers / args.viewer_interval,
            "throughput": beacons["ackedInWindow"] / args.window,
            "p50_ms": percentile(blat, 0.50),
            "p99_ms": percentile(blat, 0.99),
        }
    if not noop:
        base_iso = base.isoformat()
        result.update(
            asyncio.run(check_rows(args.database, {s: [base_iso, n] for s, n in acked.items()}))
        )
        if args.viewers:
            result["viewer"]["stored"] = asyncio.run(count_beacons(args.database))
    return result


async def count_beacons(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM viewer_stats"))
    finally:
        await conn.close()


def viewer_line(v: dict[str, Any]) -> str:
    stored = f", stored {v['stored']} of {v['ok']} acknowledged" if "stored" in v else ""
    return (
        f"; viewers: connected {v['connected']}, {v['throughput']:,.0f}/s of "
        f"{v['offered']:,.0f}/s offered, p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms, "
        f"duplicate {v['duplicate']}, errors {v['errors']}{stored}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql:///streamstats_bench_streamers")
    parser.add_argument("--servers", default="ab", help="which of a, b to run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streamers", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between updates")
    # Faster ramps starve a shared 2-core machine into Engine.IO ping timeouts while connecting.
    parser.add_argument("--ramp", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--workers", type=int, default=2, help="Node.js load processes")
    parser.add_argument("--settle", type=float, default=5, help="seconds after connecting")
    parser.add_argument("--idle", type=float, default=25, help="idle window (one ping cycle)")
    parser.add_argument("--warm", type=float, default=10, help="seconds of load before measuring")
    parser.add_argument("--window", type=float, default=20, help="measured load, seconds")
    parser.add_argument("--monitor", action="store_true", help="one all-streams monitor too")
    parser.add_argument("--viewers", type=int, default=0, help="viewers sending beacons too")
    parser.add_argument(
        "--viewer-interval", type=float, default=10.0, help="seconds between a viewer's beacons"
    )
    parser.add_argument("--log", default="/tmp/bench_streamers.log")
    parser.add_argument("--py-spy", metavar="DIR", help="profile the windows (raw py-spy stacks)")
    args = parser.parse_args()
    raise_fd_limit()  # inherited by the servers and the load generators
    log = Path(args.log)
    runs: list[dict[str, dict[str, Any]]] = []
    for number in range(1, args.runs + 1):
        run: dict[str, dict[str, Any]] = {}
        for key in args.servers:
            r = run[key] = run_server(key, args, log, number)
            print(
                f"run {number} ({key}) {SERVERS[key][0]}: connected {r['connected']} "
                f"(refused {r['refused']}, failed {r['connectFailed']}, "
                f"closed early {r['closedEarly']}, close codes {r['closeCodes']}); "
                f"idle: CPU {r['idle_cpu']:.1%}, "
                f"RSS {r['idle_rss'] / 2**20:.0f} MiB (load avg {r['load_idle']:.1f}); "
                f"load: {r['throughput']:,.0f}/s of {r['offered']:,.0f}/s offered, "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms, "
                f"CPU {r['load_cpu']:.0%} (load avg {r['load_window']:.1f}); "
                f"unanswered {r['unanswered']}, errors {r['errors']}"
                + (
                    f"; stored {r['stored']}, acknowledged but not stored {r['acked_missing']}, "
                    f"duplicate acks {r['duplicate']}, stored unacknowledged {r['stored_unacked']}"
                    if "stored" in r
                    else ""
                )
                + (f"; monitor received {r['monitorEvents']}" if args.monitor else "")
                + (viewer_line(r["viewer"]) if args.viewers else ""),
                flush=True,
            )
        runs.append(run)

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in runs)

    print(f"\nmedians of {args.runs} runs, {args.streamers} streamers")
    print(
        f"  {'server':<26} {'idle CPU':>8} {'idle RSS':>9} {'updates/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'load CPU':>8} {'load avg':>8}"
    )
    for key in args.servers:
        print(
            f"  ({key}) {SERVERS[key][0]:<22} {med(key, 'idle_cpu'):>8.1%} "
            f"{med(key, 'idle_rss') / 2**20:>5.0f} MiB {med(key, 'throughput'):>9,.0f} "
            f"{med(key, 'p50_ms'):>8.1f} {med(key, 'p99_ms'):>8.1f} {med(key, 'load_cpu'):>8.0%} "
            f"{med(key, 'load_window'):>8.1f}"
        )
    if args.viewers:
        print(f"  viewers ({args.viewers} at one beacon per {args.viewer_interval:g} s)")
        print(f"  {'server':<26} {'beacons/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for key in args.servers:
            print(
                f"  ({key}) {SERVERS[key][0]:<22} "
                f"{statistics.median(r[key]['viewer']['throughput'] for r in runs):>9,.0f} "
                f"{statistics.median(r[key]['viewer']['p50_ms'] for r in runs):>8.1f} "
                f"{statistics.median(r[key]['viewer']['p99_ms'] for r in runs):>8.1f}"
            )
    if "b" in args.servers:
        lost = [r["b"]["acked_missing"] for r in runs]
        dups = [r["b"]["duplicate"] for r in runs]
        unanswered = [r["b"]["unanswered"] for r in runs]
        print(
            f"  (b) per run: acknowledged but not stored {lost}; duplicate acks {dups}; "
            f"unanswered at the end {unanswered}"
        )


if __name__ == "__main__":
    main()
