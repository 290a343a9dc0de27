"""The `streamstats` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from streamstats import logs, migrations
from streamstats.errors import StreamStatsError
from streamstats.settings import Settings, load_settings

logger = logging.getLogger("streamstats")

ROLES = ("streamer", "viewer", "moderator", "analyst", "admin")
JOB_NAMES = ("rollups", "retention", "drops", "rebuffering", "reports")


async def migrate_and_report(settings: Settings) -> None:
    applied = await migrations.migrate(settings.database_url)
    if applied:
        for migration in applied:
            print(f"applied {migration.label}")
    else:
        print("database is up to date: nothing to apply")


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    asyncio.run(migrate_and_report(settings))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from ingest.server import serve
    from ingest.transport import run

    run(serve(settings.model_copy(update=_address(args))))


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.runner import run_once, run_scheduler

    if args.once:
        asyncio.run(run_once(settings, args.once))
    else:
        asyncio.run(run_scheduler(settings))


def cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    from ingest.transport import run as run_server
    from streamstats.run import run

    run_server(run(settings.model_copy(update=_address(args)), simulate=args.simulate))


def cmd_token(settings: Settings, args: argparse.Namespace) -> None:
    from ingest.auth import mint_token

    token = mint_token(
        settings.require_jwt_secret(),
        role=args.role,
        streams=args.stream,
        sub=args.sub,
        ttl=args.ttl,
    )
    if not args.dashboard:
        print(token)
        return
    from ingest.auth import MONITORS
    from streamstats.run import dashboard_link

    if args.role not in MONITORS:
        raise StreamStatsError(
            f"the dashboard needs a moderator, analyst or admin token, not a {args.role} one"
        )
    print(dashboard_link(settings, token))


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> None:
    from ingest.simulate import simulate

    asyncio.run(
        simulate(
            settings,
            url=args.url,
            streams=args.streams,
            viewers=args.viewers,
            duration=args.duration,
            interval=args.interval,
        )
    )


def cmd_report(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.reports import report_command

    if args.week is not None and args.stream:
        raise StreamStatsError("--stream applies to --day: a weekly report covers every stream")
    asyncio.run(report_command(settings, day=args.day, week=args.week, streams=args.stream))


def cmd_export(settings: Settings, args: argparse.Namespace) -> None:
    from streamstats.export import ExportRequest, default_output, export

    request = ExportRequest(
        start=args.start,
        end=args.end,
        granularity=args.granularity,
        format=args.format,
        output=args.output or default_output(args.granularity, args.start, args.end, args.format),
        streams=args.stream,
    )
    rows = asyncio.run(export(settings, request))
    print(f"{rows:,} rows of stream_stats_{request.granularity} in {request.output}")


def _moment(text: str) -> datetime:
    from streamstats.export import parse_moment

    try:
        return parse_moment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stream_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a stream id (a UUID): {text!r}") from None


def _iso_week(text: str) -> str:
    from analytics.weekly import week_start

    try:
        week_start(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def cmd_webhooks(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.webhooks import webhooks_command

    asyncio.run(webhooks_command(settings, requeue=args.requeue, limit=args.limit))


def _address(args: argparse.Namespace) -> dict[str, object]:
    return {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="streamstats",
        description="Live-stream health analytics: Socket.IO ingest into TimescaleDB, "
        "rollups, alerts and reports. Configured through the environment (see README).",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="apply the schema migrations that are missing").set_defaults(
        func=cmd_migrate
    )

    for name, func, text in (
        ("serve", cmd_serve, "run the Socket.IO ingest server"),
        ("run", cmd_run, "migrate, then run the ingest server and the job runner in one process"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", help="listen address (default STREAMSTATS_HOST, 127.0.0.1)")
        p.add_argument("--port", type=int, help="listen port (default STREAMSTATS_PORT, 8000)")
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument(
                "--simulate",
                type=int,
                default=0,
                metavar="N",
                help="also feed the server with N simulated streamers",
            )

    p = sub.add_parser("jobs", help="run the scheduled jobs (rollups, retention, drops, reports)")
    p.add_argument(
        "--once",
        choices=JOB_NAMES,
        metavar="NAME",
        help=f"run one job once and exit: {', '.join(JOB_NAMES)}",
    )
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("token", help="print a signed JWT for a client")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument(
        "--stream",
        action="append",
        default=[],
        metavar="ID",
        help="a stream the token may act on (repeatable)",
    )
    p.add_argument("--sub", default=None, help="user id (default: the role name)")
    p.add_argument("--ttl", type=int, default=3600, metavar="SECONDS", help="lifetime (3600)")
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="print a link that opens the live dashboard signed in with the token",
    )
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("simulate", help="realistic streamers and viewers against a server")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--viewers", type=int, default=0)
    p.add_argument("--duration", type=float, default=60, metavar="SECONDS")
    p.add_argument(
        "--interval",
        type=float,
        default=5,
        metavar="SECONDS",
        help="seconds between a streamer's updates (5, as in the client guide)",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("webhooks", help="list pending and dead webhook deliveries; re-queue dead")
    p.add_argument(
        "--requeue",
        action="store_true",
        help="first put every dead delivery back in the queue, due now, for a new retry period",
    )
    p.add_argument("--limit", type=int, default=100, help="list at most this many (100)")
    p.set_defaults(func=cmd_webhooks)

    p = sub.add_parser("report", help="write a day's or a week's reports (on demand or backfill)")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--day", type=date.fromisoformat, metavar="YYYY-MM-DD")
    when.add_argument("--week", type=_iso_week, metavar="YYYY-Www", help="e.g. 2026-W10")
    p.add_argument(
        "--stream", action="append", default=[], metavar="ID", help="only this stream (repeatable)"
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export", help="write the rollups of a time range to a CSV or Parquet file (for analysts)"
    )
    p.add_argument(
        "--from",
        dest="start",
        required=True,
        type=_moment,
        metavar="WHEN",
        help="start, included: YYYY-MM-DD (00:00 UTC) or an ISO 8601 time",
    )
    p.add_argument(
        "--to", dest="end", required=True, type=_moment, metavar="WHEN", help="end, excluded"
    )
    p.add_argument(
        "--stream",
        action="append",
        default=[],
        type=_stream_id,
        metavar="ID",
        help="only this stream (repeatable; default every stream)",
    )
    p.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    p.add_argument(
        "--granularity",
        choices=("1m", "1h", "1d"),
        default="1h",
        help="which rollup view (stream_stats_1m/1h/1d; default 1h)",
    )
    p.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help="default stream_stats_<granularity>_<from>_<to>.<format> here",
    )
    p.set_defaults(func=cmd_export)  # fmt: skip
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_format, settings.log_level)
        args.func(settings, args)
    except StreamStatsError as exc:
        print(f"streamstats: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
