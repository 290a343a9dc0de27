"""`stream:viewer:stats` validation: every refusal names its field, nothing else is refused."""

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from ingest.beacon import parse_beacon
from ingest.errors import Invalid, TooLarge
from ingest.schema import Oversize

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=30)
STREAM = "123e4567-e89b-12d3-a456-426614174000"
VIEW = "9b2f4c1e-3d5a-4b7c-8e9f-0a1b2c3d4e5f"


def beacon(**overrides):
    payload = {
        "streamId": STREAM,
        "viewId": VIEW,
        "timestamp": "2026-03-01T11:59:50.000Z",
        "state": "playing",
        "startupTime": 850,
        "watchTime": 9_500,
        "stalls": {"count": 1, "duration": 400},
        "renditionChanges": {"up": 1, "down": 0},
        "bitrate": 2500,
        "resolution": {"width": 1280, "height": 720},
    }
    payload.update(overrides)
    return payload


def parse(payload):
    return parse_beacon(payload, now=NOW, retention=RETENTION)


def refusal(payload) -> Invalid:
    with pytest.raises(Invalid) as info:
        parse(payload)
    return info.value


def test_a_beacon_becomes_the_row_to_store():
    valid = parse(beacon(error={"code": "MEDIA_ERR_NETWORK", "message": "lost"}))
    row = valid.row
    assert row.view_id == UUID(VIEW) and row.stream_id == UUID(STREAM)
    assert row.time == datetime(2026, 3, 1, 11, 59, 50, tzinfo=UTC)
    assert (row.state, row.startup_ms, row.watch_ms) == ("playing", 850, 9_500)
    assert (row.stall_count, row.stall_ms, row.switches_up, row.switches_down) == (1, 400, 1, 0)
    assert (row.bitrate_kbps, row.width, row.height) == (2500, 1280, 720)
    assert (row.error_code, row.error_message) == ("MEDIA_ERR_NETWORK", "lost")
    assert valid.timestamp == "2026-03-01T11:59:50.000Z"
    assert (valid.stream_id, valid.view_id) == (STREAM, VIEW)


def test_a_view_still_starting_has_no_startup_time_and_no_optional_fields():
    payload = beacon(state="starting", startupTime=None, watchTime=0)
    for name in ("bitrate", "resolution"):
        del payload[name]
    row = parse(payload).row
    assert (row.startup_ms, row.bitrate_kbps, row.width, row.error_code) == (None, None, None, None)


def test_a_failed_view_may_never_have_started():
    row = parse(beacon(state="failed", startupTime=None, error={"code": "MEDIA_ERR_DECODE"})).row
    assert (row.state, row.error_code, row.error_message) == ("failed", "MEDIA_ERR_DECODE", "")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"viewId": "not-a-uuid"}, "viewId"),
        ({"viewId": None}, "viewId"),
        ({"streamId": "nope"}, "streamId"),
        ({"state": "buffering"}, "state"),
        ({"startupTime": -1}, "startupTime"),
        ({"startupTime": 600_001}, "startupTime"),
        ({"startupTime": "850"}, "startupTime"),
        ({"startupTime": None}, "startupTime"),  # playing without a first frame
        ({"watchTime": -5}, "watchTime"),
        ({"watchTime": 8 * 86_400_000}, "watchTime"),
        ({"watchTime": True}, "watchTime"),
        ({"stalls": {"count": 1}}, "stalls.duration"),
        ({"stalls": {"count": -1, "duration": 0}}, "stalls.count"),
        ({"stalls": {"count": 1.5, "duration": 0}}, "stalls.count"),
        ({"stalls": {"count": 0, "duration": 300}}, "stalls.duration"),
        ({"stalls": 3}, "stalls"),
        ({"renditionChanges": {"up": 0, "down": -2}}, "renditionChanges.down"),
        ({"bitrate": 2_000_000}, "bitrate"),
        ({"resolution": {"width": 99_999, "height": 720}}, "resolution.width"),
        ({"error": {"code": "", "message": "x"}}, "error.code"),
        ({"error": {"code": 4}}, "error.code"),
        ({"timestamp": "2026-03-01 11:59:50"}, "timestamp"),
        ({"timestamp": "2026-03-01T12:10:00Z"}, "timestamp"),
    ],
)
def test_a_bad_field_is_refused_by_name(overrides, field):
    assert refusal(beacon(**overrides)).field == field


@pytest.mark.parametrize("missing", ["state", "watchTime", "stalls", "renditionChanges", "viewId"])
def test_a_missing_required_field_is_named(missing):
    payload = beacon()
    del payload[missing]
    error = refusal(payload)
    assert error.field == missing and "required" in str(error)


def test_an_oversize_beacon_is_too_large_and_a_non_object_invalid():
    with pytest.raises(TooLarge):
        parse(Oversize(20_000, 16_384))
    assert refusal([1, 2]).field is None
