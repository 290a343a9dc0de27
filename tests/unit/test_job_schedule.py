from datetime import UTC, datetime, timedelta

import pytest

from jobs.runner import REGISTRY, misfire_grace, resolve, tick_of
from streamstats.errors import StreamStatsError
from streamstats.settings import Settings


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_ticks_fall_on_the_same_grid_whenever_a_runner_started():
    every = timedelta(seconds=30)
    assert tick_of(at("2026-11-23 22:00:29.999"), every) == at("2026-11-23 22:00:00")
    assert tick_of(at("2026-11-23 22:00:30"), every) == at("2026-11-23 22:00:30")
    assert tick_of(at("2026-11-23 22:00:59"), every) == at("2026-11-23 22:00:30")


def test_a_late_run_within_its_period_belongs_to_its_tick():
    every = timedelta(seconds=15)
    assert tick_of(at("2026-11-23 22:00:14.5"), every) == at("2026-11-23 22:00:00")


def test_the_daily_report_tick_is_a_quarter_past_midnight_utc():
    reports = REGISTRY["reports"]
    every = reports.every(Settings())
    assert tick_of(at("2026-11-24 00:14:59"), every, reports.offset) == at("2026-11-23 00:15")
    assert tick_of(at("2026-11-24 00:15:00"), every, reports.offset) == at("2026-11-24 00:15")
    assert tick_of(at("2026-11-24 23:59:00"), every, reports.offset) == at("2026-11-24 00:15")


def test_sub_second_periods_work():
    every = timedelta(milliseconds=500)
    assert tick_of(at("2026-11-23 22:00:01.7"), every) == at("2026-11-23 22:00:01.5")


def test_the_registry_names_the_jobs_of_the_command_line():
    from streamstats.cli import JOB_NAMES

    assert sorted(REGISTRY) == sorted(JOB_NAMES)
    periods = {name: spec.every(Settings()) for name, spec in REGISTRY.items()}
    assert periods == {
        "rollups": timedelta(seconds=30),
        "retention": timedelta(hours=1),
        "drops": timedelta(seconds=15),
        "rebuffering": timedelta(seconds=15),
        "reports": timedelta(days=1),
    }


def test_misfire_grace_is_one_period_capped_at_an_hour():
    assert misfire_grace(timedelta(seconds=30)) == 30
    assert misfire_grace(timedelta(milliseconds=200)) == 1
    assert misfire_grace(timedelta(days=1)) == 3600


def test_a_missing_job_function_is_a_clear_error():
    with pytest.raises(StreamStatsError, match=r"jobs\.nowhere:run is not available"):
        resolve("jobs.nowhere:run")
    with pytest.raises(StreamStatsError, match="no 'nothing'"):
        resolve("jobs.rollups:nothing")
