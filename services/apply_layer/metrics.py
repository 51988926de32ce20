"""apply_layer's own Prometheus metrics: orders by result, fills, latency, drift."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram


class ApplyMetrics:
    def __init__(self) -> None:
        self.results = Counter("qt_apply_results_total", "apply.result by action and decision",
                               ("action", "decision"))
        self.fills = Counter("qt_apply_fills_total", "execution.result published, by kind", ("kind",))
        self.latency = Histogram("qt_apply_plan_seconds", "Plan received to result (includes the exchange)",
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.settled = Counter("qt_apply_settled_total", "SUBMITTING plans settled by asking the exchange")
        self.open_positions = Gauge("qt_apply_open_positions", "Position hashes")
        self.drift = Gauge("qt_reconcile_drift", "Symbols whose position hash differs from the exchange",
                           ("service",))


METRICS = ApplyMetrics()
