"""Prometheus metrics of the bus runtime (one set per process)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class BusMetrics:
    """Entries processed, dead-lettered, handler errors, handler latency, lag and pending."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        labels = ("stream", "group")
        self.processed = Counter("qt_bus_entries_processed_total", "Entries handled and acknowledged",
                                 labels, registry=reg)
        self.dead_lettered = Counter("qt_bus_dead_lettered_total", "Entries sent to the dead-letter stream",
                                     (*labels, "reason"), registry=reg)
        self.handler_errors = Counter("qt_bus_handler_errors_total", "Handler exceptions (entry left pending)",
                                      labels, registry=reg)
        self.handler_seconds = Histogram("qt_bus_handler_seconds", "Handler latency", labels, registry=reg,
                                         buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.lag = Gauge("qt_bus_lag", "Entries of the stream not yet delivered to the group", labels,
                         registry=reg)
        self.pending = Gauge("qt_bus_pending", "Entries delivered to the group and not acknowledged", labels,
                             registry=reg)
        self.redis_reconnects = Counter("qt_bus_redis_reconnects_total", "Redis outages survived", ("stream",),
                                        registry=reg)


_default: BusMetrics | None = None


def default_metrics() -> BusMetrics:
    """The process-wide metrics on the default registry (created once)."""
    global _default
    if _default is None:
        _default = BusMetrics()
    return _default
