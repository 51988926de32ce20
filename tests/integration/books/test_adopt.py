"""resolution=adopt: position_monitor publishes ADOPT_EXCHANGE and apply_layer — the only writer of
position hashes — makes the hash equal the exchange's position; the next reconcile finds it RESOLVED."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.config import MonitorSettings
from common.contracts import ApplyPlan, Decision, ReconcileKind, Side, decode
from common.streams import Stream
from services.position_monitor.reconciler import Reconciler
from tests.helpers import poll, run
from tests.integration.apply_layer.harness import Harness, running
from tests.plans import entry

D = Decimal


async def adopt_once(h: Harness, reconciler: Reconciler) -> ApplyPlan:
    """One reconcile pass; the ADOPT_EXCHANGE plan it published, once apply_layer has answered it."""
    report = await reconciler.run_once()
    [event] = report.events
    assert event.action_taken == "adopt_exchange_planned"
    plans = [decode(ApplyPlan, f) for f in await h.stream(Stream.APPLY_PLAN)]
    plan = plans[-1]
    assert plan.action.value == "ADOPT_EXCHANGE" and plan.source == "position_monitor"
    assert (await h.result(plan)).decision is Decision.EXECUTE
    return plan


@pytest.mark.parametrize("case", ["exchange_holds_less", "closed_on_exchange", "untracked_on_exchange"])
def test_adopt_makes_the_hash_follow_the_exchange(redis_url: str, case: str) -> None:
    """QTY_MISMATCH keeps the position's plan with the exchange's quantity; MISSING_ON_EXCHANGE deletes
    the hash; MISSING_IN_REDIS takes the exchange's position over under the adoption plan's id. Each ends
    with RESOLVED and entries unblocked."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            reconciler = Reconciler(h.redis, h.paper, MonitorSettings(resolution="adopt", confirm_delay_s=0.05))
            plan = entry("adopt-1", qty="0.02")
            if case != "untracked_on_exchange":
                await h.send(plan)
                assert (await h.result(plan)).decision is Decision.EXECUTE
            if case == "exchange_holds_less":
                await h.paper.place_market_order("BTCUSDT", Side.SELL, D("0.005"), "manual-1", reduce_only=True)
            elif case == "closed_on_exchange":
                await h.paper.place_market_order("BTCUSDT", Side.SELL, D("0.02"), "manual-1", reduce_only=True)
            else:
                await h.paper.place_market_order("BTCUSDT", Side.BUY, D("0.003"), "manual-1", reduce_only=False)
            adoption = await adopt_once(h, reconciler)
            position = await h.position()
            if case == "exchange_holds_less":
                assert position is not None and position.quantity == D("0.015") and position.plan_id == plan.plan_id
            elif case == "closed_on_exchange":
                assert position is None
            else:
                assert position is not None and position.quantity == D("0.003")
                assert position.plan_id == adoption.plan_id and position.side.value == "LONG"
            await poll(lambda: _resolved(reconciler))

    run(scenario())


async def _resolved(reconciler: Reconciler) -> bool:
    report = await reconciler.run_once()
    return not report.drifts and any(e.drift.kind is ReconcileKind.RESOLVED for e in report.events)
