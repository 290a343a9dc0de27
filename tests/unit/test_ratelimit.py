from ingest.ratelimit import LogLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_one_seconds_worth_passes_then_the_rest_is_refused():
    clock = Clock()
    bucket = TokenBucket(50, clock=clock)
    assert sum(bucket.allow() for _ in range(80)) == 50


def test_tokens_come_back_at_the_configured_rate():
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    while bucket.allow():
        pass
    clock.now += 0.5
    assert sum(bucket.allow() for _ in range(20)) == 5


def test_a_rate_below_one_still_allows_a_single_event():
    clock = Clock()
    bucket = TokenBucket(0.5, clock=clock)
    assert bucket.allow() and not bucket.allow()
    clock.now += 2
    assert bucket.allow()


def test_log_limiter_lets_one_line_through_per_period_and_counts_the_rest():
    now = [0.0]
    limiter = LogLimiter(10, clock=lambda: now[0])
    assert limiter.allow() == 0
    assert [limiter.allow() for _ in range(5)] == [None] * 5
    now[0] = 10.0
    assert limiter.allow() == 5
    assert limiter.allow() is None
