"""Per-connection rate limit: a token bucket refilled at `STREAMSTATS_RATE_LIMIT` events/s."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allows `rate` events a second on average, with bursts up to one second's worth."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def allow(self) -> bool:
        """Take one token if there is one."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class LogLimiter:
    """Lets one log line through per `every` seconds and counts the ones it held back.

    For lines a client can cause at will (refused packets, refused connects): the metric counts
    every occurrence, the log gets a sample, so a hostile client cannot fill the disk.
    """

    __slots__ = ("_bucket", "_held")

    def __init__(self, every: float, *, clock: Callable[[], float] = time.monotonic):
        self._bucket = TokenBucket(1 / every, burst=1, clock=clock)
        self._held = 0

    def allow(self) -> int | None:
        """None to hold this line back; else how many were held back since the last one."""
        if not self._bucket.allow():
            self._held += 1
            return None
        held, self._held = self._held, 0
        return held
