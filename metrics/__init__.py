"""Metrics: per-minute rollups of the ledger, analytics read models, Prometheus export
(docs/metrics.md). Imports ``db`` only."""
