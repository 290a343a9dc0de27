"""Baseline (a): a python-socketio server that acknowledges every update without storing it.

The ceiling of the framework on this machine: the same uvicorn/websocket stack, event loop and
collector settings as `streamstats serve` (ingest/transport.py), no auth, no validation, no
database.

    .venv/bin/python bench/noop_server.py --port 8101
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvicorn

from ingest.transport import engineio_options, run, uvicorn_config
from streamstats.settings import PING_INTERVAL, PING_TIMEOUT

sio = socketio.AsyncServer(
    async_mode="asgi",
    cors_allowed_origins="*",
    **engineio_options(PING_INTERVAL, PING_TIMEOUT),
)


@sio.on("stream:stats:update")
async def update(sid: str, data: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "streamId": data.get("streamId"),
        "timestamp": data.get("timestamp"),
        "quality": None,
        "duplicate": False,
    }


@sio.on("stream:viewer:stats")
async def beacon(sid: str, data: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "streamId": data.get("streamId"),
        "viewId": data.get("viewId"),
        "timestamp": data.get("timestamp"),
        "duplicate": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    config = uvicorn_config(
        socketio.ASGIApp(sio), host=args.host, port=args.port, log_level="warning"
    )
    run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
