"""Why resolution=adopt publishes no plan: against the real executor, a full close of a position hash
larger than the exchange's position moves both sides by the filled quantity and leaves the difference
behind. If apply_layer ever settles a capped full close by deleting the hash, this test fails and adopt
can start publishing that plan for ``manual:exchange_holds_less``."""

from __future__ import annotations

from decimal import Decimal

from common.config import MonitorSettings
from common.contracts import ReconcileKind, Side
from services.position_monitor.reconciler import Reconciler
from tests.helpers import run
from tests.integration.apply_layer.harness import close, entry, running

D = Decimal


def test_adopt_reports_a_qty_mismatch_that_no_plan_can_settle(redis_url: str) -> None:
    """Long 0.02 BTC through apply_layer, 0.005 closed on the exchange behind its back: adopt reports
    QTY_MISMATCH (0.02 vs 0.015) as manual:exchange_holds_less and publishes no plan. A full close sent
    anyway fills 0.015 (the exchange caps it) and leaves the hash at 0.005: MISSING_ON_EXCHANGE."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            plan = entry("adopt-1", qty="0.02")
            await h.send(plan)
            assert (await h.result(plan)).decision.value == "EXECUTE"
            await h.paper.place_market_order("BTCUSDT", Side.SELL, D("0.005"), "manual-1", reduce_only=True)
            reconciler = Reconciler(h.redis, h.paper, MonitorSettings(resolution="adopt", confirm_delay_s=0.05))

            [event] = (await reconciler.run_once()).events
            assert (event.drift.kind, event.drift.redis_qty, event.drift.exchange_qty, event.action_taken) == (
                ReconcileKind.QTY_MISMATCH, D("0.02"), D("0.015"), "manual:exchange_holds_less")
            assert [f["action"] for f in await h.stream("apply.plan")] == ["ENTRY_PROPOSED"]

            full = close("adopt-close", plan.plan_id)
            await h.send(full)
            assert (await h.result(full)).filled_qty == D("0.015")
            position = await h.position()
            assert position is not None and position.quantity == D("0.005")
            assert await h.paper.positions() == {}
            [changed] = (await reconciler.run_once()).events
            assert (changed.drift.kind, changed.action_taken) == (ReconcileKind.MISSING_ON_EXCHANGE,
                                                                  "awaiting_apply_layer_fill_catch_up")

    run(scenario())
