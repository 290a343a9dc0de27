"""A TCP proxy in front of PostgreSQL that a test controls, to simulate database outages.

It runs its own event loop in a thread, so it keeps forwarding while the test blocks (e.g. in
`ServerProcess.start()`). Modes:
- `forward()`: normal operation;
- `cut()`: every open connection is reset and new ones are closed at once (the server is down);
- `hang()`: nothing moves in either direction and new connections get no answer (a partition).
  Connections from a hang are reset when forwarding resumes, as after a real partition that
  outlasted TCP's patience, so nothing written during the hang reaches the server later;
- `lose_next_answer(containing, then)`: the next message to the server that contains the bytes
  `containing` reaches it, but its connection is reset before the answer gets back, then the
  proxy switches to mode `then` — the one case where a client cannot know whether its
  transaction committed. `containing` is `b"COMMIT"` for an explicit transaction, or bytes of
  a parameter (a stream id) for a statement that commits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from collections.abc import Callable
from typing import Literal

Mode = Literal["forward", "cut", "hang"]


class TcpProxy:
    """`with TcpProxy("127.0.0.1", 5432) as proxy:` then `proxy.url(database_url)`."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432):
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode = "forward"
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._hung: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._trap: tuple[bytes, Mode] | None = None
        self._trapped: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.answers_lost = 0

    @classmethod
    def for_database(cls, database_url: str) -> TcpProxy:
        """A proxy to the TCP address of this database's server (127.0.0.1:5432 for socket URLs)."""
        parts = urllib.parse.urlsplit(database_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url(self, database_url: str) -> str:
        """The same database, reached through the proxy."""
        parts = urllib.parse.urlsplit(database_url)
        auth = ""
        if parts.username:
            auth = parts.username + (f":{parts.password}" if parts.password else "") + "@"
        netloc = f"{auth}127.0.0.1:{self.port}"
        # No SSL negotiation: asyncpg logs "Future exception was never retrieved" when a
        # connection attempt is cut during it, which is noise in an outage test.
        query = parts.query or "sslmode=disable"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    # -- control (from the test's thread) ---------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def forward(self) -> None:
        self._call(self._set_mode, "forward")

    def cut(self) -> None:
        self._call(self._set_mode, "cut")

    def hang(self) -> None:
        self._call(self._set_mode, "hang")

    def lose_next_answer(self, containing: bytes, then: Mode = "forward") -> None:
        def arm() -> None:
            self._trap = (containing, then)

        self._call(arm)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, func: Callable[..., None], *args: object) -> None:
        async def run() -> None:
            func(*args)

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- inside the proxy's loop -------------------------------------------------------------

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _set_mode(self, mode: Mode) -> None:
        assert self._flowing is not None
        previous, self.mode = self.mode, mode
        if mode == "forward":
            if previous == "hang":
                for link in list(self._hung):
                    self._reset(link)
            self._hung.clear()
            self._flowing.set()
        elif mode == "cut":
            self._flowing.set()
            for link in list(self._links):
                self._reset(link)
        else:
            self._flowing.clear()
            self._hung.update(self._links)

    def _reset(self, link: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        for writer in link:
            writer.transport.abort()
        self._links.discard(link)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        assert self._flowing is not None
        if self.mode == "cut":
            client_w.transport.abort()
            return
        try:
            await self._flowing.wait()
            if self.mode != "forward":
                client_w.transport.abort()
                return
            server_r, server_w = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):
            client_w.transport.abort()
            return
        link = (client_w, server_w)
        self._links.add(link)
        for reader, writer, upstream in ((client_r, server_w, True), (server_r, client_w, False)):
            task = asyncio.create_task(self._pump(reader, writer, link, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        upstream: bool,
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                # Data read just before a hang stays here; the link is reset when it ends.
                await self._flowing.wait()
                if not data or link not in self._links or link in self._hung:
                    break
                if link in self._trapped:
                    break
                trap = self._trap
                if upstream and trap is not None and trap[0] in data:
                    self._trap = None
                    then = trap[1]
                    self._trapped.add(link)  # the answer must not get back
                    self.answers_lost += 1
                    self.mode = then  # new connections already meet what follows
                    writer.write(data)
                    await writer.drain()
                    await asyncio.sleep(0.3)  # the server commits meanwhile
                    self._trapped.discard(link)
                    self._reset(link)
                    self._set_mode(then)
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._reset(link)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links | self._hung):
            self._reset(link)
        # Connections still waiting (in a hang, or connecting upstream) must end while the loop
        # runs: left pending, they are destroyed later with open sockets, in another test.
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()
