"""Metrics rollups and read models for the console (see the metrics issue; not built yet)."""
