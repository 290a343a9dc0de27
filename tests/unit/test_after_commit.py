"""After-commit hooks run up to their first suspension in the handler, the rest in a task."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from ingest.app import IngestApp
from ingest.rows import StatsRow
from streamstats.settings import Settings

SETTINGS = Settings.model_validate(
    {"database_url": "postgresql:///unused", "jwt_secret": "unit-secret-" + "u" * 32}
)


def row(fps: float) -> StatsRow:
    return StatsRow(
        datetime.now(UTC), uuid.uuid4(), None, fps, None, None, None, None, None, None, None, "fair"
    )


async def test_hooks_observe_in_call_order_and_finish_in_tasks():
    app = IngestApp(SETTINGS)
    log: list[tuple[str, float]] = []

    async def hook(sample: StatsRow, duplicate: bool) -> None:
        log.append(("observed", sample.fps or 0))
        if (sample.fps or 0) % 2:  # odd samples suspend, like an alert transition
            await asyncio.sleep(0.01)
            await asyncio.sleep(0)
            log.append(("finished", sample.fps or 0))

    app.after_commit.append(hook)
    for fps in (1, 2, 3, 4):
        app._run_after_commit(row(fps), False)
    # Every sample was observed before this test awaited anything.
    assert log == [("observed", 1), ("observed", 2), ("observed", 3), ("observed", 4)]
    assert len(app._tasks) == 2  # only the hooks that suspended got a task
    await asyncio.gather(*list(app._tasks))
    assert log[4:] == [("finished", 1), ("finished", 3)]


async def test_a_failing_hook_is_logged_and_the_others_still_run(caplog):
    app = IngestApp(SETTINGS)
    ran: list[str] = []

    async def fails_at_once(sample: StatsRow, duplicate: bool) -> None:
        raise RuntimeError("boom")

    async def fails_later(sample: StatsRow, duplicate: bool) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("later")

    async def works(sample: StatsRow, duplicate: bool) -> None:
        ran.append("works")

    app.after_commit.extend([fails_at_once, fails_later, works])
    app._run_after_commit(row(30), False)
    await asyncio.gather(*list(app._tasks))
    assert ran == ["works"]
    failures = [r for r in caplog.records if r.getMessage() == "after-commit hook failed"]
    assert len(failures) == 2


async def test_a_cancelled_continuation_cancels_the_hook():
    app = IngestApp(SETTINGS)
    cancelled = asyncio.Event()

    async def waits(sample: StatsRow, duplicate: bool) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    app.after_commit.append(waits)
    app._run_after_commit(row(30), False)
    (task,) = app._tasks
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cancelled.is_set() and task.cancelled()
