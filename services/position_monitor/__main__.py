"""``python -m services.position_monitor``: snapshots, reconciliation and the read-only API.

It only reads the exchange (``positions()``); it never places an order and never writes a position hash.
"""

from __future__ import annotations

import structlog

from common.contracts import now_ms
from common.exchange.factory import build_exchange
from common.service import OUTAGES, ServiceContext, run
from common.streams import Service, Stream
from services.position_monitor.activity import Activity
from services.position_monitor.api import build_app
from services.position_monitor.metrics import METRICS
from services.position_monitor.queries import HealthView, Queries
from services.position_monitor.reconciler import Reconciler
from services.position_monitor.snapshot import take_snapshots

log = structlog.get_logger()




async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    monitor = settings.monitor
    exchange = build_exchange(ctx.redis, settings)
    await exchange.start()
    ctx.on_close(exchange.close)
    activity = Activity(monitor.recent_results)
    reconciler = Reconciler(ctx.redis, exchange, monitor)
    await reconciler.load_known()
    last_snapshot: dict[str, int] = {}

    async def snapshot() -> None:
        snaps = await take_snapshots(ctx.redis, exchange, monitor.snapshot_interval_s, now_ms())
        held = [s for s in snaps if s.position.position_amt != 0]
        METRICS.open_positions.set(len(held))
        METRICS.unrealized.set(float(sum(s.position.unrealized_pnl for s in held)))
        last_snapshot["at"] = now_ms()

    async def reconcile() -> None:
        await reconciler.run_once(ctx.stop)

    def health() -> HealthView:
        facts = ctx.health()
        return HealthView(service=ctx.service, instance=ctx.instance, healthy=bool(facts["healthy"]),
                          started_at=ctx.started_at, ts=now_ms(), exchange=exchange.name,
                          last_snapshot_at=last_snapshot.get("at"),
                          last_reconcile_at=reconciler.last.at if reconciler.last else None,
                          open_drifts=len(reconciler.known))

    # counted in memory, nothing written: committed in batches
    ctx.consume(Stream.APPLY_RESULT, activity.on_apply_result, batched=True)
    ctx.consume(Stream.EXECUTION_RESULT, activity.on_execution_result, batched=True)
    ctx.every("snapshot", monitor.snapshot_interval_s, snapshot, passing=OUTAGES, at_start=True)
    ctx.every("reconcile", monitor.reconcile_interval_s, reconcile, passing=OUTAGES, at_start=True)
    ctx.serve_http(build_app(Queries(ctx.redis, activity, reconciler), health))
    log.info("position_monitor_configured", exchange=exchange.name, resolution=monitor.resolution,
             snapshot_interval_s=monitor.snapshot_interval_s, reconcile_interval_s=monitor.reconcile_interval_s)


def main() -> None:
    run(Service.POSITION_MONITOR, setup)


if __name__ == "__main__":
    main()
