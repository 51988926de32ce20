"""BinanceExchange.events() against the fake: the user data stream, its reconnects, and polling as the
fallback; fills of our protective orders and of Binance's own (liquidation, ADL) orders."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalKind, ExchangeEvent, OrderEvent
from common.exchange.binance import BinanceExchange, user_stream_url
from tests.fakes.fake_binance import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance, FakeBinanceServer
from tests.integration.binance.support import cid, collect, run, stream_ready, wait_until

# --- events -------------------------------------------------------------------------------------------


def test_triggered_stop_arrives_through_the_websocket(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """With the user data stream up, a stop triggered by the mark price arrives through events() as a
    STOP fill of qt-<plan>-sl, from ORDER_TRADE_UPDATE (polling is off: poll_interval_s=60)."""

    async def body(ex: BinanceExchange) -> list[ExchangeEvent]:
        received: list[ExchangeEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await stream_ready(ex, fake)
        await ex.place_market_order("BTCUSDT", Side.BUY, Decimal("0.01"), cid("p1"), reduce_only=False)
        await ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, Decimal("59000"), cid("p1", "sl"))
        trades_before = len(fake.requests("/fapi/v1/userTrades"))
        fake.set_mark_price("BTCUSDT", Decimal("58950"))
        await wait_until(lambda: len(received) == 1)
        assert len(fake.requests("/fapi/v1/userTrades")) == trades_before  # not polled
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return received

    [event] = run(server, body, poll_interval_s=60)
    assert event.kind is FillKind.STOP and event.origin_id == cid("p1", "sl")
    assert event.fill.qty == Decimal("0.01") and event.fill.price == Decimal("58950")
    assert event.fill.side is Side.SELL and event.fill.reduce_only
    assert event.fill.realized_pnl == Decimal("-10.5")
    assert fake.position_amt("BTCUSDT") == 0


def test_triggered_take_profit_arrives_by_polling_when_the_websocket_is_down(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """With the websocket refused, events() polls userTrades: the take-profit fill still arrives, once."""
    fake.set_ws_enabled(False)

    async def body(ex: BinanceExchange) -> list[ExchangeEvent]:
        received: list[ExchangeEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await ex.place_market_order("SOLUSDT", Side.SELL, Decimal("3"), cid("q1"), reduce_only=False)
        await ex.place_conditional(
            "SOLUSDT", ConditionalKind.TAKE_PROFIT_MARKET, Side.BUY, Decimal("140"), cid("q1", "tp")
        )
        fake.set_mark_price("SOLUSDT", Decimal("139.5"))
        await wait_until(lambda: len(received) == 1)
        polls = len(fake.requests("/fapi/v1/userTrades"))
        await wait_until(lambda: len(fake.requests("/fapi/v1/userTrades")) >= polls + 2)  # two more polls
        assert not ex.user_stream_connected
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return received

    [event] = run(server, body)
    assert event.kind is FillKind.TAKE_PROFIT and event.origin_id == cid("q1", "tp")
    assert event.fill.client_order_id == cid("q1", "tp")
    assert event.fill.qty == Decimal("3") and event.fill.price == Decimal("139.5")


@pytest.mark.parametrize(
    ("how", "client_prefix"),
    [("LIQUIDATION", "autoclose-"), ("LIMIT", "autoclose-"), ("ADL", "adl_autoclose")],
    ids=["liquidation-calculated", "liquidation-limit-trade", "adl"],
)
def test_forced_closes_arrive_as_liquidation_events(
    server: FakeBinanceServer, fake: FakeBinance, how: str, client_prefix: str
) -> None:
    """A liquidation (an ``autoclose-`` order, on the stream either type LIQUIDATION / execution CALCULATED
    or LIMIT / TRADE) and an ADL (``adl_autoclose``, LIMIT) arrive as LIQUIDATION fills whose origin is the
    exchange's order id — through the stream, and through polling (where GET order says LIMIT)."""

    async def body(ex: BinanceExchange) -> Any:
        received: list[OrderEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await stream_ready(ex, fake)
        await ex.place_market_order("ETHUSDT", Side.BUY, Decimal("1"), cid("r1"), reduce_only=False)
        since = fake.now_ms()
        if how == "ADL":
            order = fake.adl("ETHUSDT", Decimal("2850"))
        else:
            order = fake.liquidate("ETHUSDT", Decimal("2850"), stream_type=how)
        await wait_until(lambda: len(received) == 1)
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        fresh = BinanceExchange(ex.settings)
        await fresh.start()
        try:
            polled = await fresh.fills_since("ETHUSDT", since)
            kind = (await fresh.fills.fill_facts("ETHUSDT", polled[0].order_id))[1]
        finally:
            await fresh.close()
        return order, received, polled, kind

    order, [event], [polled], polled_type = run(server, body, poll_interval_s=60)
    assert isinstance(event, ExchangeEvent)
    assert event.kind is FillKind.LIQUIDATION and event.fill.price == Decimal("2850")
    assert event.origin_id == str(order["orderId"]) and event.fill.client_order_id.startswith(client_prefix)
    assert order["type"] == "LIMIT" and polled_type == "LIMIT"
    assert polled.client_order_id == order["clientOrderId"] and polled.fill_id == event.fill.fill_id


def test_stream_reconnects_with_a_new_listen_key_and_catches_up(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The listen key expires while a stop fills with nobody listening: the adapter creates a new key,
    reconnects, catches up by polling once, and the fill arrives exactly once."""

    async def body(ex: BinanceExchange) -> list[ExchangeEvent]:
        received: list[ExchangeEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await stream_ready(ex, fake)
        await ex.place_market_order("BTCUSDT", Side.SELL, Decimal("0.01"), cid("s1"), reduce_only=False)
        await ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.BUY, Decimal("61000"), cid("s1", "sl"))
        fake.set_ws_enabled(False)
        fake.expire_listen_key()
        await wait_until(lambda: not ex.user_stream_connected)
        fake.set_mark_price("BTCUSDT", Decimal("61500"))  # fills while the stream is down
        fake.set_ws_enabled(True)
        await wait_until(lambda: ex.user_stream_connected and len(received) == 1)
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return received

    [event] = run(server, body, poll_interval_s=60)
    assert event.kind is FillKind.STOP and event.fill.price == Decimal("61500")
    assert fake.listen_keys_issued == 2


def test_listen_key_is_kept_alive(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The listen key is renewed (PUT /fapi/v1/listenKey) every listen_key_keepalive_s."""

    async def body(ex: BinanceExchange) -> None:
        consumer = asyncio.create_task(collect(ex.events(), []))
        await wait_until(lambda: fake.keepalives >= 1, timeout_s=5)
        await ex.close()
        await asyncio.wait_for(consumer, 5)

    run(server, body, listen_key_keepalive_s=1, poll_interval_s=60)
    assert fake.requests("/fapi/v1/listenKey", "PUT")[0].params["listenKey"].startswith("fakeListenKey")


def test_user_stream_url_follows_the_base_url() -> None:
    """The websocket base is derived from BinanceSettings.base_url, like the REST base."""
    assert user_stream_url("http://127.0.0.1:9000", testnet=False) == "ws://127.0.0.1:9000/private/ws/"
    assert user_stream_url("https://example.test/fapi/", testnet=False) == "wss://example.test/private/ws/"
    assert user_stream_url("", testnet=False) == "wss://fstream.binance.com/private/ws/"
    assert user_stream_url("", testnet=True) == "wss://fstream.binancefuture.com/private/ws/"


def test_fake_serves_market_data_and_order_endpoints_in_binance_shapes(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """Through a bare python-binance AsyncClient: klines are deterministic (or what the test set),
    openOrders lists nothing once market orders filled, and cancelling a filled order is -2011."""
    fake.set_klines("ETHUSDT", "5m", [[0, "1", "2", "0.5", "1.5", "10", 299_999, "15", 3, "5", "7.5", "0"]])

    async def main() -> Any:
        client = AsyncClient(DEFAULT_API_KEY, DEFAULT_API_SECRET)
        client.FUTURES_URL = server.base_url + "/fapi"
        try:
            generated = [await client.futures_klines(symbol="BTCUSDT", interval="1m", limit=3) for _ in range(2)]
            preset = await client.futures_klines(symbol="ETHUSDT", interval="5m")
            order = await client.futures_create_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newClientOrderId=cid("u1")
            )
            open_orders = await client.futures_get_open_orders(symbol="BTCUSDT")
            with pytest.raises(BinanceAPIException) as cancel:
                await client.futures_cancel_order(symbol="BTCUSDT", orderId=order["orderId"])
            return generated, preset, open_orders, cancel.value.code
        finally:
            await client.close_connection()

    generated, preset, open_orders, cancel_code = asyncio.run(main())
    first, second = ({row[0]: row for row in rows} for rows in generated)
    assert len(first) == 3 and all(first[t] == second[t] for t in first.keys() & second.keys())
    assert preset[0][4] == "1.5"
    assert open_orders == [] and cancel_code == -2011


# --- item 7: a triggered stop's child order is ours, whatever its own id ----------------------------------------


def test_a_stop_fired_while_nobody_listened_is_mapped_back_by_a_fresh_adapter(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """apply_layer is down (no events() consumer) when the stop fires. A fresh adapter's fills_since returns
    the fill under our clientAlgoId (the child order carries another id: it is mapped through the algo
    history's actualOrderId), and its polling events() classifies it as a STOP of qt-<plan>-sl."""
    sl = cid("x1", "sl")

    async def before(ex: BinanceExchange) -> int:
        await ex.place_market_order("BTCUSDT", Side.BUY, Decimal("0.01"), cid("x1"), reduce_only=False)
        await ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, Decimal("59000"), sl,
                                   close_position=False, quantity=Decimal("0.01"))
        return fake.now_ms()

    since = run(server, before)
    fake.set_mark_price("BTCUSDT", "58950")  # fires with no adapter running
    [algo] = fake.algo_orders()
    child = next(o for o in fake.orders() if str(o["orderId"]) == algo["actualOrderId"])
    assert child["clientOrderId"] != sl  # the child's own id is not ours: nothing may rely on it
    fake.set_ws_enabled(False)

    async def after(ex: BinanceExchange) -> Any:
        fills = await ex.fills_since("BTCUSDT", since)
        received: list[OrderEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await wait_until(lambda: len(received) == 1)
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return fills, received

    [fill], [event] = run(server, after)
    assert fill.client_order_id == sl and fill.order_id == algo["actualOrderId"] and fill.reduce_only
    assert isinstance(event, ExchangeEvent) and event.kind is FillKind.STOP and event.origin_id == sl
    assert event.fill == fill
    assert fake.requests("/fapi/v1/allAlgoOrders")[0].params["symbol"] == "BTCUSDT"


def test_a_child_fill_before_its_algo_update_is_still_ours(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The child's ORDER_TRADE_UPDATE may come before ALGO_UPDATE TRIGGERED names it (``ai``): the adapter
    asks the algo history and still books a TAKE_PROFIT of qt-<plan>-tp, once."""
    fake.child_fill_before_trigger_update = True
    tp = cid("y1", "tp")

    async def body(ex: BinanceExchange) -> list[OrderEvent]:
        received: list[OrderEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await stream_ready(ex, fake)
        await ex.place_market_order("SOLUSDT", Side.SELL, Decimal("3"), cid("y1"), reduce_only=False)
        await ex.place_conditional("SOLUSDT", ConditionalKind.TAKE_PROFIT_MARKET, Side.BUY, Decimal("140"), tp)
        fake.set_mark_price("SOLUSDT", "139.5")
        await wait_until(lambda: len(received) == 1)
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        return received

    [event] = run(server, body, poll_interval_s=60)
    assert isinstance(event, ExchangeEvent)
    assert event.kind is FillKind.TAKE_PROFIT and event.origin_id == tp and event.fill.client_order_id == tp
