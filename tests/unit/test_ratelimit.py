from ingest.ratelimit import TokenBucket


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
