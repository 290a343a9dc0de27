import pytest

from analytics.quality import quality


@pytest.mark.parametrize(
    ("packet_loss", "latency", "fps", "expected"),
    [
        # The client guide's example sample.
        (0.5, 45, 30, "good"),
        # Each metric alone at and around its good bound.
        (0.99, None, None, "good"),
        (1.0, None, None, "fair"),
        (None, 99.9, None, "good"),
        (None, 100, None, "fair"),
        (None, None, 25, "good"),
        (None, None, 24.9, "fair"),
        # Each metric alone at and around its poor bound: the bound itself is still fair.
        (3.0, None, None, "fair"),
        (3.01, None, None, "poor"),
        (None, 200, None, "fair"),
        (None, 200.5, None, "poor"),
        (None, None, 20, "fair"),
        (None, None, 19.99, "poor"),
        # One poor metric makes the whole sample poor, however good the others are.
        (0, 0, 10, "poor"),
        (50, 10, 60, "poor"),
        (0, 1000, 60, "poor"),
        # One fair metric among good ones is fair.
        (0.1, 150, 30, "fair"),
        (2, 10, 30, "fair"),
        (0, 10, 22, "fair"),
        # Zero is a real value, not a missing one.
        (0, 0, 0, "poor"),
        (0, 0, None, "good"),
    ],
)
def test_quality_band_follows_the_protocol_thresholds(packet_loss, latency, fps, expected):
    assert quality(packet_loss, latency, fps) == expected


def test_a_sample_without_any_quality_metric_has_no_band():
    assert quality(None, None, None) is None
