"""Viewer experience rollups are exact: every row equals a recomputation from the beacons stored.

The beacons of random playbacks reach the database as a real network delivers them: some lost,
some resent, some late (after beacons stamped later), in batches, with refreshes in between. The
expected rows are recomputed here, in Python, from the beacons that were stored, with the
definitions of docs/analysts.md (analytics/viewer.py holds the score).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analytics.viewer import Experience, ViewActivity, experience, view_score
from ingest.beacon import BeaconRow
from ingest.errors import Invalid
from ingest.writer import BEACONS, BatchWriter
from jobs import rollups
from streamstats import db
from streamstats.sql import queries

STREAMS = [uuid.UUID(int=n) for n in (1, 2)]
# Just before a UTC midnight: playbacks cross minutes, an hour and a day.
BASE = datetime(2026, 3, 10, 23, 57, tzinfo=UTC)
VIEWS = {
    "viewer_experience_1m": "minute",
    "viewer_experience_1h": "hour",
    "viewer_experience_1d": "day",
}
COLUMNS = tuple(Experience.__dataclass_fields__)


# --- playbacks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What happened between two beacons of a playback."""

    gap_s: int
    watch_share: float  # of the gap; the rest stalled (with `stalled`), else idle
    stalled: bool
    switch_up: bool
    switch_down: bool


def playback(
    view: uuid.UUID, stream: uuid.UUID, start_s: int, steps: list[Step], startup: float, ending: str
) -> list[BeaconRow]:
    """A valid playback's beacons: cumulative counters, never more time than passed."""
    rows = []
    t = BASE + timedelta(seconds=start_s)
    watch = stall = 0.0
    stalls = up = down = 0
    rows.append(_row(t, view, stream, "starting", None, 0, 0, 0, 0, 0))
    started = None
    for i, step in enumerate(steps):
        t += timedelta(seconds=step.gap_s)
        budget = step.gap_s * 1000.0
        if started is None:
            started = min(startup, budget)
            budget -= started
        watch += round(budget * step.watch_share, 1)
        if step.stalled:
            stalls += 1
            stall += round(budget * (1 - step.watch_share), 1)
        up += step.switch_up
        down += step.switch_down
        last = i == len(steps) - 1
        state = ending if last else ("stalled" if step.stalled else "playing")
        startup_ms = None if state == "failed" and i == 0 else started
        if state == "failed" and i == 0:
            watch = stall = 0.0
            stalls = up = down = 0
        rows.append(_row(t, view, stream, state, startup_ms, watch, stalls, stall, up, down))
    return rows


def _row(t, view, stream, state, startup, watch, stalls, stall, up, down) -> BeaconRow:
    error = ("MEDIA_ERR_NETWORK", "gone") if state == "failed" else (None, None)
    return BeaconRow(
        t, view, stream, state, startup, watch, stalls, stall, up, down, 800.0, 640, 360, *error
    )


steps_st = st.lists(
    st.builds(
        Step,
        gap_s=st.integers(3, 50),
        watch_share=st.sampled_from([1.0, 0.9, 0.5, 0.0]),
        stalled=st.booleans(),
        switch_up=st.booleans(),
        switch_down=st.booleans(),
    ),
    min_size=1,
    max_size=8,
)
playbacks_st = st.lists(
    st.tuples(
        st.sampled_from(STREAMS),
        st.integers(0, 300),
        steps_st,
        st.sampled_from([300.0, 1800.0, 9000.0]),
        st.sampled_from(["playing", "ended", "failed", "paused"]),
    ),
    min_size=1,
    max_size=4,
)
# How the network delivers each beacon: lost, once, twice (a resend) or late (after the rest).
delivery_st = st.lists(st.sampled_from(["lost", "once", "twice", "late"]), min_size=40, max_size=40)
# Refreshes at these moments (seconds after BASE), between batches: mostly while the playbacks
# go on (some buckets complete, some not), sometimes after the hour or the day is over.
refreshes_st = st.lists(
    st.one_of(st.integers(-60, 900), st.integers(900, 3 * 86400)), min_size=1, max_size=4
)


# --- the independent recomputation -------------------------------------------------------------


def bucket_of(t: datetime, width: str) -> datetime:
    if width == "minute":
        return t.replace(second=0, microsecond=0)
    if width == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def expected(
    stored: list[BeaconRow], width: str
) -> dict[tuple[datetime, uuid.UUID], dict[str, Any]]:
    """Each beacon adds its difference to the view's previous stored beacon to its bucket."""
    by_view: dict[uuid.UUID, list[BeaconRow]] = {}
    for row in stored:
        by_view.setdefault(row.view_id, []).append(row)
    activity: dict[tuple[datetime, uuid.UUID], dict[uuid.UUID, list[ViewActivity]]] = {}
    for rows in by_view.values():
        rows.sort(key=lambda r: r.time)
        for before, row in zip([None, *rows], rows, strict=False):
            b = before
            part = ViewActivity(
                watch_ms=row.watch_ms - (b.watch_ms if b else 0),
                stall_ms=row.stall_ms - (b.stall_ms if b else 0),
                stalls=row.stall_count - (b.stall_count if b else 0),
                switches=row.switches_up
                + row.switches_down
                - ((b.switches_up + b.switches_down) if b else 0),
                startup_ms=row.startup_ms if (b is None or b.startup_ms is None) else None,
                failed=row.state == "failed",
                exited_before_start=row.state == "ended" and row.startup_ms is None,
            )
            key = (bucket_of(row.time, width), row.stream_id)
            activity.setdefault(key, {}).setdefault(row.view_id, []).append(part)
    out = {}
    for key, views in activity.items():
        merged = [_merge(parts) for parts in views.values()]
        result = experience(merged)
        assert result is not None
        out[key] = {name: getattr(result, name) for name in COLUMNS}
    return out


def _merge(parts: list[ViewActivity]) -> ViewActivity:
    startups = [p.startup_ms for p in parts if p.startup_ms is not None]
    return ViewActivity(
        watch_ms=sum(p.watch_ms for p in parts),
        stall_ms=sum(p.stall_ms for p in parts),
        stalls=sum(p.stalls for p in parts),
        switches=sum(p.switches for p in parts),
        startup_ms=max(startups) if startups else None,
        failed=any(p.failed for p in parts),
        exited_before_start=any(p.exited_before_start for p in parts),
    )


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


async def assert_exact(
    conn: asyncpg.Connection,
    stored: list[BeaconRow],
    relations: dict[str, str],
    granularity: bool = False,
) -> None:
    for relation, width in relations.items():
        want = expected(stored, width)
        where = ""
        if granularity:
            where = (
                " WHERE granularity = '" + {"minute": "1m", "hour": "1h", "day": "1d"}[width] + "'"
            )
        records = await conn.fetch(f"SELECT * FROM {relation}{where}")
        got = {}
        for record in records:
            key = (record["bucket"], record["stream_id"])
            assert key not in got, f"{relation} has two rows for {key}"
            got[key] = {name: record[name] for name in COLUMNS}
        assert sorted(got) == sorted(want), f"{relation}: buckets differ"
        for key, values in want.items():
            for name, value in values.items():
                assert close(got[key][name], value), (
                    f"{relation} {key} {name}: {got[key][name]!r} != {value!r}"
                )


# --- the property ------------------------------------------------------------------------------


async def write(conn: asyncpg.Connection, rows: list[BeaconRow]) -> set[tuple[uuid.UUID, datetime]]:
    """Store a batch as the ingest writer does (first of a key, sorted by key); the keys stored."""
    first: dict[tuple[uuid.UUID, datetime], BeaconRow] = {}
    for row in rows:
        first.setdefault((row.view_id, row.time), row)
    batch = [first[key] for key in sorted(first)]
    columns = [list(column) for column in zip(*batch, strict=True)]
    async with conn.transaction():
        inserted = await conn.fetch(queries["write_beacons"], *columns)
    return {(r["view_id"], r["time"]) for r in inserted}


async def play(url: str, plays: list[Any], delivery: list[str], refreshes: list[int]) -> None:
    from tests import dbutil

    await dbutil.clean(url)
    conn = await asyncpg.connect(url)
    pool = await db.create_pool(url, max_size=2)
    try:
        beacons = []
        for n, (stream, start, steps, startup, ending) in enumerate(plays):
            beacons += playback(uuid.UUID(int=1000 + n), stream, start, steps, startup, ending)
        # Arrival order: time order, each beacon lost, sent once, resent or sent late.
        arrivals: list[BeaconRow] = []
        late: list[BeaconRow] = []
        for row, how in zip(
            sorted(beacons, key=lambda r: r.time), itertools.cycle(delivery), strict=False
        ):
            if how == "once":
                arrivals.append(row)
            elif how == "twice":
                arrivals += [row, row]
            elif how == "late":
                late.append(row)
        arrivals += late[::-1]
        stored: dict[tuple[uuid.UUID, datetime], BeaconRow] = {}
        batches = [arrivals[i : i + 5] for i in range(0, len(arrivals), 5)]
        moments = iter(refreshes)
        for batch in batches:
            inserted = await write(conn, batch)
            for row in batch:
                key = (row.view_id, row.time)
                if key in inserted:
                    stored.setdefault(key, row)
            assert {(r.view_id, r.time) for r in batch} <= set(stored), "a valid beacon refused"
            if (moment := next(moments, None)) is not None:
                async with conn.transaction():
                    await rollups.refresh_viewer_experience(conn, BASE + timedelta(seconds=moment))
        rows = list(stored.values())
        # Mid-flight, some buckets materialized and some pending: the views are exact anyway.
        await assert_exact(conn, rows, VIEWS)
        async with conn.transaction():
            await rollups.refresh_viewer_experience(conn, BASE + timedelta(days=3))
        assert await conn.fetchval("SELECT count(*) FROM viewer_rollup_invalidations") == 0
        assert await conn.fetchval("SELECT count(*) FROM viewer_rollup_pending") == 0
        # Once everything is complete and refreshed, the materialized rows alone are exact.
        for width in ("minute", "hour", "day"):
            await assert_exact(conn, rows, {"viewer_rollup": width}, granularity=True)
        await assert_exact(conn, rows, VIEWS)
        await assert_summaries(conn, rows)
    finally:
        await conn.close()
        await pool.close()


async def assert_summaries(conn: asyncpg.Connection, stored: list[BeaconRow]) -> None:
    """viewer_views holds each view's first and last beacon, its end and its totals."""
    by_view: dict[uuid.UUID, list[BeaconRow]] = {}
    for row in stored:
        by_view.setdefault(row.view_id, []).append(row)
    records = {r["view_id"]: r for r in await conn.fetch("SELECT * FROM viewer_views")}
    assert set(records) == set(by_view)
    for view, rows in by_view.items():
        rows.sort(key=lambda r: r.time)
        got = records[view]
        ends = [r for r in rows if r.state in ("ended", "failed")]
        startups = [r.startup_ms for r in rows if r.startup_ms is not None]
        assert got["started_at"] == rows[0].time and got["last_beacon_at"] == rows[-1].time
        assert got["state"] == rows[-1].state
        assert got["ended_at"] == (ends[0].time if ends else None)
        assert got["startup_ms"] == (startups[0] if startups else None)
        assert got["watch_time_ms"] == rows[-1].watch_ms
        assert (got["stall_count"], got["stall_time_ms"]) == (
            rows[-1].stall_count,
            rows[-1].stall_ms,
        )
        assert got["failed"] == any(r.state == "failed" for r in rows)
        assert got["exited_before_start"] == bool(
            ends and not startups and ends[0].state == "ended"
        )


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plays=playbacks_st, delivery=delivery_st, refreshes=refreshes_st)
# A refresh while a later minute is still open, which no later beacon touches again.
@example(
    plays=[(STREAMS[0], 0, [Step(30, 1.0, False, False, False)] * 6, 300.0, "ended")],
    delivery=["once"] * 40,
    refreshes=[100],
)
def test_viewer_rollups_equal_a_recomputation_from_the_beacons_despite_losses_resends_and_late_ones(
    database_url, plays, delivery, refreshes
):
    asyncio.run(play(database_url, plays, delivery, refreshes))


# --- the score, the checks, the writer ---------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    startup=st.one_of(st.none(), st.floats(0, 600_000)),
    watch=st.floats(0, 1e8),
    stall=st.floats(0, 1e8),
    stalls=st.integers(0, 10_000),
    failed=st.booleans(),
)
def test_the_sql_score_is_the_documented_formula(
    database_url, startup, watch, stall, stalls, failed
):
    async def sql_score() -> float:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(
                "SELECT viewer_view_score($1, $2, $3, $4, $5)",
                startup,
                watch,
                stall,
                stalls,
                failed,
            )
        finally:
            await conn.close()

    assert asyncio.run(sql_score()) == pytest.approx(
        view_score(startup, watch, stall, stalls, failed)
    )


def beacon(view: uuid.UUID, seconds: float, watch: float, **changes: Any) -> BeaconRow:
    row = _row(
        BASE + timedelta(seconds=seconds), view, STREAMS[0], "playing", 500.0, watch, 1, 200.0, 0, 1
    )
    return row._replace(**changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"watch_ms": 4_000.0}, "watchTime"),  # went backwards
        ({"stall_count": 0}, "stalls.count"),
        ({"stall_ms": 100.0}, "stalls.duration"),
        ({"switches_down": 0}, "renditionChanges.down"),
        ({"startup_ms": 700.0}, "startupTime"),
        ({"watch_ms": 60_000.0}, "watchTime"),  # 50 s more watched in 10 s
        ({"stream_id": STREAMS[1]}, "streamId"),
    ],
)
async def test_a_beacon_that_does_not_follow_its_view_is_refused_by_field_and_the_rest_stored(
    make_settings, conn, changes, field
):
    pool = await db.create_pool(make_settings().database_url, max_size=2)
    writer = BatchWriter(make_settings(batch_ms=200), pool, target=BEACONS)
    await writer.start()
    view, other = uuid.UUID(int=77), uuid.UUID(int=78)
    try:
        assert await writer.submit(beacon(view, 0, 5_000.0)) is False
        good = writer.submit(beacon(other, 0, 5_000.0))
        bad = writer.submit(beacon(view, 10, 5_000.0, **changes))
        assert await good is False
        with pytest.raises(Invalid) as refused:
            await bad
        assert refused.value.field == field
        assert str(refused.value).startswith(f"{field}: ")
        stored = await conn.fetchval("SELECT count(*) FROM viewer_stats WHERE view_id = $1", view)
        assert stored == 1
    finally:
        await writer.close()
        await pool.close()


async def test_no_beacon_may_follow_the_end_of_a_view(make_settings, conn):
    pool = await db.create_pool(make_settings().database_url, max_size=2)
    writer = BatchWriter(make_settings(), pool, target=BEACONS)
    await writer.start()
    view = uuid.UUID(int=79)
    try:
        await writer.submit(beacon(view, 0, 5_000.0, state="ended"))
        with pytest.raises(Invalid) as refused:
            await writer.submit(beacon(view, 10, 6_000.0))
        assert refused.value.field == "state"
        # A resend of the last beacon is a harmless duplicate.
        assert await writer.submit(beacon(view, 0, 5_000.0, state="ended")) is True
    finally:
        await writer.close()
        await pool.close()


async def test_the_analyst_role_reads_the_viewer_views_and_cannot_write(conn):
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        for relation in (*VIEWS, "viewer_stats", "viewer_views"):
            await conn.fetch(f"SELECT * FROM {relation} LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM viewer_stats")
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM viewer_rollup")


async def test_viewer_views_have_the_documented_columns(conn):
    for view in VIEWS:
        columns = [
            r[0]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                "ORDER BY ordinal_position",
                view,
            )
        ]
        assert columns == ["bucket", "stream_id", *COLUMNS]
