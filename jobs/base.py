"""What every job receives, and the signature it has."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from streamstats.settings import Settings


@dataclass
class JobContext:
    settings: Settings
    pool: asyncpg.Pool
    # The moment the run started; jobs use it instead of reading the clock, so tests can pin it.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


# A job does its work and returns how many rows it wrote or changed (recorded in job_runs).
Job = Callable[[JobContext], Awaitable[int]]
