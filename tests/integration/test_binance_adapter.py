"""BinanceExchange through python-binance itself against the fake Binance USD-M server.

Nothing here mocks python-binance: every request is signed by the library, crosses HTTP, and is
checked, answered (or failed on purpose) and logged by the fake server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest
from binance import AsyncClient
from binance.exceptions import BinanceAPIException
from pydantic import SecretStr

from common.config import BinanceSettings
from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalKind, ConditionalStatus, ExchangeEvent, OrderStatus, client_order_id
from common.exchange.binance import BinanceExchange, user_stream_url
from common.exchange.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    OrderNotFound,
    OrderRejected,
    TemporaryError,
    UnknownOutcome,
)
from common.exchange.placement import RetryPolicy, place_conditional_once, place_market_once
from common.redis_server import free_port
from tests.fakes.fake_binance import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    FakeBinance,
    FakeBinanceServer,
)

T = TypeVar("T")
ORDER = "/fapi/v1/order"
ALGO = "/fapi/v1/algoOrder"
FAST = RetryPolicy(max_retries=5, backoff_initial_ms=10, backoff_max_ms=50)


@pytest.fixture
def server(fake_binance_server: FakeBinanceServer) -> FakeBinanceServer:
    """The shared module-scoped fake server (tests/fakes/conftest_binance.py)."""
    return fake_binance_server


@pytest.fixture
def fake(fake_binance: FakeBinance) -> FakeBinance:
    """The shared fake, emptied before the test."""
    return fake_binance


def settings(server: FakeBinanceServer, **overrides: Any) -> BinanceSettings:
    values: dict[str, Any] = {
        "api_key": SecretStr(DEFAULT_API_KEY),
        "api_secret": SecretStr(DEFAULT_API_SECRET),
        "base_url": server.base_url,
        "timeout_s": 0.5,
        "backoff_initial_ms": 10,
        "backoff_max_ms": 50,
        "poll_interval_s": 0.2,
    }
    values.update(overrides)
    return BinanceSettings(**values)


def run(server: FakeBinanceServer, body: Callable[[BinanceExchange], Awaitable[T]], **overrides: Any) -> T:
    """Start an adapter against the fake, run ``body`` with it, close it."""

    async def main() -> T:
        exchange = BinanceExchange(settings(server, **overrides))
        await exchange.start()
        try:
            return await body(exchange)
        finally:
            await exchange.close()

    return asyncio.run(main())


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def collect(events: AsyncIterator[ExchangeEvent], into: list[ExchangeEvent]) -> None:
    async for event in events:
        into.append(event)


def cid(plan: str, suffix: str = "") -> str:
    return client_order_id(plan.ljust(16, "0")[:16], suffix)


# --- the wire -------------------------------------------------------------------------------------


def test_market_order_is_rounded_to_step_and_sent_as_plain_strings(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """Quantities are rounded down to the step size and sent as plain decimals, booleans as "true"/"false",
    with our newClientOrderId; the result carries the fills and their fee."""
    fake.set_mark_price("XRPUSDT", Decimal("0.6"))

    async def body(ex: BinanceExchange) -> Any:
        btc = await ex.place_market_order("BTCUSDT", Side.BUY, Decimal("0.0123456"), cid("a1"), reduce_only=False)
        xrp = await ex.place_market_order("XRPUSDT", Side.BUY, Decimal("1.57E+2"), cid("a2"), reduce_only=False)
        return btc, xrp

    btc, xrp = run(server, body)
    sent = [r.params for r in fake.requests(ORDER, "POST")]
    assert sent[0]["quantity"] == "0.012"
    assert sent[0]["reduceOnly"] == "false"
    assert sent[0]["newClientOrderId"] == cid("a1")
    assert sent[0]["type"] == "MARKET" and sent[0]["newOrderRespType"] == "RESULT"
    assert sent[1]["quantity"] == "157.0"  # at the 0.1 step, never "1.57E+2"
    assert btc.status is OrderStatus.FILLED and btc.executed_qty == Decimal("0.012")
    assert btc.avg_price == Decimal("60000") and btc.client_order_id == cid("a1")
    assert len(btc.fills) == 1 and btc.fee == Decimal("0.36")  # 0.012 * 60000 * 0.0005
    assert xrp.executed_qty == Decimal("157")


def test_non_ascii_symbol_is_signed_and_traded(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A symbol such as 币安人生USDT passes through signing, the query string and the body unchanged."""

    async def body(ex: BinanceExchange) -> Any:
        placed = await ex.place_market_order("币安人生USDT", Side.BUY, Decimal("100.7"), cid("b1"), reduce_only=False)
        queried = await ex.get_order("币安人生USDT", cid("b1"))
        return placed, queried, await ex.mark_price("币安人生USDT")

    placed, queried, mark = run(server, body)
    assert placed.symbol == "币安人生USDT" and placed.executed_qty == Decimal("100")
    assert queried.order_id == placed.order_id and queried.fills == placed.fills
    assert mark == Decimal("0.1")


def test_symbol_rules_are_cached(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """exchangeInfo is read once at start and served from the cache within rules_ttl_s."""

    async def body(ex: BinanceExchange) -> Any:
        first = await ex.symbol_rules()
        await ex.symbol_rules()
        await ex.place_market_order("ETHUSDT", Side.BUY, Decimal("0.01"), cid("c1"), reduce_only=False)
        return first

    rules = run(server, body)
    assert rules["BTCUSDT"].step_size == Decimal("0.001") and rules["BTCUSDT"].tick_size == Decimal("0.1")
    assert len(fake.requests("/fapi/v1/exchangeInfo")) == 1


def test_conditional_orders_use_the_algo_endpoint_with_our_client_algo_id(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """A stop goes to POST /fapi/v1/algoOrder with our clientAlgoId (not an invented one), the trigger
    rounded to the tick, closePosition "true"; it can be queried, listed and cancelled by that id."""
    sl = cid("d1", "sl")

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("BTCUSDT", Side.BUY, Decimal("0.01"), cid("d1"), reduce_only=False)
        placed = await ex.place_conditional(
            "BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, Decimal("58123.456"), sl
        )
        queried = await ex.get_conditional("BTCUSDT", sl)
        listed = await ex.open_conditionals("BTCUSDT")
        await ex.cancel_conditional("BTCUSDT", sl)
        after = await ex.get_conditional("BTCUSDT", sl)
        with pytest.raises(OrderNotFound):
            await ex.cancel_conditional("BTCUSDT", sl)  # -2011
        return placed, queried, listed, after

    placed, queried, listed, after = run(server, body)
    [algo] = fake.requests(ALGO, "POST")
    assert algo.params["clientAlgoId"] == sl
    assert algo.params["algoType"] == "CONDITIONAL" and algo.params["type"] == "STOP_MARKET"
    assert algo.params["triggerPrice"] == "58123.5"
    assert algo.params["closePosition"] == "true" and "reduceOnly" not in algo.params
    assert "newClientOrderId" not in algo.params and "stopPrice" not in algo.params
    assert len(fake.requests(ORDER, "POST")) == 1  # only the entry
    assert placed.client_algo_id == sl and placed.status is ConditionalStatus.NEW and placed.close_position
    assert queried.algo_id == placed.algo_id and [o.client_algo_id for o in listed] == [sl]
    assert after.status is ConditionalStatus.CANCELED


def test_partial_conditional_sends_quantity_and_reduce_only(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A take-profit for part of a position sends quantity (rounded) and reduceOnly "true"."""

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("ETHUSDT", Side.SELL, Decimal("0.5"), cid("e1"), reduce_only=False)
        return await place_conditional_once(
            ex, "ETHUSDT", ConditionalKind.TAKE_PROFIT_MARKET, Side.BUY, Decimal("2900.004"), cid("e1", "tp"),
            close_position=False, quantity=Decimal("0.2509"), policy=FAST,
        )

    order = run(server, body)
    [algo] = fake.requests(ALGO, "POST")
    assert algo.params["quantity"] == "0.250" and algo.params["reduceOnly"] == "true"
    assert algo.params["triggerPrice"] == "2900.00"
    assert order.quantity == Decimal("0.25") and not order.close_position


def test_old_order_path_refuses_conditional_types(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The fake answers -4120 for a STOP_MARKET sent to POST /fapi/v1/order, as Binance does since
    2025-12-09; the adapter turns it into OrderRejected(-4120)."""

    async def body(ex: BinanceExchange) -> Any:
        return await ex._call(
            "_request_futures_api", mutation=True, method="post", path="order", signed=True,
            data={"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "stopPrice": "50000",
                  "closePosition": "true"},
        )

    with pytest.raises(OrderRejected) as caught:
        run(server, body)
    assert caught.value.code == -4120


# --- auth and clock -------------------------------------------------------------------------------


def test_wrong_secret_is_rejected_as_1022(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A request signed with the wrong secret gets -1022 (HTTP 400), translated to OrderRejected(-1022)."""

    async def body(ex: BinanceExchange) -> Any:
        return await ex.balance()

    with pytest.raises(OrderRejected) as caught:
        run(server, body, api_secret=SecretStr("not-the-secret"))
    assert caught.value.code == -1022
    [request] = fake.requests("/fapi/v3/balance")
    assert request.status == 400


def test_clock_skew_resyncs_and_succeeds(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """When the server's clock moves, the next signed request gets -1021; the adapter re-reads the server
    time and the retried request succeeds."""

    async def body(ex: BinanceExchange) -> Any:
        fake.set_clock_offset_ms(-30_000)  # our timestamps are now 30 s ahead of the server's
        return await ex.balance()

    balance = run(server, body)
    assert balance.wallet_balance == Decimal("10000")
    trail = [(r.path, r.status) for r in fake.requests() if r.path in ("/fapi/v3/balance", "/fapi/v1/time")]
    assert trail == [("/fapi/v1/time", 200), ("/fapi/v3/balance", 400), ("/fapi/v1/time", 200),
                     ("/fapi/v3/balance", 200)]


# --- error translation ----------------------------------------------------------------------------

ERROR_CASES: list[tuple[dict[str, Any], type[ExchangeError], int | None]] = [
    ({"kind": "error", "code": -1111, "msg": "Precision is over the maximum defined for this asset."},
     OrderRejected, -1111),
    ({"kind": "error", "code": -4164, "msg": "Order's notional must be no smaller than 100"}, OrderRejected, -4164),
    ({"kind": "error", "code": -2019, "msg": "Margin is insufficient."}, OrderRejected, -2019),
    ({"kind": "error", "code": -2022, "msg": "ReduceOnly Order is rejected."}, OrderRejected, -2022),
    ({"kind": "error", "code": -1121, "msg": "Invalid symbol."}, OrderRejected, -1121),
    ({"kind": "error", "code": -4116, "msg": "ClientOrderId is duplicated."}, DuplicateClientOrderId, -4116),
    ({"kind": "error", "code": -2013, "msg": "Order does not exist."}, OrderNotFound, None),
    ({"kind": "error", "code": -1008, "msg": "Server is currently overloaded.", "status": 503}, TemporaryError, -1008),
    ({"kind": "error", "code": -1003, "msg": "Too many requests."}, TemporaryError, -1003),
    ({"kind": "rate_limit", "status": 429, "retry_after_s": 2}, TemporaryError, -1003),
    ({"kind": "rate_limit", "status": 418, "retry_after_s": 7}, TemporaryError, -1003),
    # a 5xx on an order is an unknown outcome (settled by querying): client ids are unique only among open
    # orders on Binance, so a blind resend could fill twice
    ({"kind": "status", "status": 502}, UnknownOutcome, None),
    ({"kind": "status", "status": 503, "msg": "Service Unavailable."}, UnknownOutcome, None),
    ({"kind": "unknown", "execute": False}, UnknownOutcome, None),
    ({"kind": "error", "code": -1000, "msg": "An unknown error occurred.", "status": 500}, UnknownOutcome, None),
    ({"kind": "error", "code": -1006, "msg": "Unexpected response.", "status": 500}, UnknownOutcome, None),
    ({"kind": "error", "code": -1007, "msg": "Timeout waiting for response.", "status": 408}, UnknownOutcome, None),
    ({"kind": "timeout", "hold_s": 1.5}, UnknownOutcome, None),
]


def case_id(fault: dict[str, Any]) -> str:
    return f"{fault['kind']}{fault.get('code') or fault.get('status') or ''}"


@pytest.mark.parametrize(("fault", "expected", "code"), ERROR_CASES, ids=[case_id(c[0]) for c in ERROR_CASES])
def test_order_errors_are_translated(
    server: FakeBinanceServer, fake: FakeBinance, fault: dict[str, Any], expected: type[ExchangeError], code: int | None
) -> None:
    """Each Binance failure of POST /fapi/v1/order becomes the error the design assigns to it (see
    common/exchange/binance_errors.py), chained to the vendor exception."""
    fake.inject(ORDER, "POST", **fault)

    async def body(ex: BinanceExchange) -> Any:
        return await ex.place_market_order("BTCUSDT", Side.BUY, Decimal("0.002"), cid("f1"), reduce_only=False)

    with pytest.raises(ExchangeError) as caught:
        run(server, body)
    assert type(caught.value) is expected
    assert caught.value.__cause__ is not None
    if code is not None:
        assert getattr(caught.value, "code", None) == code
    if fault["kind"] == "rate_limit":
        assert isinstance(caught.value, TemporaryError)
        assert caught.value.retry_after_s == fault["retry_after_s"]


def test_ambiguous_failures_of_reads_are_temporary(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A read cannot have an unknown outcome: -1007 or a timeout on GET is a TemporaryError."""
    fake.inject("/fapi/v3/balance", "GET", kind="error", code=-1007, msg="Timeout.", status=408)
    fake.inject("/fapi/v3/positionRisk", "GET", kind="timeout", hold_s=1.5)

    async def body(ex: BinanceExchange) -> Any:
        with pytest.raises(TemporaryError):
            await ex.balance()
        with pytest.raises(TemporaryError):
            await ex.positions()

    run(server, body)


def test_natural_rejections_by_symbol_rules_and_margin(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The fake enforces the rules itself: min notional -4164, margin -2019, reduce-only -2022, unknown
    order -2013, each surfacing as the translated error with Binance's code."""

    async def body(ex: BinanceExchange) -> dict[str, int]:
        codes: dict[str, int] = {}
        for name, call in {
            "notional": ex.place_market_order("BTCUSDT", Side.BUY, Decimal("0.001"), cid("g1"), reduce_only=False),
            "margin": ex.place_market_order("BTCUSDT", Side.BUY, Decimal("100"), cid("g2"), reduce_only=False),
            "reduce_only": ex.place_market_order("BTCUSDT", Side.SELL, Decimal("0.01"), cid("g3"), reduce_only=True),
        }.items():
            try:
                await call
            except OrderRejected as e:
                codes[name] = e.code
        with pytest.raises(OrderNotFound):
            await ex.get_order("BTCUSDT", cid("nope"))
        return codes

    assert run(server, body) == {"notional": -4164, "margin": -2019, "reduce_only": -2022}
    assert fake.orders() == []


# --- exactly-once placement against the fake --------------------------------------------------------


def test_rate_limit_retry_after_is_honoured(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """After a 429 with Retry-After: 1 the retry (same client id) reaches the server no sooner than 1 s later."""
    fake.inject(ORDER, "POST", kind="rate_limit", status=429, retry_after_s=1)

    async def body(ex: BinanceExchange) -> Any:
        return await place_market_once(
            ex, "BTCUSDT", Side.BUY, Decimal("0.002"), cid("h1"), reduce_only=False, policy=FAST
        )

    result = run(server, body)
    first, second = fake.requests(ORDER, "POST")
    assert (first.status, second.status) == (429, 200)
    assert second.at_s - first.at_s >= 0.98
    assert first.params["newClientOrderId"] == second.params["newClientOrderId"] == cid("h1")
    assert result.status is OrderStatus.FILLED and len(fake.orders()) == 1


def test_5xx_is_retried(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """Two 502s, then success: three sends under one client id, one order."""
    fake.inject(ORDER, "POST", kind="status", status=502, times=2)

    async def body(ex: BinanceExchange) -> Any:
        return await place_market_once(
            ex, "BTCUSDT", Side.BUY, Decimal("0.002"), cid("i1"), reduce_only=False, policy=FAST
        )

    result = run(server, body)
    assert [r.status for r in fake.requests(ORDER, "POST")] == [502, 502, 200]
    assert len(fake.orders()) == 1 and result.client_order_id == cid("i1")


def test_503_unknown_outcome_is_settled_by_querying(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A 503 "Unknown error" where the order WAS placed is settled by GET /fapi/v1/order: exactly one order,
    one send, and the result is that order with its fills."""
    fake.inject(ORDER, "POST", kind="unknown")  # executes, then answers 503

    async def body(ex: BinanceExchange) -> Any:
        return await place_market_once(
            ex, "BTCUSDT", Side.BUY, Decimal("0.002"), cid("j1"), reduce_only=False, policy=FAST
        )

    result = run(server, body)
    assert len(fake.requests(ORDER, "POST")) == 1
    assert fake.requests(ORDER, "GET")[0].params["origClientOrderId"] == cid("j1")
    [order] = fake.orders()
    assert result.order_id == str(order["orderId"]) and result.status is OrderStatus.FILLED
    assert len(result.fills) == 1


def test_timeout_after_send_is_settled_without_a_second_order(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The order is placed but the answer takes longer than the client's timeout: the query finds it, and
    no second POST is made."""
    fake.inject(ORDER, "POST", kind="timeout", execute=True, hold_s=1.5)

    async def body(ex: BinanceExchange) -> Any:
        return await place_market_once(
            ex, "BTCUSDT", Side.BUY, Decimal("0.002"), cid("k1"), reduce_only=False, policy=FAST
        )

    result = run(server, body)
    assert len(fake.requests(ORDER, "POST")) == 1
    assert len(fake.orders()) == 1 and result.executed_qty == Decimal("0.002")


def test_timeout_without_effect_is_resent_under_the_same_id(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A timeout where nothing was placed: the query answers -2013, the order is sent again with the same id."""
    fake.inject(ORDER, "POST", kind="timeout", execute=False, hold_s=1.5)

    async def body(ex: BinanceExchange) -> Any:
        return await place_market_once(
            ex, "BTCUSDT", Side.BUY, Decimal("0.002"), cid("l1"), reduce_only=False, policy=FAST
        )

    run(server, body)
    posts = fake.requests(ORDER, "POST")
    assert [p.params["newClientOrderId"] for p in posts] == [cid("l1")] * 2
    assert [o["clientOrderId"] for o in fake.orders()] == [cid("l1")]


def test_duplicate_client_id_on_a_resend_means_already_placed(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """An unknown outcome, a lagging lookup (-2013) that makes us resend, and the resend answered -4116:
    the order is looked up and returned; still exactly one order."""
    fake.inject(ORDER, "POST", kind="unknown")
    fake.inject(ORDER, "GET", kind="error", code=-2013, msg="Order does not exist.")

    async def body(ex: BinanceExchange) -> Any:
        return await place_market_once(
            ex, "BTCUSDT", Side.BUY, Decimal("0.002"), cid("m1"), reduce_only=False, policy=FAST
        )

    result = run(server, body)
    assert [r.status for r in fake.requests(ORDER, "POST")] == [503, 400]
    [order] = fake.orders()
    assert result.order_id == str(order["orderId"])


def test_conditional_unknown_outcome_is_settled_by_querying(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A 503 unknown outcome on POST /fapi/v1/algoOrder is settled through GET /fapi/v1/algoOrder."""
    fake.inject(ALGO, "POST", kind="unknown")

    async def body(ex: BinanceExchange) -> Any:
        await ex.place_market_order("BTCUSDT", Side.BUY, Decimal("0.01"), cid("n1"), reduce_only=False)
        return await place_conditional_once(
            ex, "BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, Decimal("59000"), cid("n1", "sl"), policy=FAST
        )

    order = run(server, body)
    assert len(fake.requests(ALGO, "POST")) == 1 and len(fake.algo_orders()) == 1
    assert order.client_algo_id == cid("n1", "sl") and order.status is ConditionalStatus.NEW


# --- account ----------------------------------------------------------------------------------------


def test_positions_balance_and_leverage(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """Leverage is set through POST /fapi/v1/leverage and read back from /fapi/v1/symbolConfig; positions
    come from /fapi/v3/positionRisk (signed amounts), the balance from /fapi/v3/balance."""

    async def body(ex: BinanceExchange) -> Any:
        accepted = await ex.set_leverage("ETHUSDT", 7)
        await ex.place_market_order("ETHUSDT", Side.SELL, Decimal("0.5"), cid("o1"), reduce_only=False)
        fake.set_mark_price("ETHUSDT", Decimal("2900"))
        with pytest.raises(OrderRejected) as bad:
            await ex.set_leverage("ETHUSDT", 500)
        return accepted, await ex.positions(), await ex.balance(), bad.value.code

    accepted, positions, balance, bad_code = run(server, body)
    assert accepted == 7 and bad_code == -4028
    eth = positions["ETHUSDT"]
    assert list(positions) == ["ETHUSDT"]
    assert eth.position_amt == Decimal("-0.5") and eth.entry_price == Decimal("3000")
    assert eth.leverage == 7 and eth.mark_price == Decimal("2900") and eth.unrealized_pnl == Decimal("50")
    assert balance.wallet_balance == Decimal("9999.25")  # fee 0.5 * 3000 * 0.0005
    assert balance.unrealized_pnl == Decimal("50")
    assert fake.requests("/fapi/v1/leverage", "POST")[0].params["leverage"] == "7"


# --- events -------------------------------------------------------------------------------------------


def test_triggered_stop_arrives_through_the_websocket(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """With the user data stream up, a stop triggered by the mark price arrives through events() as a
    STOP fill of qt-<plan>-sl, from ORDER_TRADE_UPDATE (polling is off: poll_interval_s=60)."""

    async def body(ex: BinanceExchange) -> list[ExchangeEvent]:
        received: list[ExchangeEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await wait_until(lambda: ex.user_stream_connected)
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


def test_liquidation_arrives_as_an_event(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A liquidation (an autoclose- order) arrives as a LIQUIDATION fill whose origin is the exchange's id."""

    async def body(ex: BinanceExchange) -> list[ExchangeEvent]:
        received: list[ExchangeEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await wait_until(lambda: ex.user_stream_connected)
        await ex.place_market_order("ETHUSDT", Side.BUY, Decimal("1"), cid("r1"), reduce_only=False)
        order = fake.liquidate("ETHUSDT", Decimal("2850"))
        await wait_until(lambda: len(received) == 1)
        await ex.close()
        await asyncio.wait_for(consumer, 5)
        assert received[0].origin_id == str(order["orderId"])
        return received

    [event] = run(server, body, poll_interval_s=60)
    assert event.kind is FillKind.LIQUIDATION and event.fill.price == Decimal("2850")
    assert event.fill.client_order_id.startswith("autoclose-")


def test_stream_reconnects_with_a_new_listen_key_and_catches_up(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The listen key expires while a stop fills with nobody listening: the adapter creates a new key,
    reconnects, catches up by polling once, and the fill arrives exactly once."""

    async def body(ex: BinanceExchange) -> list[ExchangeEvent]:
        received: list[ExchangeEvent] = []
        consumer = asyncio.create_task(collect(ex.events(), received))
        await wait_until(lambda: ex.user_stream_connected)
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


# --- the fake as a process ------------------------------------------------------------------------------


def test_fake_runs_as_a_process_and_takes_faults_over_http() -> None:
    """`python -m tests.fakes.fake_binance --port N` serves the same API; /_fake/inject and
    /_fake/requests drive and inspect it from outside."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_binance", "--port", str(port)],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(base + "/fapi/v1/ping", timeout=0.5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        httpx.post(base + "/_fake/inject", json={"path": ORDER, "method": "POST", "kind": "error", "code": -2019,
                                                 "msg": "Margin is insufficient."}).raise_for_status()

        async def main() -> int:
            exchange = BinanceExchange(BinanceSettings(
                api_key=SecretStr(DEFAULT_API_KEY), api_secret=SecretStr(DEFAULT_API_SECRET), base_url=base,
            ))
            await exchange.start()
            try:
                await exchange.place_market_order("BTCUSDT", Side.BUY, Decimal("0.002"), cid("t1"), reduce_only=False)
            except OrderRejected as e:
                return e.code
            finally:
                await exchange.close()
            return 0

        assert asyncio.run(main()) == -2019
        log = httpx.get(base + "/_fake/requests", params={"path": ORDER}).json()
        assert [(r["method"], r["status"], r["fault"]) for r in log] == [("POST", 400, "error")]
    finally:
        proc.terminate()
        proc.wait(10)
