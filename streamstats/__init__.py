"""stream-stats: live-stream health analytics on TimescaleDB."""

__version__ = "0.1.0"
