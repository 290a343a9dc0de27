"""Per-batch hooks: what runs after each committed batch (broadcasts, alerts, advice, …).

The writer calls `CommitHooks` once per committed transaction, in commit order (see
ingest/writer.py), right after the batch's futures are resolved. Each hook is called with the
batch at once, in the order hooks were added; a plain hook must not block (it queues its work).
`add_async` gives an async hook a `Lane`: its own task that runs it on one batch at a time, in
commit order, so a slow hook delays only itself and never the writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ingest.rows import Committed

logger = logging.getLogger(__name__)

Batch = list[Committed]
OnCommit = Callable[[Batch], None]
AsyncOnCommit = Callable[[Batch], Awaitable[None]]


class Lane:
    """Runs an async hook on each batch handed to it, one batch at a time, in order."""

    def __init__(self, hook: AsyncOnCommit, name: str):
        self.hook = hook
        self.name = name
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, batch: Batch) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"hook-{self.name}")
        self._queue.put_nowait(batch)

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await self.hook(batch)
            except Exception:
                # The rows are committed and answered whatever a hook does.
                logger.exception("%s hook failed", self.name, extra={"action": "hook_error"})
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Return once every batch handed over so far has been through the hook."""
        await self._queue.join()

    async def close(self) -> None:
        """Stop the lane; batches not run yet are dropped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class CommitHooks:
    """The writer's `on_commit`: hands each committed batch to every hook, in order."""

    def __init__(self) -> None:
        self._hooks: list[OnCommit] = []
        self._lanes: list[Lane] = []

    def add(self, hook: OnCommit) -> None:
        """A plain hook, called in the writer's loop: it must return at once."""
        self._hooks.append(hook)

    def add_async(self, hook: AsyncOnCommit, name: str) -> None:
        """An async hook, run on its own lane (one batch at a time, in commit order)."""
        lane = Lane(hook, name)
        self._lanes.append(lane)
        self._hooks.append(lane)

    def __call__(self, batch: Batch) -> None:
        for hook in self._hooks:
            try:
                hook(batch)
            except Exception:
                logger.exception("commit hook failed", extra={"action": "hook_error"})

    async def drain(self) -> None:
        """Wait until the async hooks have seen every batch committed so far."""
        await asyncio.gather(*(lane.drain() for lane in self._lanes))

    async def close(self) -> None:
        """Stop the async hooks' lanes."""
        for lane in self._lanes:
            await lane.close()
