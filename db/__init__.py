"""The ledger: engine, models, migrations and every job state transition (SQL lives here only)."""
