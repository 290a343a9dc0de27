"""Webhook signatures, retry delays and bodies, checked against their documented definitions."""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from jobs.webhooks import MAX_BACKOFF, event_body, retry_delay, sign


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"id":"x"}'
    header = sign(b"k" * 32, 1700000000, body)
    t, v1 = header.split(",")
    assert t == "t=1700000000"
    # Computed independently from the documented recipe: hex HMAC-SHA256 of "<t>.<raw body>".
    expected = hmac.new(b"k" * 32, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert v1 == f"v1={expected}"
    assert sign(b"k" * 32, 1700000001, body) != header
    assert sign(b"j" * 32, 1700000000, body) != header


def test_retry_delays_double_with_jitter_and_stay_under_the_cap():
    base = timedelta(seconds=10)
    assert retry_delay(1, base, lambda: 1.0) == timedelta(seconds=10)
    assert retry_delay(1, base, lambda: 0.0) == timedelta(seconds=5)
    assert retry_delay(4, base, lambda: 1.0) == timedelta(seconds=80)
    assert retry_delay(40, base, lambda: 1.0) == MAX_BACKOFF
    assert retry_delay(1000, base, lambda: 0.0) == MAX_BACKOFF / 2


def test_the_body_is_id_type_created_at_and_data():
    record = {
        "public_id": "3f1c2d4e-0000-4000-8000-000000000001",
        "type": "alert.raised",
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC),
        "data": json.dumps(
            {
                "streamId": "s",
                "type": "fps_low",
                "state": "raised",
                "value": 9,
                "threshold": 20,
                "startedAt": "2026-01-02T03:04:00.000Z",
            }
        ),
    }
    body = json.loads(event_body(record, slack=False))
    assert body == {
        "id": "3f1c2d4e-0000-4000-8000-000000000001",
        "type": "alert.raised",
        "createdAt": "2026-01-02T03:04:05.678Z",
        "data": json.loads(record["data"]),
    }
    slack = json.loads(event_body(record, slack=True))
    assert (
        slack["text"]
        == "fps_low raised on stream s: 9 (threshold 20) since 2026-01-02T03:04:00.000Z"
    )
