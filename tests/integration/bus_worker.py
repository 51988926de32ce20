"""A real service process for the bus tests, run through the real service runner.

``python -m tests.integration.bus_worker hop1`` consumes trade.intent as intent_bridge and publishes one
apply.plan per intent; ``hop2`` consumes apply.plan as apply_layer and publishes one apply.result per
plan; ``flaky_setup`` is hop1 whose setup meets an outage twice first. ``QT_TEST_DELAY_MS`` slows each
entry down (to catch a batch in hand).
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal

from fastapi import FastAPI

from common.bus import Delivery, Effects
from common.contracts import ApplyPlan, ApplyResult, TradeIntent
from common.exchange.errors import TemporaryError
from common.service import ServiceContext, run
from common.streams import Service, Stream
from tests.helpers import entry_plan

DELAY_S = int(os.environ.get("QT_TEST_DELAY_MS", "0")) / 1000


async def hop1(delivery: Delivery) -> Effects:
    assert isinstance(delivery.message, TradeIntent)
    if DELAY_S:
        await asyncio.sleep(DELAY_S)
    return Effects().publish(Stream.APPLY_PLAN, entry_plan(delivery.message))


async def hop2(delivery: Delivery) -> Effects:
    plan = delivery.message
    assert isinstance(plan, ApplyPlan)
    if DELAY_S:
        await asyncio.sleep(DELAY_S)
    result = ApplyResult(source=Service.APPLY_LAYER, trace_id=plan.trace_id, plan_id=plan.plan_id,
                         symbol=plan.symbol, action=plan.action, decision="EXECUTE", executed=True,
                         filled_qty=plan.qty or Decimal(0))
    return Effects().publish(Stream.APPLY_RESULT, result)


def main() -> None:
    hop = sys.argv[1]
    if hop == "hang":

        async def setup_hang(ctx: ServiceContext) -> None:
            async def hangs_after_a_while(ctx: ServiceContext) -> None:
                for _ in range(10):
                    ctx.beat("hangs")
                    await asyncio.sleep(0.1)
                await asyncio.Event().wait()  # a loop stuck for good: no more beats

            ctx.loop("hangs", hangs_after_a_while)

        run(Service.GOVERNOR, setup_hang)
    elif hop == "http":

        async def setup_http(ctx: ServiceContext) -> None:
            app = FastAPI()
            app.get("/health")(ctx.health)
            ctx.serve_http(app)

        run(Service.TRADING_BOT, setup_http)
    elif hop == "flaky_setup":
        failures = {"left": 2}

        async def setup_flaky(ctx: ServiceContext) -> None:
            ctx.consume(Stream.TRADE_INTENT, hop1)  # registered before the failure: dropped with the attempt
            if failures["left"]:
                failures["left"] -= 1
                raise TemporaryError("paper start: redis unavailable: Connection closed by server.")

        run(Service.INTENT_BRIDGE, setup_flaky)
    elif hop == "hop1":

        async def setup1(ctx: ServiceContext) -> None:
            ctx.consume(Stream.TRADE_INTENT, hop1)

        run(Service.INTENT_BRIDGE, setup1)
    else:

        async def setup2(ctx: ServiceContext) -> None:
            ctx.consume(Stream.APPLY_PLAN, hop2)

        run(Service.APPLY_LAYER, setup2)


if __name__ == "__main__":
    main()
