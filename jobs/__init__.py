"""Scheduled jobs: rollups, retention, bitrate drops, reports."""
