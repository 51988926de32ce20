"""position_monitor's own Prometheus metrics: results by decision, fills, positions, drift, PnL."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


class MonitorMetrics:
    def __init__(self) -> None:
        self.results = Counter("qt_monitor_apply_results_total", "apply.result seen, by action and decision",
                               ("action", "decision"))
        self.fills = Counter("qt_monitor_fills_total", "execution.result seen, by kind", ("kind",))
        self.open_positions = Gauge("qt_monitor_open_positions", "Positions at the last snapshot")
        self.unrealized = Gauge("qt_monitor_unrealized_pnl", "Unrealized PnL of all positions at the last snapshot")
        self.drift = Gauge("qt_monitor_drift", "Symbols whose position hash differs from the exchange")
        self.drift_events = Counter("qt_monitor_drift_events_total", "Drifts that started or ended, by kind",
                                    ("kind",))


METRICS = MonitorMetrics()
