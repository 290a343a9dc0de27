"""The stack under the ingest app: uvicorn's websocket settings, the event loop, the collector.

One place, shared by `streamstats serve` and bench/noop_server.py, so the benchmark's baseline
runs on exactly the stack it is compared with. Each choice was measured with thousands of
connections on one process (bench/RESULTS.md, "Server tuning").
"""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import uvicorn
import uvloop

T = TypeVar("T")

# The cyclic collector's default (700, 10, 10) runs a full collection over every live object each
# time a quarter more have survived two collections. Thousands of connections are millions of
# long-lived objects, and every update leaves a few that outlive a batch window, so the defaults
# spent seconds per full collection and most of the process's CPU at 10,000 connections. Young
# collections every 50,000 allocations, full ones about 40 times rarer: cycles are still freed.
GC_THRESHOLDS = (50_000, 20, 100)


def engineio_options(ping_interval: timedelta, ping_timeout: timedelta) -> dict[str, Any]:
    """python-engineio's settings: the keepalive, and no monitor task.

    The monitor task woke every ping_timeout / sockets (every 2 ms at 10,000 connections) to
    look at one socket; the app's connection sweep (ingest/guard.py) checks the ping timeouts
    instead, every few seconds.
    """
    return {
        "ping_interval": ping_interval.total_seconds(),
        "ping_timeout": ping_timeout.total_seconds(),
        "monitor_clients": False,
    }


def uvicorn_config(app: Any, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for a Socket.IO server holding thousands of small-message sockets."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        # Engine.IO already pings every socket (and clients expect its pings): one keepalive per
        # socket, not a websocket-level ping on top of it.
        ws_ping_interval=None,
        # Messages are a few hundred bytes: compressing them costs CPU on every frame and two
        # zlib contexts (~40 KiB) per connection for next to no bandwidth.
        ws_per_message_deflate=False,
        access_log=False,
        **options,
    )


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run the server's coroutine on uvloop, with the collector tuned for many connections."""
    gc.set_threshold(*GC_THRESHOLDS)
    # What is loaded by now (modules, settings) lives as long as the process: never scan it.
    gc.freeze()
    return uvloop.run(main)
