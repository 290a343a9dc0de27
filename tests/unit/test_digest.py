"""Digest bookkeeping (ingest/digest.py) without a server: what each subscriber is sent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.auth import Principal
from ingest.digest import Digests, Subscriber, _decode, _encode
from ingest.rows import StatsRow

T0 = datetime.now(UTC).replace(microsecond=0)


class Viewers:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    async def counts(self, stream_ids: list[str]) -> dict[str, int]:
        return {s: self.count.get(s, 0) for s in stream_ids}


def row(stream: uuid.UUID, second: float, bitrate: float = 2500.0) -> StatsRow:
    return StatsRow(
        T0 + timedelta(seconds=second),
        stream,
        bitrate,
        30.0,
        1280,
        720,
        -20.0,
        0.5,
        45.0,
        5000.0,
        9000.0,
        "good",
    )


def digests() -> Digests:
    async def emit(event: str, data: dict[str, Any], sid: str) -> None:
        raise AssertionError("not sent in these tests")

    return Digests(emit=emit, viewers=Viewers(), connected=lambda sid: True)


def subscriber(d: Digests, streams: frozenset[str] | None = None) -> Subscriber:
    principal = Principal("mod", "moderator", streams, expires_at=T0.timestamp() + 3600)
    return Subscriber("sid", principal, 1.0, sent=d._counter)


def sent(digest: dict[str, Any]) -> list[tuple[str, int]]:
    return [(item["streamId"], item["stats"]["bitrate"]) for item in digest["streams"]]


def test_a_digest_holds_each_changed_streams_newest_row_once():
    d = digests()
    a, b = uuid.uuid4(), uuid.uuid4()
    sub = subscriber(d)
    d.take([row(a, 1, 1000), row(b, 1, 2000), row(a, 2, 1100)])
    assert sorted(sent(d.digest(sub))) == sorted([(str(a), 1100), (str(b), 2000)])
    assert sent(d.digest(sub)) == [], "nothing changed since"
    d.take([row(b, 3, 2100)])
    assert sent(d.digest(sub)) == [(str(b), 2100)]


def test_an_older_or_resent_row_does_not_replace_the_newest():
    d = digests()
    a = uuid.uuid4()
    sub = subscriber(d)
    d.take([row(a, 5, 1500)])
    d.digest(sub)
    d.take([row(a, 4, 900), row(a, 5, 1500)])
    assert sent(d.digest(sub)) == []


def test_subscribers_each_get_what_changed_since_their_own_last_digest():
    d = digests()
    a, b = uuid.uuid4(), uuid.uuid4()
    fast, slow = subscriber(d), subscriber(d)
    d.take([row(a, 1, 1000)])
    assert sent(d.digest(fast)) == [(str(a), 1000)]
    d.take([row(b, 2, 2000)])
    assert sent(d.digest(fast)) == [(str(b), 2000)]
    assert sorted(sent(d.digest(slow))) == sorted([(str(a), 1000), (str(b), 2000)])


def test_a_scoped_monitor_gets_only_its_streams():
    d = digests()
    mine, other = uuid.uuid4(), uuid.uuid4()
    sub = subscriber(d, frozenset({str(mine)}))
    d.take([row(mine, 1), row(other, 1)])
    assert [s for s, _ in sent(d.digest(sub))] == [str(mine)]


def test_changes_every_subscriber_was_sent_are_forgotten():
    d = digests()
    a = uuid.uuid4()
    first, second = subscriber(d), subscriber(d)
    d._subscribers = {"1": first, "2": second}
    d.take([row(a, 1)])
    d.digest(first)
    d._trim()
    assert len(d._changes) == 1, "the second subscriber has not had it yet"
    d.digest(second)
    d._trim()
    assert len(d._changes) == 0


async def test_a_new_viewer_count_is_a_change_without_a_new_row():
    d = digests()
    a = uuid.uuid4()
    sub = subscriber(d)
    d.take([row(a, (datetime.now(UTC) - T0).total_seconds())])
    await d.refresh_viewers()
    assert [item["viewerCount"] for item in d.digest(sub)["streams"]] == [0]
    assert isinstance(d.viewers, Viewers)
    d.viewers.count[str(a)] = 3
    await d.refresh_viewers()
    assert [item["viewerCount"] for item in d.digest(sub)["streams"]] == [3]
    await d.refresh_viewers()
    assert d.digest(sub)["streams"] == []


def test_a_row_crosses_between_nodes_unchanged():
    original = row(uuid.uuid4(), 1.25, 0.1)
    assert _decode(_encode(original)) == original
