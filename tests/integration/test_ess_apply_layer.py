"""The kill switch as apply_layer obeys it: `qt ess trip --flatten` stops new entries (SKIP ess_tripped)
while its close plans execute; `qt ess reset` lets entries through again."""

from __future__ import annotations

import asyncio

from common import keys
from common.contracts import Decision
from common.governance import flatten_plan_id
from tests.helpers import poll, run
from tests.integration.apply_layer.harness import running
from tests.integration.test_cli_streams import qt
from tests.plans import entry

PRICES = {"BTCUSDT": "50000", "ETHUSDT": "3000", "SOLUSDT": "150"}


def test_tripped_switch_skips_entries_while_the_flatten_exit_executes(redis_url: str) -> None:
    """With a BTC long open, `qt ess trip --flatten`: an ETH entry is skipped as ess_tripped, the BTC
    flatten plan (reason ess_flatten) executes and removes the position; after `qt ess reset` a SOL entry
    executes."""

    async def scenario() -> None:
        async with running(redis_url, prices=PRICES) as h:
            opened = entry("btc-long")
            await h.send(opened)
            assert (await h.result(opened)).decision is Decision.EXECUTE
            position = await h.position("BTCUSDT")
            assert position is not None and position.plan_id == opened.plan_id

            tripped = await asyncio.to_thread(qt, redis_url, "ess", "trip", "--reason", "drill", "--flatten")
            assert tripped.returncode == 0, tripped.stdout + tripped.stderr
            assert await h.redis.hget(keys.ess(), "state") == "TRIPPED"
            blocked = entry("eth-long", symbol="ETHUSDT", qty="0.1", price="3000")
            await h.send(blocked)

            skipped = await h.result(blocked)
            assert (skipped.decision, skipped.error, skipped.executed) == (Decision.SKIP, "ess_tripped", False)
            flatten_id = flatten_plan_id(opened.plan_id)

            async def closed_arrived() -> bool:
                return bool(await h.results(flatten_id))

            await poll(closed_arrived, timeout_s=15)
            [closed] = await h.results(flatten_id)
            assert closed.decision is Decision.EXECUTE and closed.reduce_only is True
            assert closed.filled_qty == position.quantity
            assert await h.position("BTCUSDT") is None
            assert await h.position("ETHUSDT") is None

            reset = await asyncio.to_thread(qt, redis_url, "ess", "reset")
            assert reset.returncode == 0, reset.stdout + reset.stderr
            after = entry("sol-long", symbol="SOLUSDT", qty="2", price="150")
            await h.send(after)
            assert (await h.result(after)).decision is Decision.EXECUTE

    run(scenario())
