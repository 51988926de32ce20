"""Protective (algo) orders through python-binance against the fake: the order forms Binance allows
(-4130 for a second close-position stop; quantity-based reduce-only stops side by side), orders the
exchange rejects or expires after accepting them, and -2013 answers that do not prove "not placed"."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from common.contracts.enums import FillKind, Side
from common.exchange.base import (
    ConditionalEnded,
    ConditionalKind,
    ConditionalStatus,
    ExchangeEvent,
    OrderEvent,
)
from common.exchange.binance import BinanceExchange
from common.exchange.errors import OrderNotFound, OrderRejected
from common.exchange.placement import place_conditional_once
from tests.fakes.fake_binance import FakeBinance, FakeBinanceServer
from tests.integration.binance.support import (
    ALGO,
    ALL_ALGOS,
    FAST,
    OPEN_ALGOS,
    cid,
    collect,
    run,
    stream_ready,
    wait_until,
)

STOP, TP = ConditionalKind.STOP_MARKET, ConditionalKind.TAKE_PROFIT_MARKET
D = Decimal
CLOSE_POSITION_EXISTS = "An open stop or take profit order with GTE and closePosition in the direction is existing."


# --- item 3: order forms ------------------------------------------------------------------------------------


def test_a_second_close_position_stop_is_4130_but_a_take_profit_beside_it_is_accepted(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """Binance keeps one closePosition order per type and direction: a second closePosition STOP_MARKET SELL
    is -4130 with Binance's message; a closePosition TAKE_PROFIT_MARKET beside it is accepted."""

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("BTCUSDT", Side.BUY, D("0.01"), cid("cp1"), reduce_only=False)
        await ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("58000"), cid("cp1", "sl"))
        with pytest.raises(OrderRejected) as second:
            await ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("58500"), cid("cp2", "sl"))
        await ex.place_conditional("BTCUSDT", TP, Side.SELL, D("63000"), cid("cp1", "tp"))
        return second.value, await ex.open_conditionals("BTCUSDT")

    error, open_now = run(server, body)
    assert (error.code, error.message) == (-4130, CLOSE_POSITION_EXISTS)
    assert sorted(o.client_algo_id for o in open_now) == [cid("cp1", "sl"), cid("cp1", "tp")]


def test_quantity_based_stops_rest_together_and_replace_without_a_gap(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """The stop form apply_layer uses: quantity = position, reduceOnly "true". A new one is placed while
    the old one rests (no window without a stop), then the old one is cancelled; the new one fires for
    the position, and the close-position take-profit expires with the position."""

    async def body(ex: BinanceExchange) -> Any:
        received: list[OrderEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await stream_ready(ex, fake)
        await ex.place_market_order("BTCUSDT", Side.BUY, D("0.010"), cid("q1"), reduce_only=False)
        await ex.place_conditional("BTCUSDT", TP, Side.SELL, D("63000"), cid("q1", "tp"))
        old = await ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("58000"), "qt-q1-sl-1",
                                         close_position=False, quantity=D("0.010"))
        new = await ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("58500"), "qt-q1-sl-2",
                                         close_position=False, quantity=D("0.010"))
        both = sorted(o.client_algo_id for o in await ex.open_conditionals("BTCUSDT"))
        await ex.cancel_conditional("BTCUSDT", "qt-q1-sl-1")
        fake.set_mark_price("BTCUSDT", "58400")
        await wait_until(lambda: len(received) == 2)
        tp = await ex.get_conditional("BTCUSDT", cid("q1", "tp"))
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return old, new, both, received, tp

    old, new, both, received, tp = run(server, body, poll_interval_s=60)
    assert (old.quantity, old.close_position, new.quantity) == (D("0.01"), False, D("0.01"))
    sent = [r.params for r in fake.requests(ALGO, "POST")]
    assert [(p.get("quantity"), p.get("reduceOnly"), p.get("closePosition")) for p in sent] == [
        (None, None, "true"), ("0.010", "true", None), ("0.010", "true", None)]
    assert both == ["qt-q1-sl-1", "qt-q1-sl-2", cid("q1", "tp")]
    fill, ended = received
    assert isinstance(fill, ExchangeEvent) and fill.kind is FillKind.STOP and fill.origin_id == "qt-q1-sl-2"
    assert fill.fill.qty == D("0.010") and fake.position_amt("BTCUSDT") == 0
    assert isinstance(ended, ConditionalEnded) and ended.client_algo_id == cid("q1", "tp")
    assert ended.status is ConditionalStatus.EXPIRED and tp.status is ConditionalStatus.EXPIRED


def test_a_stop_above_the_position_closes_the_position_and_no_more(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """A reduce-only stop for more than the position (a partial close happened meanwhile) fills the
    position only and never opens the other side (the fake caps it; not confirmed from Binance docs)."""

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("ETHUSDT", Side.SELL, D("0.5"), cid("o1"), reduce_only=False)
        await ex.place_conditional("ETHUSDT", STOP, Side.BUY, D("3100"), cid("o1", "sl"),
                                   close_position=False, quantity=D("0.5"))
        await ex.place_market_order("ETHUSDT", Side.BUY, D("0.2"), cid("o2"), reduce_only=True)
        since = fake.now_ms()
        fake.set_mark_price("ETHUSDT", "3150")
        return await ex.fills_since("ETHUSDT", since)

    [fill] = run(server, body)
    assert fill.client_order_id == cid("o1", "sl") and fill.qty == D("0.3") and fill.side is Side.BUY
    assert fake.position_amt("ETHUSDT") == 0


def test_an_orphaned_quantity_stop_outlives_the_position_and_is_cancelled_when_it_fires(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """A quantity-based reduce-only stop is not known to expire with its position (only closePosition /
    GTE_GTC ones are): it stays open, and firing with nothing to reduce ends it CANCELED with rm
    "Reduce Only reject" (the docs' ALGO_UPDATE sample) — an event, since the exchange ended it."""

    async def body(ex: BinanceExchange) -> Any:
        received: list[OrderEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await stream_ready(ex, fake)
        await ex.place_market_order("SOLUSDT", Side.BUY, D("2"), cid("or1"), reduce_only=False)
        await ex.place_conditional("SOLUSDT", STOP, Side.SELL, D("140"), cid("or1", "sl"),
                                   close_position=False, quantity=D("2"))
        await ex.place_market_order("SOLUSDT", Side.SELL, D("2"), cid("or2"), reduce_only=True)
        still_open = [o.client_algo_id for o in await ex.open_conditionals("SOLUSDT")]
        fake.set_mark_price("SOLUSDT", "139")
        await wait_until(lambda: len(received) == 1)
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return still_open, received

    still_open, [ended] = run(server, body, poll_interval_s=60)
    assert still_open == [cid("or1", "sl")]
    assert isinstance(ended, ConditionalEnded)
    assert (ended.status, ended.reason) == (ConditionalStatus.CANCELED, "Reduce Only reject")


# --- item 2: rejected and expired after acceptance -----------------------------------------------------------


def test_rejected_and_expired_algo_orders_arrive_as_conditional_ended(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """ALGO_UPDATE X=REJECTED / X=EXPIRED with rm becomes ConditionalEnded(status, reason) from events();
    a cancel we asked for (CANCELED without rm) does not."""

    async def body(ex: BinanceExchange) -> list[OrderEvent]:
        received: list[OrderEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await stream_ready(ex, fake)
        await ex.place_market_order("BTCUSDT", Side.BUY, D("0.01"), cid("r1"), reduce_only=False)
        for name in ("a", "b", "c"):
            await ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("58000"), f"qt-r1-sl-{name}",
                                       close_position=False, quantity=D("0.01"))
        await ex.cancel_conditional("BTCUSDT", "qt-r1-sl-c")
        fake.reject_algo("qt-r1-sl-a", "Margin is insufficient.")
        fake.expire_algo("qt-r1-sl-b", "GTE condition unsatisfied")
        await wait_until(lambda: len(received) == 2)
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return received

    rejected, expired = run(server, body, poll_interval_s=60)
    assert rejected == ConditionalEnded("BTCUSDT", "qt-r1-sl-a", ConditionalStatus.REJECTED,
                                        "Margin is insufficient.", rejected.ts_ms)
    assert isinstance(expired, ConditionalEnded) and expired.client_algo_id == "qt-r1-sl-b"
    assert (expired.status, expired.reason) == (ConditionalStatus.EXPIRED, "GTE condition unsatisfied")
    assert rejected.ts_ms > 0


def test_an_expired_algo_order_is_noticed_by_polling_while_the_stream_is_down(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """With the websocket refused, an open conditional of ours that left openAlgoOrders and answers
    EXPIRED (or REJECTED) to GET algoOrder becomes a ConditionalEnded (the REST answer has no reason)."""
    fake.set_ws_enabled(False)

    async def body(ex: BinanceExchange) -> list[OrderEvent]:
        received: list[OrderEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await ex.place_market_order("ETHUSDT", Side.BUY, D("0.1"), cid("p1"), reduce_only=False)
        await ex.place_conditional("ETHUSDT", STOP, Side.SELL, D("2900"), cid("p1", "sl"),
                                   close_position=False, quantity=D("0.1"))
        await ex.place_conditional("ETHUSDT", TP, Side.SELL, D("3300"), cid("p1", "tp"))
        fake.expire_algo(cid("p1", "sl"))
        await wait_until(lambda: len(received) == 1)
        polls = len(fake.requests(OPEN_ALGOS))
        await wait_until(lambda: len(fake.requests(OPEN_ALGOS)) >= polls + 2)  # polled again: no repeat
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return received

    [ended] = run(server, body)
    assert isinstance(ended, ConditionalEnded)
    assert (ended.client_algo_id, ended.status) == (cid("p1", "sl"), ConditionalStatus.EXPIRED)
    assert "polling" in ended.reason


# --- item 6: -2013 alone never proves "not placed" -------------------------------------------------------------


def test_get_conditional_looks_past_2013_into_open_and_historical_algo_orders(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """GET algoOrder answering -2013 for an open order (forced) and for a completed one past its retention:
    the first is found in openAlgoOrders, the second in allAlgoOrders (symbol given, last 7 days)."""

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("BTCUSDT", Side.BUY, D("0.02"), cid("g1"), reduce_only=False)
        await ex.place_conditional("BTCUSDT", TP, Side.SELL, D("63000"), cid("g1", "tp"))
        await ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("59000"), cid("g1", "sl"),
                                   close_position=False, quantity=D("0.01"))
        fake.hide_algo_from_query(cid("g1", "tp"))
        fake.set_algo_query_retention_ms(0)
        fake.set_mark_price("BTCUSDT", "58900")  # the stop fires: FINISHED
        open_one = await ex.get_conditional("BTCUSDT", cid("g1", "tp"))
        return open_one, await ex.get_conditional("BTCUSDT", cid("g1", "sl"))

    open_one, finished = run(server, body)
    assert open_one.status is ConditionalStatus.NEW and open_one.close_position
    assert finished.status is ConditionalStatus.FINISHED and finished.quantity == D("0.01")
    assert [r.status for r in fake.requests(ALGO, "GET")] == [400, 400]
    assert all(r.params["symbol"] == "BTCUSDT" for r in fake.requests(ALL_ALGOS))
    assert "symbol" not in fake.requests(ALGO, "GET")[0].params  # only the documented parameters


def test_get_conditional_is_not_found_only_when_no_list_has_it(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """-2013, and neither openAlgoOrders nor allAlgoOrders lists the id: OrderNotFound."""

    async def body(ex: BinanceExchange) -> None:
        with pytest.raises(OrderNotFound):
            await ex.get_conditional("BTCUSDT", cid("nope", "sl"))

    run(server, body)
    assert len(fake.requests(OPEN_ALGOS)) == 1 and len(fake.requests(ALL_ALGOS)) == 1


def test_placement_after_an_unknown_outcome_never_resends_a_stop_that_already_fired(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """POST algoOrder takes effect but its answer times out; before the query the stop fires and completes,
    and GET algoOrder says -2013 for it. place_conditional_once finds it in allAlgoOrders (FINISHED) and
    sends no second algo order."""
    fake.set_algo_query_retention_ms(0)
    fake.inject(ALGO, "POST", kind="timeout", execute=True, hold_s=1.5)
    sl = cid("u1", "sl")

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("BTCUSDT", Side.BUY, D("0.01"), cid("u1"), reduce_only=False)

        async def fire_when_placed() -> None:
            await wait_until(lambda: any(a["clientAlgoId"] == sl for a in fake.algo_orders()))
            fake.set_mark_price("BTCUSDT", "58900")

        firing = asyncio.create_task(fire_when_placed())
        order = await place_conditional_once(ex, "BTCUSDT", STOP, Side.SELL, D("59000"), sl,
                                             close_position=False, quantity=D("0.01"), policy=FAST)
        await firing
        return order

    order = run(server, body)
    assert len(fake.requests(ALGO, "POST")) == 1 and len(fake.algo_orders()) == 1
    assert order.client_algo_id == sl and order.status is ConditionalStatus.FINISHED
    assert fake.requests(ALGO, "GET")[0].status == 400 and fake.requests(ALL_ALGOS)


def test_placement_after_503_with_a_lagging_query_finds_the_open_stop(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """503 "unknown" (placed) and GET algoOrder -2013 for the new order: it is found in openAlgoOrders,
    one POST."""
    fake.inject(ALGO, "POST", kind="unknown")
    fake.hide_algo_from_query(cid("v1", "sl"))

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("BTCUSDT", Side.BUY, D("0.01"), cid("v1"), reduce_only=False)
        return await place_conditional_once(ex, "BTCUSDT", STOP, Side.SELL, D("59000"), cid("v1", "sl"),
                                            close_position=False, quantity=D("0.01"), policy=FAST)

    order = run(server, body)
    assert len(fake.requests(ALGO, "POST")) == 1 and order.status is ConditionalStatus.NEW
