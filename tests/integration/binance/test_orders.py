"""BinanceExchange orders through python-binance itself against the fake Binance USD-M server: the wire,
auth and clock, error translation, exactly-once placement, the account — and fills booked only complete.

Nothing here mocks python-binance: every request is signed by the library, crosses HTTP, and is
checked, answered (or failed on purpose) and logged by the fake server.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from common.contracts.enums import Side
from common.exchange.base import ConditionalKind, ConditionalStatus, OrderStatus
from common.exchange.binance import BinanceExchange
from common.exchange.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    FillsIncomplete,
    OrderNotFound,
    OrderRejected,
    TemporaryError,
    UnknownOutcome,
)
from common.exchange.placement import place_conditional_once, place_market_once
from tests.fakes.fake_binance import FakeBinance, FakeBinanceServer
from tests.integration.binance.support import ALGO, FAST, ORDER, TRADES, cid, run

D = Decimal

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
        return await ex.client.call(
            "_request_futures_api", mutation=True, method="post", path="order", signed=True,
            data={"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "stopPrice": "50000",
                  "closePosition": "true"},
        )

    with pytest.raises(OrderRejected) as caught:
        run(server, body)
    assert caught.value.code == -4120


# --- auth and clock -------------------------------------------------------------------------------


def test_wrong_secret_is_rejected_as_1022(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """A request signed with the wrong secret gets -1022 (HTTP 400), translated to OrderRejected(-1022): the
    first signed request, the position-mode check at start, already fails and the adapter does not start."""

    async def body(ex: BinanceExchange) -> Any:
        return await ex.balance()

    with pytest.raises(OrderRejected) as caught:
        run(server, body, api_secret=SecretStr("not-the-secret"))
    assert caught.value.code == -1022
    [request] = fake.requests("/fapi/v1/positionSide/dual")
    assert request.status == 400
    assert fake.requests("/fapi/v3/balance") == []


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
    common/exchange/binance/errors.py), chained to the vendor exception."""
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


# --- item 5: fills are complete before they are booked --------------------------------------------------


def test_a_filled_order_waits_for_its_trades_to_appear(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """FILLED comes back before userTrades shows the trades: the adapter re-reads them (within
    binance.fills_wait_s) and returns the order with fills adding up to executedQty."""
    fake.delay_trades(0.3, cid("w1"))

    async def body(ex: BinanceExchange) -> Any:
        return await ex.place_market_order("BTCUSDT", Side.BUY, D("0.01"), cid("w1"), reduce_only=False)

    result = run(server, body, fills_wait_s=3.0)
    assert result.status is OrderStatus.FILLED and result.executed_qty == D("0.01")
    assert sum(f.qty for f in result.fills) == result.executed_qty and result.fee == D("0.3")
    assert len(fake.requests(TRADES)) >= 2  # the first read came back empty


def test_trades_still_short_after_the_wait_raise_fills_incomplete(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """An order filled in two trades, one of which stays invisible: place_market_order and get_order raise
    FillsIncomplete (an UnknownOutcome: settled later) and never return the one fill they see; placement
    settles by querying, still short, and gives up with the order sent once."""
    fake.split_next_fill(2)
    fake.delay_trades(60, cid("w2"), first_visible=1)

    async def body(ex: BinanceExchange) -> Any:
        with pytest.raises(UnknownOutcome) as placed:
            await place_market_once(ex, "BTCUSDT", Side.BUY, D("0.010"), cid("w2"), reduce_only=False, policy=FAST)
        with pytest.raises(FillsIncomplete) as queried:
            await ex.get_order("BTCUSDT", cid("w2"))
        return placed.value, queried.value

    placed, queried = run(server, body, fills_wait_s=0.1)
    assert isinstance(placed.__cause__, FillsIncomplete)
    assert "0.005 of executedQty 0.010" in str(queried)
    assert [o["clientOrderId"] for o in fake.orders()] == [cid("w2")]
    assert len(fake.requests(ORDER, "POST")) == 1


def test_an_order_filled_in_several_trades_returns_them_all(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """Three trades make one order: all three come back, their quantities adding up to executedQty."""
    fake.split_next_fill(3)

    async def body(ex: BinanceExchange) -> Any:
        return await ex.place_market_order("ETHUSDT", Side.SELL, D("0.301"), cid("w3"), reduce_only=False)

    result = run(server, body)
    assert [f.qty for f in result.fills] == [D("0.1"), D("0.1"), D("0.101")]
    assert len({f.fill_id for f in result.fills}) == 3


def test_fees_paid_in_bnb_are_converted_to_usdt_at_the_mark(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """commissionAsset BNB (the BNB fee discount): the fee is converted at the BNBUSDT mark and booked as
    USDT, on the order's fills and on fills_since."""
    fake.charge_fees_in("BNB")
    fake.set_mark_price("BNBUSDT", "600")

    async def body(ex: BinanceExchange) -> Any:
        since = fake.now_ms()
        placed = await ex.place_market_order("BTCUSDT", Side.BUY, D("0.01"), cid("b1"), reduce_only=False)
        return placed, await ex.fills_since("BTCUSDT", since)

    placed, [polled] = run(server, body)
    [trade] = fake.user_trades({"symbol": "BTCUSDT"})
    assert trade["commissionAsset"] == "BNB" and D(trade["commission"]) == D("0.0005")  # 0.3 USDT / 600
    [fill] = placed.fills
    assert (fill.fee, fill.fee_asset) == (D("0.3"), "USDT")
    assert (polled.fee, polled.fee_asset) == (D("0.3"), "USDT")
    assert fake.requests("/fapi/v1/premiumIndex")[0].params["symbol"] == "BNBUSDT"


def test_a_market_order_answered_as_accepted_is_read_again_until_filled(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """An ACK-style answer (status NEW, executedQty "0", avgPrice "0.00000") for a MARKET order is not
    taken as "nothing filled": the order is read again and returned FILLED with its fills."""
    fake.ack_only = True

    async def body(ex: BinanceExchange) -> Any:
        return await ex.place_market_order("BTCUSDT", Side.BUY, D("0.01"), cid("k2"), reduce_only=False)

    result = run(server, body)
    assert result.status is OrderStatus.FILLED and result.executed_qty == D("0.01") and len(result.fills) == 1
    assert fake.requests(ORDER, "GET")[0].params["orderId"] == result.order_id
