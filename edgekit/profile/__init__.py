"""Latency measurement: timing statistics and per-op breakdowns per runtime."""
