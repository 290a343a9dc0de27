"""What dashboards cost the ingest path: throughput with N digest subscribers against none.

Each run starts `streamstats serve` twice on a fresh database, (n) with no dashboard and (d)
with `--subscribers` all-streams monitors subscribed to `stream:stats:digest` (python-socketio
clients in a process of their own, counting what they receive), in alternating order, and drives
both with bench/bench_ingest.py's load generator (same connections, payloads and phases). The
figure is the ratio of the medians over the runs, (d)/(n), measured in the same invocation.

    .venv/bin/python bench/bench_digest.py --runs 3 --subscribers 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_ingest  # noqa: E402

from ingest.auth import mint_token  # noqa: E402


async def subscribers(url: str, count: int, interval: int) -> None:
    """Connect `count` digest subscribers, say "ready", count digests until stdin closes."""
    import socketio

    counts = {"digests": 0, "items": 0}
    clients = []
    token = mint_token(bench_ingest.SECRET, role="moderator", sub="bench-dashboard", ttl=3600)

    def received(digest: dict[str, Any]) -> None:
        counts["digests"] += 1
        counts["items"] += len(digest["streams"])

    for _ in range(count):
        client = socketio.AsyncClient(reconnection=False)
        client.on("stream:stats:digest", received)
        client.on("stream:stats:update", lambda data: counts.__setitem__("updates", 1))
        await client.connect(url, auth={"token": token}, transports=["websocket"])
        answer = await client.call("stream:stats:digest:subscribe", {"interval": interval})
        assert answer["ok"], answer
        clients.append(client)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(counts), flush=True)
    for client in clients:
        await client.disconnect()


def start_subscribers(url: str, count: int, interval: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--subscriber-process", json.dumps([url, count, interval])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("digest subscribers did not connect")
    return proc


def stop_subscribers(proc: subprocess.Popen[bytes]) -> dict[str, int]:
    stdout, _ = proc.communicate(b"\n", timeout=60)
    return json.loads(stdout.decode().strip().splitlines()[-1])


def run_variant(with_digests: bool, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    asyncio.run(bench_ingest.reset_database(args.database))
    proc, url = bench_ingest.start_server("b", args, log)
    subs = start_subscribers(url, args.subscribers, args.interval) if with_digests else None
    try:
        result: dict[str, Any] = {}
        for mode in args.modes:
            started = time.monotonic()
            result[mode] = bench_ingest.phase(url, mode, args, proc.pid, 0)
            result[mode]["seconds"] = time.monotonic() - started
            result[mode].pop("acked", None)
        if subs is not None:
            result["subscribers"] = stop_subscribers(subs)
    finally:
        if subs is not None and subs.poll() is None:
            subs.kill()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriber-process", help=argparse.SUPPRESS)
    parser.add_argument("--database", default="postgresql:///streamstats_bench_ingest")
    parser.add_argument("--subscribers", type=int, default=5)
    parser.add_argument("--interval", type=int, default=1000, help="digest interval, ms")
    parser.add_argument("--modes", nargs="+", default=["max", "rate"], choices=["max", "rate"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100, help="max phase")
    parser.add_argument("--window", type=int, default=8, help="updates in flight per connection")
    parser.add_argument("--rate", type=float, default=2000, help="rate phase: events/s offered")
    parser.add_argument("--rate-connections", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--log", default="/tmp/bench_digest.log")
    args = parser.parse_args()
    if args.subscriber_process:
        url, count, interval = json.loads(args.subscriber_process)
        asyncio.run(subscribers(url, count, interval))
        return
    log = Path(args.log)
    runs: dict[str, list[dict[str, Any]]] = {"n": [], "d": []}
    for run in range(args.runs):
        # Alternate the order, so neither variant always gets the warmer machine.
        for key in ("n", "d") if run % 2 == 0 else ("d", "n"):
            result = run_variant(key == "d", args, log)
            runs[key].append(result)
            summary = {m: round(result[m]["throughput"]) for m in args.modes}
            print(f"run {run + 1} ({key}): events/s {summary} {result.get('subscribers', '')}")
            sys.stdout.flush()
    print()
    for mode in args.modes:
        for metric in ("throughput", "p50_ms", "p99_ms", "cpu_ms_per_event"):
            none = statistics.median(r[mode][metric] for r in runs["n"])
            digest = statistics.median(r[mode][metric] for r in runs["d"])
            print(
                f"{mode:4} {metric:16} no dashboard {none:9.2f}  "
                f"{args.subscribers} digest subscribers {digest:9.2f}  ratio {digest / none:.3f}"
            )
    for result in runs["d"]:
        subs = result["subscribers"]
        seconds = sum(result[m]["seconds"] for m in args.modes)
        print(
            f"digests per subscriber per second: {subs['digests'] / args.subscribers / seconds:.2f}"
            f"  (stream items per digest {subs['items'] / max(subs['digests'], 1):.0f};"
            f" per-sample broadcasts received: {'some' if subs.get('updates') else 'none'})"
        )


if __name__ == "__main__":
    main()
