"""The quality band of one sample (docs/protocol.md, "Quality band"), from three of its metrics."""

from __future__ import annotations

from typing import Literal

Quality = Literal["good", "fair", "poor"]

# Thresholds from the client guide's "Quality Indicators"; the bands between them are `fair`.
GOOD_MAX_PACKET_LOSS = 1.0
GOOD_MAX_LATENCY = 100.0
GOOD_MIN_FPS = 25.0
POOR_MIN_PACKET_LOSS = 3.0
POOR_MIN_LATENCY = 200.0
POOR_MAX_FPS = 20.0


def quality(packet_loss: float | None, latency: float | None, fps: float | None) -> Quality | None:
    """`good`, `fair` or `poor` from packet loss (%), latency (ms) and fps; None without any.

    A missing metric is ignored: the band is decided by the metrics that were sent.
    """
    if packet_loss is None and latency is None and fps is None:
        return None
    if (
        (packet_loss is not None and packet_loss > POOR_MIN_PACKET_LOSS)
        or (latency is not None and latency > POOR_MIN_LATENCY)
        or (fps is not None and fps < POOR_MAX_FPS)
    ):
        return "poor"
    if (
        (packet_loss is None or packet_loss < GOOD_MAX_PACKET_LOSS)
        and (latency is None or latency < GOOD_MAX_LATENCY)
        and (fps is None or fps >= GOOD_MIN_FPS)
    ):
        return "good"
    return "fair"
