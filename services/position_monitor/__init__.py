"""position_monitor: snapshots of every position, reconciliation against the exchange, the read-only API."""
