"""Every panel of deploy/grafana runs, as Grafana would send it, as the analyst role.

Grafana's PostgreSQL datasource interpolates the dashboard variables, then expands its macros,
then sends the SQL. This test does the same for each documented macro form, so a renamed view
or column (or a query the read-only role may not run) fails here instead of on a dashboard.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import yaml

from analytics.alerts import alert_payload
from streamstats import outbox

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "stream-stats.json").read_text())
PANELS = [(p["title"], t["rawSql"]) for p in DASHBOARD["panels"] for t in p["targets"]]
# Panels over data this test does not seed (viewer beacons have their own tests).
MAY_BE_EMPTY = {"Viewer experience score", "Rebuffering and startup"}
MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(interval: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([smhd])", interval.strip()).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(
    sql: str,
    variables: dict[str, str],
    start: datetime,
    end: datetime,
    interval: str,
    timescaledb: bool,
) -> str:
    """Grafana's interpolation: variables ($name, ${name}), then the PostgreSQL macros."""
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)

    def group(column: str, width: str) -> str:
        width = interval if width.strip() == "$__interval" else width
        n = seconds(width)
        if timescaledb:
            return f"time_bucket('{n}s', {column})"
        return f"floor(extract(epoch from {column})/{n})*{n}"

    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in (match.group(2) or "").split(",")]
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{iso(start)}' AND '{iso(end)}'"
        if name == "timeGroup":
            return group(args[0], args[1])
        if name == "timeGroupAlias":
            return group(args[0], args[1]) + ' AS "time"'
        if name == "timeFrom":
            return f"'{iso(start)}'"
        if name == "timeTo":
            return f"'{iso(end)}'"
        if name == "interval":
            return interval
        raise AssertionError(f"macro $__{name} is not expanded by this test")

    sql = MACRO.sub(macro, sql)
    assert "$" not in sql, f"unexpanded: {sql}"
    return sql


async def seed(conn: asyncpg.Connection, now: datetime) -> list[str]:
    streams = [uuid.uuid4(), uuid.uuid4()]
    for k, stream in enumerate(streams):
        times = [now - timedelta(seconds=5 * i) for i in range(360)]
        await conn.execute(
            "INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, packet_loss_pct, "
            "latency_ms, quality) SELECT t, $2, 2500 - 10 * $3, 30, 0.5 * $3, 80 + 100 * $3, "
            "CASE WHEN $3 = 0 THEN 'good' ELSE 'poor' END FROM unnest($1::timestamptz[]) t",
            times,
            stream,
            k,
        )
        # What the ingest writer keeps next to the samples.
        await conn.execute(
            "INSERT INTO stream_latest (stream_id, time, bitrate_kbps) VALUES ($1, $2, 2500)",
            stream,
            now,
        )
        await conn.execute(
            "INSERT INTO bitrate_drops (stream_id, started_at, ended_at, baseline_kbps, "
            "observed_kbps, drop_pct) VALUES ($1, $2, $3, 2500, 600, 76)",
            stream,
            now - timedelta(minutes=20),
            now - timedelta(minutes=18),
        )
        async with conn.transaction():
            await outbox.publish(
                conn,
                alert_payload(stream, "fps_low", "raised", 12, 20, now - timedelta(minutes=10)),
            )
    return [str(s) for s in streams]


def test_the_datasource_and_the_panels_agree():
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "streamstats.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    defined = {v["name"] for v in DASHBOARD["templating"]["list"]}
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(?!__)\{?(\w+)", target["rawSql"]))
            assert used <= defined, (panel["title"], used - defined)


@pytest.mark.parametrize("timescaledb", [True, False], ids=["time_bucket", "epoch"])
async def test_every_panel_runs_as_the_analyst_role(conn, timescaledb):
    now = datetime.now(UTC).replace(microsecond=0)
    streams = await seed(conn, now)
    selections = {"all": "'*'", "two": ",".join(f"'{s}'" for s in streams)}
    checked = 0
    # The time ranges one would pick for each rollup (a bucket is in range by its start).
    for granularity, interval, back in (("1m", "1m", 1), ("1h", "5m", 24), ("1d", "1h", 24 * 7)):
        window = (now - timedelta(hours=back), now + timedelta(minutes=1))
        for selection, stream in selections.items():
            variables = {"granularity": granularity, "stream": stream}
            for title, raw in PANELS:
                sql = expand(raw, variables, *window, interval, timescaledb)
                async with conn.transaction():
                    await conn.execute("SET LOCAL ROLE streamstats_analyst")
                    try:
                        rows = await conn.fetch(sql)
                    except asyncpg.PostgresError as exc:
                        raise AssertionError(
                            f"{title} ({granularity}, {selection}): {exc}"
                        ) from exc
                if title not in MAY_BE_EMPTY:
                    assert rows, f"{title} ({granularity}, {selection}) returned no row"
                checked += 1
    assert checked == 3 * 2 * len(PANELS)


async def test_the_stream_variable_query_runs_as_the_analyst_role(conn):
    streams = await seed(conn, datetime.now(UTC))
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "stream"]
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        values = [row[0] for row in await conn.fetch(variable["query"])]
    assert sorted(values) == sorted(streams)
