import json
import math
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from ingest.errors import Invalid, TooLarge
from ingest.schema import Oversize, Unparseable, WireJson, parse_update, stream_ref

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=30)
STREAM = "123e4567-e89b-12d3-a456-426614174000"


def guide_payload(**overrides):
    """The client guide's example event, with its timestamp moved near NOW."""
    payload = {
        "streamId": STREAM,
        "stats": {
            "bitrate": 2500,
            "fps": 30,
            "resolution": {"width": 1920, "height": 1080},
            "audioLevel": -20,
            "packetLoss": 0.5,
            "latency": 45,
            "bandwidth": {"upload": 5000, "download": 10000},
        },
        "timestamp": "2026-03-01T11:59:30.000Z",
    }
    payload.update(overrides)
    return payload


def with_stats(**stats):
    return guide_payload(stats=stats)


def parse(payload):
    return parse_update(payload, now=NOW, retention=RETENTION)


def test_guide_example_becomes_a_row_with_every_metric():
    update = parse(guide_payload())
    row = update.row
    assert row.time == datetime(2026, 3, 1, 11, 59, 30, tzinfo=UTC)
    assert row.stream_id == UUID(STREAM)
    assert (row.bitrate_kbps, row.fps, row.width, row.height) == (2500, 30, 1920, 1080)
    assert (row.audio_level_db, row.packet_loss_pct, row.latency_ms) == (-20, 0.5, 45)
    assert (row.upload_kbps, row.download_kbps) == (5000, 10000)
    assert row.quality == "good"
    assert update.timestamp == "2026-03-01T11:59:30.000Z"
    assert update.stats["resolution"] == {"width": 1920, "height": 1080}


def test_unknown_fields_are_ignored_everywhere():
    payload = guide_payload(extra={"deep": [1, 2]})
    payload["stats"]["jitter"] = 3
    payload["stats"]["resolution"]["depth"] = 8
    assert parse(payload).row == parse(guide_payload()).row


def test_missing_timestamp_means_receive_time():
    payload = guide_payload()
    del payload["timestamp"]
    assert parse(payload).row.time == NOW


def test_timestamps_with_an_offset_are_stored_in_utc():
    row = parse(guide_payload(timestamp="2026-03-01T13:00:00+01:30")).row
    assert row.time == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)


def test_metrics_may_be_null_or_missing_when_one_is_present():
    row = parse(with_stats(bitrate=None, fps=12.5, resolution=None)).row
    assert (row.bitrate_kbps, row.fps, row.width, row.quality) == (None, 12.5, None, "poor")


def test_decimal_values_are_kept_exactly():
    row = parse(with_stats(packetLoss=0.1, bitrate=0.30000000000000004)).row
    assert row.packet_loss_pct == 0.1
    assert row.bitrate_kbps == 0.30000000000000004


def test_a_sample_without_quality_metrics_has_no_quality():
    assert parse(with_stats(bitrate=100)).row.quality is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_stats(bitrate="2500"), "stats.bitrate"),
        (with_stats(bitrate=True), "stats.bitrate"),
        (with_stats(bitrate=float("nan")), "stats.bitrate"),
        (with_stats(bitrate=float("inf")), "stats.bitrate"),
        (with_stats(bitrate=-1), "stats.bitrate"),
        (with_stats(bitrate=1_000_000.5), "stats.bitrate"),
        (with_stats(bitrate=10**400), "stats.bitrate"),
        (with_stats(bitrate=[2500]), "stats.bitrate"),
        (with_stats(fps=1001), "stats.fps"),
        (with_stats(audioLevel=-201), "stats.audioLevel"),
        (with_stats(audioLevel=21), "stats.audioLevel"),
        (with_stats(packetLoss=100.01), "stats.packetLoss"),
        (with_stats(latency=600_001), "stats.latency"),
        (with_stats(latency=float("-inf")), "stats.latency"),
        (with_stats(resolution={"width": 1920.5, "height": 1080}), "stats.resolution.width"),
        (with_stats(resolution={"width": 1920, "height": 16_385}), "stats.resolution.height"),
        (with_stats(resolution={"width": 1920, "height": 1080.0}), "stats.resolution.height"),
        (with_stats(resolution="1920x1080"), "stats.resolution"),
        (with_stats(bandwidth={"upload": 100_000_001}), "stats.bandwidth.upload"),
        (with_stats(bandwidth={"download": "fast"}), "stats.bandwidth.download"),
        (with_stats(), "stats"),
        (with_stats(bitrate=None, resolution={"width": None}), "stats"),
        (guide_payload(stats=None), "stats"),
        (guide_payload(stats=[1, 2]), "stats"),
        ({"streamId": STREAM}, "stats"),
        (guide_payload(streamId="not-a-uuid"), "streamId"),
        (guide_payload(streamId=123), "streamId"),
        (guide_payload(streamId=None), "streamId"),
        ({"stats": {"fps": 30}}, "streamId"),
        (guide_payload(timestamp="2026-03-01T11:59:30"), "timestamp"),
        (guide_payload(timestamp="yesterday"), "timestamp"),
        (guide_payload(timestamp=1_700_000_000), "timestamp"),
        (guide_payload(timestamp="2026-03-01T12:05:01Z"), "timestamp"),
        (guide_payload(timestamp="2026-01-30T11:59:59Z"), "timestamp"),
        (guide_payload(timestamp="2" * 100), "timestamp"),
    ],
)
def test_invalid_payloads_name_the_offending_field(payload, field):
    with pytest.raises(Invalid) as info:
        parse(payload)
    body = info.value.payload()
    assert body["code"] == "invalid"
    assert body["field"] == field
    assert body["message"].startswith(field)


def test_timestamps_up_to_five_minutes_ahead_are_accepted_for_clock_skew():
    assert parse(guide_payload(timestamp="2026-03-01T12:04:59Z")).row.time > NOW


@pytest.mark.parametrize("payload", [None, [], "update", 42, True])
def test_a_payload_that_is_not_an_object_is_invalid(payload):
    with pytest.raises(Invalid):
        parse(payload)


def test_stream_references_are_validated_and_canonical():
    assert stream_ref({"streamId": STREAM.upper(), "x": 1}) == STREAM
    for bad in [{}, {"streamId": "x"}, {"streamId": 5}, "x", None]:
        with pytest.raises(Invalid):
            stream_ref(bad)


@pytest.mark.parametrize(
    "spelling",
    [
        "{" + STREAM + "}",
        "urn:uuid:" + STREAM,
        STREAM.replace("-", ""),
        STREAM.replace("-", "")[:12] + "-" + STREAM.replace("-", "")[12:],
        STREAM + "\n",
        "\uff11" + STREAM[1:],
    ],
)
def test_only_the_canonical_uuid_spelling_is_a_stream_id(spelling):
    with pytest.raises(Invalid, match="streamId"):
        stream_ref({"streamId": spelling})
    with pytest.raises(Invalid, match="streamId"):
        parse(guide_payload(streamId=spelling))


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-03-01 11:59:30Z",
        "2026-03-01t11:59:30z",
        "20260301T115930Z",
        "2026-03-01T115930Z",
        "2026-03-01T11:59Z",
        "2026-03-01T11:59:30+0100",
        "2026-03-01T11:59:30.Z",
        "2026-03-01T11:59:30.1234567890Z",
        "2026-060T11:59:30Z",
        "2026-W09-7T11:59:30Z",
        "2026-03-01T11:59:60Z",
        "\u0662026-03-01T11:59:30Z",
    ],
)
def test_timestamps_must_be_rfc_3339(timestamp):
    with pytest.raises(Invalid, match="timestamp"):
        parse(guide_payload(timestamp=timestamp))


def test_fractions_beyond_microseconds_are_cut_to_what_is_stored():
    update = parse(guide_payload(timestamp="2026-03-01T11:59:30.123456789Z"))
    assert update.row.time == datetime(2026, 3, 1, 11, 59, 30, 123456, tzinfo=UTC)
    assert update.timestamp == "2026-03-01T11:59:30.123456Z"
    moment = datetime(2026, 3, 1, 11, 59, 30, 100000, tzinfo=UTC)
    assert parse(guide_payload(timestamp="2026-03-01T11:59:30.1Z")).row.time == moment


def test_negative_zero_is_stored_as_zero():
    row = parse(with_stats(bitrate=-0.0, audioLevel=-0.0, packetLoss=-0.0)).row
    for value in (row.bitrate_kbps, row.audio_level_db, row.packet_loss_pct):
        assert value == 0 and math.copysign(1, value) == 1


def test_wire_json_reads_ordinary_packets_like_json():
    wire = WireJson(16 * 1024)
    text = json.dumps(["stream:stats:update", guide_payload()])
    assert wire.loads(text) == json.loads(text)


def test_wire_json_does_not_parse_an_oversize_event():
    wire = WireJson(16 * 1024)
    text = json.dumps(["stream:stats:update", guide_payload(pad="x" * 20_000)])
    name, body = wire.loads(text)
    assert name == "stream:stats:update" and isinstance(body, Oversize)
    with pytest.raises(TooLarge):
        parse(body)


def test_wire_json_counts_bytes_not_characters():
    wire = WireJson(16 * 1024)
    text = json.dumps(["stream:stats:update", {"pad": "é" * 9000}], ensure_ascii=False)
    assert len(text) < 16 * 1024 < len(text.encode())
    assert isinstance(wire.loads(text)[1], Oversize)


def test_wire_json_turns_too_deep_nesting_into_an_invalid_payload():
    wire = WireJson(16 * 1024)
    text = '["stream:stats:get",' + "[" * 5000 + "]" * 5000 + "]"
    name, body = wire.loads(text)
    assert name == "stream:stats:get" and isinstance(body, Unparseable)
    with pytest.raises(Invalid):
        stream_ref(body)


def test_wire_json_turns_unreadable_numbers_into_an_invalid_payload():
    wire = WireJson(16 * 1024)
    name, body = wire.loads('["stream:stats:update",{"x":' + "9" * 5000 + "}]")
    assert name == "stream:stats:update" and isinstance(body, Unparseable)


def test_wire_json_refuses_unreadable_packets_that_are_not_events():
    with pytest.raises(ValueError):
        WireJson(16 * 1024).loads("[" * 5000 + "]" * 5000)


def test_wire_json_finds_the_event_name_after_whitespace():
    wire = WireJson(16 * 1024)
    text = ' [ "stream:stats:update" , {"pad": "' + "x" * 20_000 + '"}]'
    name, body = wire.loads(text)
    assert name == "stream:stats:update" and isinstance(body, Oversize)


def test_wire_json_drops_an_oversize_event_it_cannot_answer():
    with pytest.raises(ValueError):
        WireJson(16 * 1024).loads('[17, {"pad": "' + "x" * 20_000 + '"}]')


def test_wire_json_reads_large_objects_such_as_the_redis_managers_messages():
    message = {"method": "emit", "data": ["x" * 20_000]}
    assert WireJson(16 * 1024).loads(json.dumps(message)) == message


def test_wire_json_reads_what_only_the_stdlib_reads_as_the_stdlib_does():
    # NaN literals and integers over 64 bits: still read, so validation names the field.
    wire = WireJson(16 * 1024)
    name, body = wire.loads('["stream:stats:update",{"bitrate":NaN,"fps":' + "9" * 400 + "}]")
    assert name == "stream:stats:update" and math.isnan(body["bitrate"])
    assert body["fps"] == int("9" * 400)
    with pytest.raises(Invalid) as info:
        parse(guide_payload(stats=body))
    assert info.value.field == "stats.bitrate"


def test_wire_json_writes_compact_json_and_what_only_the_stdlib_writes():
    assert WireJson.dumps([{"a": 1, "b": [0.1, None]}], separators=(",", ":")) == (
        '[{"a":1,"b":[0.1,null]}]'
    )
    assert json.loads(WireJson.dumps({1: 2**70})) == {"1": 2**70}
