"""The protective order forms apply_layer uses, run the same way against Binance (the fake, through
python-binance) and the paper exchange: both must answer alike.

- the take-profit: one closePosition TAKE_PROFIT_MARKET;
- the stop: a quantity-based reduce-only STOP_MARKET (quantity = the position), replaced by placing the
  new one first and cancelling the old one — never a moment without a stop;
- a second closePosition stop in one direction is -4130 on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import fakeredis
import pytest

from common import keys
from common.config import PaperSettings
from common.contracts.base import now_ms
from common.contracts.enums import Side
from common.exchange.base import ConditionalKind, ConditionalStatus, Exchange, Fill
from common.exchange.errors import OrderRejected
from common.exchange.paper import PaperExchange
from common.exchange.rules import load_rules_file
from common.market import price_mapping
from tests.fakes.fake_binance import FakeBinance, FakeBinanceServer
from tests.integration.binance.support import started
from tests.unit.exchange.paper.env import REPO

STOP, TP = ConditionalKind.STOP_MARKET, ConditionalKind.TAKE_PROFIT_MARKET
D = Decimal
PLAN = "qt-aaaaaaaaaaaaaaaa"
CLOSE_POSITION_EXISTS = "An open stop or take profit order with GTE and closePosition in the direction is existing."

Mark = Callable[[str], Awaitable[list[Fill]]]  # move the BTCUSDT mark; the conditional fills it caused


async def scenario(exchange: Exchange, mark: Mark) -> dict[str, Any]:
    """Entry, take-profit, -4130, stop replaced twice without a gap, the stop fires."""
    seen: dict[str, Any] = {}
    await mark("60000")
    await exchange.place_market_order("BTCUSDT", Side.BUY, D("0.010"), PLAN, reduce_only=False)
    await exchange.place_conditional("BTCUSDT", TP, Side.SELL, D("63000"), f"{PLAN}-tp")
    await exchange.place_conditional("BTCUSDT", STOP, Side.SELL, D("57000"), f"{PLAN}-cp")
    with pytest.raises(OrderRejected) as refused:
        await exchange.place_conditional("BTCUSDT", STOP, Side.SELL, D("57500"), f"{PLAN}-cp2")
    seen["refused"] = (refused.value.code, refused.value.message)
    await exchange.cancel_conditional("BTCUSDT", f"{PLAN}-cp")
    previous = None
    for n, trigger in enumerate(("58000", "58500", "59000"), start=1):
        stop = f"{PLAN}-sl{n}"
        placed = await exchange.place_conditional("BTCUSDT", STOP, Side.SELL, D(trigger), stop,
                                                  close_position=False, quantity=D("0.010"))
        assert (placed.quantity, placed.close_position, placed.status) == (D("0.010"), False, ConditionalStatus.NEW)
        if previous is not None:  # both rest now: the old one goes only after the new one is in
            seen.setdefault("overlap", []).append(sorted(o.client_algo_id for o in await exchange.open_conditionals()))
            await exchange.cancel_conditional("BTCUSDT", previous)
        previous = stop
    seen["open"] = sorted(o.client_algo_id for o in await exchange.open_conditionals("BTCUSDT"))
    seen["fills"] = [(f.client_order_id, f.qty, f.side) for f in await mark("58900")]
    seen["position"] = (await exchange.positions()).get("BTCUSDT")
    seen["tp"] = (await exchange.get_conditional("BTCUSDT", f"{PLAN}-tp")).status
    seen["sl"] = (await exchange.get_conditional("BTCUSDT", f"{PLAN}-sl3")).status
    return seen


def on_fake(server: FakeBinanceServer, fake: FakeBinance) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        exchange = await started(server)

        async def mark(price: str) -> list[Fill]:
            since = fake.now_ms()
            fake.set_mark_price("BTCUSDT", price)
            return [f for f in await exchange.fills_since("BTCUSDT", since) if f.client_order_id != PLAN]

        try:
            return await scenario(exchange, mark)
        finally:
            await exchange.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


def on_paper() -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        redis = fakeredis.FakeAsyncRedis()
        rules = load_rules_file(REPO / "config" / "paper_symbols.json")
        exchange = PaperExchange(redis, PaperSettings(slippage_bps=D("0")), rules, poll_interval_s=0.01)
        await exchange.start()

        async def mark(price: str) -> list[Fill]:
            fields: dict[Any, Any] = price_mapping(D(price), D(price), now_ms())
            await redis.hset(keys.market_price("BTCUSDT"), mapping=fields)
            return [e.fill for e in await exchange.check_triggers("BTCUSDT")]

        return await scenario(exchange, mark)

    return asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.parametrize("venue", ["binance-fake", "paper"])
def test_protective_order_forms_agree_on_binance_and_paper(
    venue: str, fake_binance_server: FakeBinanceServer, fake_binance: FakeBinance
) -> None:
    """Both venues: -4130 for a second closePosition stop; quantity stops overlap while replaced; the last
    one fires for the whole position; the closePosition take-profit expires with the position."""
    seen = on_fake(fake_binance_server, fake_binance) if venue == "binance-fake" else on_paper()
    assert seen["refused"] == (-4130, CLOSE_POSITION_EXISTS)
    sl1, sl2, sl3, tp = (f"{PLAN}-{suffix}" for suffix in ("sl1", "sl2", "sl3", "tp"))
    assert seen["overlap"] == [[sl1, sl2, tp], [sl2, sl3, tp]]
    assert seen["open"] == [f"{PLAN}-sl3", f"{PLAN}-tp"]
    assert seen["fills"] == [(f"{PLAN}-sl3", D("0.010"), Side.SELL)]
    assert seen["position"] is None
    assert (seen["tp"], seen["sl"]) == (ConditionalStatus.EXPIRED, ConditionalStatus.FINISHED)
