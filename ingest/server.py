"""`streamstats serve`: the ingest app under uvicorn; shutdown acknowledges what it accepted.

On SIGTERM/SIGINT the app is drained first — no new updates, the writer flushes, every accepted
update gets its acknowledgement — while the sockets are still open; only then does uvicorn close
connections and run the lifespan shutdown. A second SIGINT forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import Protocol

import uvicorn

from ingest.transport import uvicorn_config
from streamstats.settings import Settings

logger = logging.getLogger(__name__)

# The whole shutdown must end within 10 s: drain, then uvicorn's own connection close. A drain
# cut short cancels the writer's close(), which then still stops its tasks, returns its
# connection and answers every waiting update (at most 2 x writer.STOP_WAIT = 1 s more).
DRAIN_TIMEOUT = 6.0
GRACEFUL_CLOSE = 2


class Drainable(Protocol):
    async def drain(self) -> None:
        """Answer everything accepted; refuse new work at once."""
        ...


class IngestServer(uvicorn.Server):
    """uvicorn.Server whose exit signal first drains the app, then stops serving."""

    def __init__(self, config: uvicorn.Config, app: Drainable):
        super().__init__(config)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's default: it would close the sockets at once and re-raise the signal
        # afterwards; a drained server exits with status 0.
        if self._drain_task is not None or self.should_exit:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        logger.info("%s received: draining", signal.Signals(sig).name, extra={"action": "shutdown"})
        if self._loop is None or not self.started:
            self.should_exit = True
            return
        # Signal handlers run between bytecodes; start the drain from the loop itself.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain(), name="drain")

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self.app.drain(), DRAIN_TIMEOUT)
            logger.info("drained", extra={"action": "drained"})
        except TimeoutError:
            logger.error(
                "drain did not finish within %.0fs",
                DRAIN_TIMEOUT,
                extra={"action": "drain_timeout"},
            )
        except Exception:
            logger.exception("drain failed", extra={"action": "drain_failed"})
        finally:
            self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            for server in getattr(self, "servers", []):
                for sock in server.sockets or ():
                    host, port = sock.getsockname()[:2]
                    logger.info(
                        "listening on http://%s:%s",
                        host,
                        port,
                        extra={"action": "listening", "host": host, "port": port},
                    )


async def serve(settings: Settings) -> None:
    """Run the ingest service until SIGTERM/SIGINT, then drain and exit."""
    settings.require_jwt_secret()
    from ingest.app import create_app

    app = create_app(settings)
    config = uvicorn_config(
        app.asgi,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_CLOSE,
    )
    await IngestServer(config, app).serve()
