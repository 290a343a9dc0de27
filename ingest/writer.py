"""The batch writer: a bounded queue of rows, flushed to TimescaleDB one transaction a batch.

Promise: a row's future resolves only after the transaction holding it committed (`True` when
the row was already stored), and fails with `Unavailable` when it could not be committed within
`write_timeout`. Rows are flushed every `batch_ms` or `batch_rows`, whichever comes first.

A batch is one statement (the target's query, e.g. `write_batch`), prepared when the
connection is taken and sent without a transaction block: PostgreSQL runs it as its own
transaction and commits it before it answers, so a flush is one round trip (Bind, Execute,
Sync) — one wait for a turn of a busy event loop instead of three (BEGIN, the statement,
COMMIT). An answer is a definite outcome:
rows returned means committed, an error means rolled back.

The one case no writer can make exact is an answer that never comes once the statement was
sent (the connection lost, or the rows' deadline passed while waiting): it may or may not have
committed. Such rows are kept and retried (the insert is idempotent on `(stream_id, time)`, so
a retry after a successful commit reports them as duplicates); rows whose deadline passes
meanwhile fail with an `Unavailable` whose message says the update may have been stored and
that resending is safe. "Nothing was stored" is said only of rows never sent, or refused.

A statement the database refuses leaves the connection usable (the transaction is rolled back).
A row it refuses for its values (a data exception or a violated constraint) fails alone with
`Invalid` — the batch is split until the refused rows are isolated, the others are stored. Any
other refusal (a missing table, a read-only standby after a failover, a deadlock) is retried
with backoff like an outage: the rows are stored once it passes, or fail `unavailable` at their
deadline, with nothing stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from ingest import metrics
from ingest.errors import Invalid, Overloaded, Unavailable
from ingest.rows import Committed
from streamstats.db import CONNECTION_ERRORS
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# Backoff between attempts while the database is unreachable.
BACKOFF_START = 0.05
BACKOFF_MAX = 0.5
# "Cannot keep up": rows wait longer than this share of write_timeout (counted from when the
# database was last reachable: a backlog left by an outage is not lag), or the queue is this full.
LAG_SHARE = 0.5
FULL_SHARE = 0.9
# Time a row must have left to be worth an attempt (an attempt normally takes milliseconds).
MIN_ATTEMPT = 0.25
# Batch size while the database is not known to be reachable: after an outage the first batch
# meets a cold database, and its commit is what brings readiness back.
RECOVERY_ROWS = 100
# How often waiting rows are checked for expiry at the latest.
EXPIRE_POLL = 0.25
# Longest close() waits for each piece of its cleanup once the flush loop is stopped.
STOP_WAIT = 0.5
# SQLSTATE classes of a row refused for its values: data exception, integrity violation.
_REFUSED_CLASSES = ("22", "23")
# SQLSTATE class of a transaction that lost a conflict (deadlock, serialization): retry at once.
_CONFLICT_CLASS = "40"

_MAYBE_STORED = (
    "the database did not confirm the write (connection lost or too slow while committing): "
    "the update may have been stored; resending it is safe (a stored update is acknowledged "
    "as duplicate)"
)
_NOT_STORED = "the database is unreachable: nothing was stored, retry later"
_REFUSED = "the database refused the update ({}): nothing was stored"


@dataclass(frozen=True)
class Target:
    """What a writer stores: the rows of one table, idempotently on their key.

    `query` is one statement (it runs as its own transaction) inserting a batch given one array
    per column (in the row's field order) and returning the keys of the rows it stored, as `key`
    makes them from a row; `probe` says whether the writer can store rows at all (reachable,
    writable, migrated).
    """

    query: str
    probe: str
    key: Callable[[Any], tuple[UUID, Any]]


# Stream samples (`stream:stats:update`) and viewer beacons (`stream:viewer:stats`).
STATS = Target("write_batch", "writer_probe", lambda row: (row.stream_id, row.time))
BEACONS = Target("write_beacons", "beacon_writer_probe", lambda row: (row.view_id, row.time))


class _Item(NamedTuple):
    row: Any
    future: asyncio.Future[bool]
    submitted: float  # loop time


class _OutcomeUnknown(Exception):
    """The batch statement was sent, and its answer never came: it may have committed."""


# Errors after which a batch is retried (a statement error is retried too unless it refuses rows).
_RETRYABLE: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    _OutcomeUnknown,
    asyncpg.PostgresError,
)


OnCommit = Callable[[list[Committed]], None]


class BatchWriter:
    """Accepts rows (`submit`) and stores them in batches; see the module docstring.

    `on_commit(batch)` is called once per committed transaction, in commit order, right after
    the batch's futures are resolved, with its rows in submission order (each with its duplicate
    flag). It runs in the flush loop: it must not block, and what it raises is only logged.
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        on_commit: OnCommit | None = None,
        target: Target = STATS,
    ):
        self.settings = settings
        self.pool = pool
        self.target = target
        self._key = target.key
        self.on_commit = on_commit
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        # The batch statement, prepared on self._conn (None: prepare before the next flush).
        self._statement: Any = None
        # The batch whose statement is waiting for its answer (rows expire from it too).
        self._in_flight: list[_Item] = []
        self._closing = False
        self._closed = False
        self._db_ok = True
        self._down_reason = "the database is unreachable"
        # When the database was last found reachable again after an outage (loop time).
        self._reachable_since = float("-inf")
        self._last_commit = float("-inf")
        # A deadlock / serialization episode in progress (logged once, health unaffected).
        self._conflicting = False
        # Rows whose last attempt got no answer once sent: they may be stored already.
        self._uncertain: set[tuple[UUID, Any]] = set()
        self._batch_s = settings.batch_ms / 1000
        self._timeout_s = settings.write_timeout.total_seconds()
        self._margin = min(MIN_ATTEMPT, self._timeout_s / 4)
        self._sql = queries[target.query]
        self.rows_written = 0
        self.duplicates = 0
        self.batches = 0
        self.failures = 0
        self.expired = 0
        self.refused = 0
        self._expired_logged = 0
        self._expired_log_at = float("-inf")
        self._expirer: asyncio.Task[None] | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Rows waiting to be committed (including a batch being retried)."""
        return len(self._queue)

    def committed_within(self, seconds: float) -> bool:
        """Whether a batch committed in the last `seconds`: the database answers and stores."""
        return asyncio.get_running_loop().time() - self._last_commit <= seconds

    @property
    def healthy(self) -> bool:
        """False while the database is unreachable or rows wait too long / the queue fills."""
        return self.problem is None

    @property
    def problem(self) -> str | None:
        """Why the writer is not healthy (for /readyz), or None."""
        if not self._db_ok:
            return self._down_reason
        if len(self._queue) >= FULL_SHARE * self.settings.queue_rows:
            return f"the write queue is full ({len(self._queue)} of {self.settings.queue_rows})"
        if self._queue:
            now = asyncio.get_running_loop().time()
            waited = now - max(self._queue[0].submitted, self._reachable_since)
            if waited > LAG_SHARE * self._timeout_s:
                return (
                    f"not keeping up: the oldest of {len(self._queue)} queued rows has waited "
                    f"{waited:.1f} s (limit {LAG_SHARE * self._timeout_s:.1f} s)"
                )
        return None

    async def start(self) -> None:
        """Start the flush loop."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="batch-writer")
            self._task.add_done_callback(self._loop_ended)
            self._expirer = asyncio.create_task(self._expire_loop(), name="batch-writer-expiry")

    def submit(self, row: Any) -> asyncio.Future[bool]:
        """Queue a row; the future says `True` if it was already stored, once committed."""
        if self._closing:
            raise Unavailable("the server is shutting down: nothing was stored, retry later")
        if len(self._queue) >= self.settings.queue_rows:
            raise Overloaded("the write queue is full: nothing was stored, retry later")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.append(_Item(row, future, loop.time()))
        # Wake the loop only when it has something new to decide: a first row starts the
        # batch timer, a full batch flushes at once.
        size = len(self._queue)
        if size == 1 or size == self.settings.batch_rows:
            self._wakeup.set()
        return future

    async def close(self) -> None:
        """Stop taking rows, flush what was accepted (each row within its deadline), resolve all.

        Idempotent, and cleans up even when cancelled (a drain cut short): the loop, the expiry
        task and the connection are gone and every row is resolved once it returns or raises.
        """
        self._closing = True
        self._wakeup.set()
        try:
            task = self._task
            if task is not None and not task.done():
                # Each row resolves by its deadline, so the loop ends within write_timeout.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), self._timeout_s + 1)
        finally:
            await self._stop()

    async def _stop(self) -> None:
        """Cancel the loop and the expiry task, give the connection back, fail what is left."""
        tasks = [task for task in (self._task, self._expirer) if task is not None]
        self._task = self._expirer = None
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that ignores cancellation must not hold the shutdown; whatever
            # it puts back into the queue afterwards is failed when it ends.
            await asyncio.wait(tasks, timeout=STOP_WAIT)
            for task in tasks:
                if not task.done():
                    task.add_done_callback(lambda _: self._fail_queue())
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self.pool.release(conn, timeout=STOP_WAIT)
            except Exception:
                conn.terminate()
        self._fail_queue()
        if not self._closed:
            self._closed = True
            logger.info(
                "batch writer closed",
                extra={
                    "action": "writer_closed",
                    "rows": self.rows_written,
                    "batches": self.batches,
                },
            )

    def _fail_queue(self) -> None:
        # Only reachable if the loop was cancelled or died: nothing may stay unresolved.
        while self._queue:
            self._fail_waiting(self._queue.popleft())

    # -- the loop ------------------------------------------------------------------------

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Readiness must tell: nothing would be written any more.
            self._db_ok = False
            logger.error(
                "batch writer stopped",
                exc_info=task.exception(),
                extra={"action": "writer_crashed"},
            )

    async def _run(self) -> None:
        backoff = BACKOFF_START
        while True:
            await self._wait_for_batch()
            if not self._queue:
                if self._closing:
                    return
                continue
            try:
                # Connecting commits nothing, so it is not bounded by the rows' deadlines (they
                # expire on their own meanwhile): after an outage the first connection may be
                # slower than the time the oldest waiting row has left.
                await self._connect()
            except CONNECTION_ERRORS as exc:
                await self._drop_connection()
                self._mark_unreachable(exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except asyncpg.PostgresError as exc:
                # Reachable, but the statement cannot be prepared (an unmigrated database).
                self._retry_later([], exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            # A row about to expire could only make the attempt time out (and, with a steady
            # backlog, every following one too): fail it now, it was never sent.
            self._expire(margin=self._margin)
            if not self._queue:
                continue
            batch = self._take()
            try:
                await self._store(batch)
            except _RETRYABLE as exc:
                self._retry_later(batch, exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except asyncio.CancelledError:
                self._requeue(batch)
                raise
            except Exception:
                # A bug, not the database: the rows not resolved were not committed (a commit
                # resolves its rows first); fail them rather than retry them forever.
                logger.exception("batch write failed", extra={"action": "writer_error"})
                for item in batch:
                    self._fail_waiting(item)
            backoff = BACKOFF_START
            self._mark_reachable()

    async def _expire_loop(self) -> None:
        """Fail waiting rows at their deadline, whatever the flush loop is busy with."""
        loop = asyncio.get_running_loop()
        while True:
            pause = EXPIRE_POLL
            for waiting in (self._queue, self._in_flight):
                if waiting:
                    until = waiting[0].submitted + self._timeout_s - loop.time()
                    pause = min(pause, max(until, 0.0))
            await asyncio.sleep(pause)
            self._expire()

    async def _wait_for_batch(self) -> None:
        """Return when a batch is due: oldest row waited batch_ms, batch full, or closing."""
        loop = asyncio.get_running_loop()
        while not self._queue and not self._closing:
            self._wakeup.clear()
            if self._db_ok:
                await self._wakeup.wait()
            else:
                # Idle during an outage: probe, so health recovers without traffic.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), BACKOFF_MAX)
                if not self._queue:
                    await self._probe()
        while self._queue and len(self._queue) < self.settings.batch_rows and not self._closing:
            remaining = self._queue[0].submitted + self._batch_s - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def _connect(self) -> None:
        """Hold a connection with the batch statement prepared on it (neither commits anything)."""
        async with asyncio.timeout(self._timeout_s):
            # One connection kept between batches: a pool release costs a reset round trip.
            if self._conn is None:
                self._conn = await self.pool.acquire()
                self._statement = None
            if self._statement is None:
                # Prepared once per connection, so that a flush is a single round trip.
                self._statement = await self._conn.prepare(self._sql)

    def _take(self) -> list[_Item]:
        batch_rows = self.settings.batch_rows
        count = min(len(self._queue), batch_rows if self._db_ok else min(RECOVERY_ROWS, batch_rows))
        return [self._queue.popleft() for _ in range(count)]

    async def _store(self, batch: list[_Item]) -> None:
        """Flush a batch; if the database refuses rows of it, split it until they are isolated."""
        try:
            await self._flush(batch)
        except asyncpg.PostgresError as exc:
            if not _refuses_rows(exc):
                raise
            if len(batch) == 1:
                self._refuse(batch[0], exc)
                return
            # Halves, oldest first: a few bad rows cost a few transactions, not one per row.
            half = len(batch) // 2
            await self._store(batch[:half])
            await self._store(batch[half:])

    async def _flush(self, batch: list[_Item]) -> None:
        """Write one batch in one statement (its own transaction) and resolve its futures."""
        # Rows repeated within the batch: the first is written, the others are duplicates of it.
        first: dict[tuple[UUID, Any], _Item] = {}
        for item in batch:
            first.setdefault(self._key(item.row), item)
        # In key order: writers on several nodes then take row locks in one order, so inserting
        # overlapping rows (a client resending to another node) waits instead of deadlocking.
        rows = [first[key].row for key in sorted(first)]
        columns = [list(column) for column in zip(*rows, strict=True)]

        started = time.perf_counter()
        inserted = await self._write(batch, columns, first.keys())
        elapsed = time.perf_counter() - started

        # asyncpg's UUID hashes and compares like uuid.UUID.
        stored = {(r[0], r[1]) for r in inserted}
        committed: list[Committed] = []
        for item in batch:
            key = self._key(item.row)
            duplicate = first[key] is not item or key not in stored
            self._resolve(item, duplicate)
            committed.append(Committed(item.row, duplicate))
        self._uncertain.difference_update(first)
        self.batches += 1
        self._last_commit = asyncio.get_running_loop().time()
        self.rows_written += len(stored)
        self.duplicates += len(batch) - len(stored)
        self._conflicting = False
        metrics.flushed(len(batch), elapsed)
        if self.on_commit is not None:
            try:
                self.on_commit(committed)
            except Exception:
                # The rows are committed and answered: a failing hook must not touch them.
                logger.exception("on_commit failed", extra={"action": "hook_error"})

    async def _write(
        self, batch: list[_Item], columns: list[list[Any]], keys: Iterable[tuple[UUID, Any]]
    ) -> list[Any]:
        """Send the batch statement and wait for its answer: one round trip, one transaction."""
        # Waiting ends when no row of the batch could be acknowledged any more; meanwhile the
        # expiry task fails each row at its own deadline, as maybe stored.
        deadline = batch[-1].submitted + self._timeout_s
        sent = False
        try:
            async with asyncio.timeout_at(deadline):
                conn, statement = self._conn, self._statement
                # A connection the pool detached after a loss raises here: nothing was sent.
                if conn is None or statement is None or conn.is_closed():
                    raise ConnectionResetError("no connection")
                sent = True
                self._in_flight = batch
                inserted: list[Any] = await statement.fetch(*columns)
                return inserted
        except asyncpg.PostgresError as exc:
            if isinstance(exc, CONNECTION_ERRORS):
                await self._lost(sent, exc, keys)
            elif not _refuses_rows(exc):
                # Refused (rolled back), the connection is fine; the statement is prepared
                # again in case that is what the server objects to (a changed table).
                self._statement = None
            raise
        except BaseException as exc:
            await self._lost(sent, exc, keys)
            raise
        finally:
            self._in_flight = []

    async def _lost(self, sent: bool, exc: BaseException, keys: Iterable[tuple[UUID, Any]]) -> None:
        """An attempt ended without an answer: drop the connection; once sent, it is unknown."""
        # Never reuse a connection in an unknown state; terminating it also makes the
        # server abort the statement if it has not committed yet.
        await self._drop_connection()
        if sent:
            # The statement may have committed: these rows may be stored already.
            self._uncertain.update(keys)
            # Cancellation (close() stopping the loop) stays cancellation.
            if not isinstance(exc, asyncio.CancelledError):
                raise _OutcomeUnknown(str(exc) or type(exc).__name__) from exc

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._statement = None
        if conn is None:
            return
        # A lost connection is already detached from its pool proxy: calls on it then raise.
        with contextlib.suppress(Exception):
            conn.terminate()
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    def _refuse(self, item: _Item, exc: BaseException) -> None:
        """The database refuses this row for its values: resending it would not help."""
        self.refused += 1
        # Refused now, so it was not stored by an earlier attempt with an unknown outcome.
        self._uncertain.discard(self._key(item.row))
        logger.warning(
            "row refused by the database: %s",
            _describe(exc),
            extra={"action": "writer_refused", "stream_id": str(item.row.stream_id)},
        )
        if not item.future.done():
            # A refusal that names the protocol field (viewer beacons' checks) says which.
            field = getattr(exc, "column_name", None)
            message = _describe(exc) if field else _REFUSED.format(_describe(exc))
            item.future.set_exception(Invalid(message, field=field))
            item.future.exception()

    # -- outages ---------------------------------------------------------------------------

    def _retry_later(self, batch: list[_Item], exc: BaseException) -> None:
        self.failures += 1
        self._requeue(batch)
        if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, CONNECTION_ERRORS):
            if exc.sqlstate.startswith(_CONFLICT_CLASS):
                self._mark_conflict(exc)
            else:
                self._mark_refusing(exc)
        else:
            self._mark_unreachable(exc)

    def _mark_unreachable(self, exc: BaseException) -> None:
        if self._db_ok:
            self._db_ok = False
            self._down_reason = f"the database is unreachable ({_describe(exc)})"
            logger.warning(
                "database unreachable, retrying: %s",
                str(exc) or type(exc).__name__,
                extra={"action": "writer_unavailable", "depth": len(self._queue)},
            )

    def _mark_refusing(self, exc: asyncpg.PostgresError) -> None:
        # Not a row's fault (unmigrated database, read-only standby, missing privilege): no
        # row can be stored, so readiness says so until a batch commits.
        if self._db_ok:
            self._db_ok = False
            self._down_reason = f"the database refuses writes ({_describe(exc)})"
            logger.warning(
                "database refuses writes, retrying: %s",
                _describe(exc),
                extra={"action": "writer_unavailable", "depth": len(self._queue)},
            )

    def _mark_conflict(self, exc: asyncpg.PostgresError) -> None:
        # Another transaction won a conflict: a retry normally succeeds, readiness unaffected.
        if not self._conflicting:
            self._conflicting = True
            logger.warning(
                "batch write conflicted, retrying: %s",
                _describe(exc),
                extra={"action": "writer_conflict", "depth": len(self._queue)},
            )

    def _mark_reachable(self) -> None:
        if not self._db_ok:
            self._db_ok = True
            self._reachable_since = asyncio.get_running_loop().time()
            logger.info("database reachable again", extra={"action": "writer_recovered"})

    def _requeue(self, batch: list[_Item]) -> None:
        # Back to the front in their order, oldest first: the queue stays ordered by deadline.
        # Rows already resolved (committed, refused) are not retried.
        self._queue.extendleft(reversed([item for item in batch if not item.future.done()]))

    def _expire(self, margin: float = 0.0) -> None:
        """Fail rows that waited write_timeout (less margin); the queue is ordered by deadline.

        Rows of the batch waiting for its answer expire too, as maybe stored: it was sent.
        """
        if not self._queue and not self._in_flight:
            return
        now = asyncio.get_running_loop().time()
        limit = now - self._timeout_s + margin
        while self._queue and self._queue[0].submitted <= limit:
            self._fail_waiting(self._queue.popleft())
            self.expired += 1
        for item in self._in_flight:
            if item.submitted > limit:
                break
            if not item.future.done():
                self._fail(item, _MAYBE_STORED)
                self.expired += 1
        # One line a second at most, however many rows expire.
        if self.expired > self._expired_logged and now - self._expired_log_at >= 1:
            logger.warning(
                "%d updates not stored within %.1fs (%d in all)",
                self.expired - self._expired_logged,
                self._timeout_s,
                self.expired,
                extra={"action": "writer_expired", "rows": self.expired - self._expired_logged},
            )
            self._expired_logged, self._expired_log_at = self.expired, now

    async def _sleep(self, seconds: float) -> None:
        """Back off before the next attempt (rows keep expiring meanwhile)."""
        await asyncio.sleep(seconds)

    async def _probe(self) -> None:
        try:
            await self._connect()
            async with asyncio.timeout(self._timeout_s):
                writable = await self._conn.fetchval(queries[self.target.probe])
        except CONNECTION_ERRORS:
            await self._drop_connection()
            return
        except asyncpg.PostgresError:
            return
        # Reachable is not enough: a standby or an unmigrated database answers too.
        if writable:
            self._mark_reachable()

    # -- futures ---------------------------------------------------------------------------

    @staticmethod
    def _resolve(item: _Item, duplicate: bool) -> None:
        if not item.future.done():
            item.future.set_result(duplicate)

    def _fail_waiting(self, item: _Item) -> None:
        """Fail a row that will not be attempted again, saying whether it may be stored."""
        key = self._key(item.row)
        if key in self._uncertain:
            self._uncertain.discard(key)
            self._fail(item, _MAYBE_STORED)
        else:
            self._fail(item, _NOT_STORED)

    @staticmethod
    def _fail(item: _Item, message: str) -> None:
        if not item.future.done():
            item.future.set_exception(Unavailable(message))
            # Nobody may be waiting any more (the client left): don't log "never retrieved".
            item.future.exception()


def _refuses_rows(exc: asyncpg.PostgresError) -> bool:
    """Whether the error is about the rows' values (so other rows of the batch may be fine)."""
    # asyncpg reports an argument it cannot encode (an int4 out of range) as class 22 too.
    return not isinstance(exc, CONNECTION_ERRORS) and exc.sqlstate[:2] in _REFUSED_CLASSES


def _describe(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
