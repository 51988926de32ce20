"""Binance USD-M payloads as domain values: pure functions over the JSON python-binance hands back.

The wire schema ends here (Binance's field names on one side, :mod:`common.exchange.base` types on the
other). Field meanings follow Binance's pages:

- orders: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Query-Order
- algo orders: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Query-Algo-Order
- trades: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Account-Trade-List
- ORDER_TRADE_UPDATE: https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-Order-Update
- ALGO_UPDATE: https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-Algo-Order-Update
- positions: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Position-Information-V3
- balances: https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Futures-Account-Balance-V3
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

from common.contracts.enums import FillKind, Side
from common.exchange.base import (
    Balance,
    ConditionalEnded,
    ConditionalKind,
    ConditionalOrder,
    ConditionalStatus,
    ExchangePosition,
    Fill,
    OrderResult,
    OrderStatus,
    is_ours,
)

#: the asset balances and fees are reported in
USDT: Final = "USDT"
ALGO_STATUS: Final = {
    "NEW": ConditionalStatus.NEW,
    # forwarded to the matching engine, not yet placed there: as good as triggered for us
    "TRIGGERING": ConditionalStatus.TRIGGERED,
    "TRIGGERED": ConditionalStatus.TRIGGERED,
    "FINISHED": ConditionalStatus.FINISHED,
    "CANCELED": ConditionalStatus.CANCELED,
    "EXPIRED": ConditionalStatus.EXPIRED,
    "REJECTED": ConditionalStatus.REJECTED,
}
#: algo statuses that end a conditional by the exchange's doing, without a fill
ENDED_BY_EXCHANGE: Final = frozenset({"REJECTED", "EXPIRED"})
ORDER_TYPE_KIND: Final = {
    "STOP_MARKET": FillKind.STOP,
    "STOP": FillKind.STOP,
    "TAKE_PROFIT_MARKET": FillKind.TAKE_PROFIT,
    "TAKE_PROFIT": FillKind.TAKE_PROFIT,
    "LIQUIDATION": FillKind.LIQUIDATION,
}
#: Binance's client ids of orders it places itself (Event-Order-Update: "autoclose-" liquidation,
#: "adl_autoclose" ADL, "settlement_autoclose-" delisting/delivery settlement): all forced closes
LIQUIDATION_PREFIXES: Final = ("autoclose-", "adl_autoclose", "settlement_autoclose-")
#: Binance order statuses beyond ours
ORDER_STATUS_ALIASES: Final = {
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
    "NEW_INSURANCE": OrderStatus.NEW,
    "NEW_ADL": OrderStatus.NEW,
}
#: a MARKET order in one of these is still being filled (an ACK answer says NEW even when it filled)
WORKING_STATUSES: Final = frozenset({"NEW", "PARTIALLY_FILLED"})


def is_forced_close(client_id: str) -> bool:
    """A liquidation, ADL or settlement order (Binance's own client ids)."""
    return client_id.startswith(LIQUIDATION_PREFIXES)


def classify_fill(client_id: str, order_type: str) -> FillKind | None:
    """Which kind of unrequested fill this is: a liquidation (or ADL / settlement), or one of *our*
    protective orders (``qt-<plan_id>-sl|-tp``); ``None`` for anything else (our market orders,
    foreign orders)."""
    if order_type == "LIQUIDATION" or is_forced_close(client_id):
        return FillKind.LIQUIDATION
    if not is_ours(client_id):
        return None
    kind = ORDER_TYPE_KIND.get(order_type)
    if kind is not None:
        return kind
    if client_id.endswith("-sl"):
        return FillKind.STOP
    if client_id.endswith("-tp"):
        return FillKind.TAKE_PROFIT
    return None


def order_result(raw: Mapping[str, Any], fills: tuple[Fill, ...]) -> OrderResult:
    """An order answer (POST/GET /fapi/v1/order) with its fills."""
    return OrderResult(
        symbol=raw["symbol"],
        client_order_id=raw["clientOrderId"],
        order_id=str(raw["orderId"]),
        side=Side(raw["side"]),
        status=ORDER_STATUS_ALIASES.get(raw["status"]) or OrderStatus(raw["status"]),
        orig_qty=Decimal(raw["origQty"]),
        executed_qty=Decimal(raw["executedQty"]),
        avg_price=Decimal(raw.get("avgPrice") or "0"),
        reduce_only=bool(raw.get("reduceOnly", False)),
        update_time_ms=int(raw.get("updateTime") or 0),
        fills=fills,
    )


def conditional(raw: Mapping[str, Any]) -> ConditionalOrder:
    """An algo order answer (POST/GET algoOrder, openAlgoOrders, allAlgoOrders)."""
    close_position = bool(raw.get("closePosition", False))
    quantity = raw.get("quantity")
    return ConditionalOrder(
        symbol=raw["symbol"],
        client_algo_id=raw["clientAlgoId"],
        algo_id=str(raw["algoId"]),
        kind=ConditionalKind(raw["orderType"]),
        side=Side(raw["side"]),
        trigger_price=Decimal(raw["triggerPrice"]),
        close_position=close_position,
        quantity=None if close_position or not quantity else Decimal(quantity),
        status=ALGO_STATUS.get(raw.get("algoStatus", "NEW"), ConditionalStatus.NEW),
    )


def child_order_id(raw: Mapping[str, Any]) -> str:
    """The orderId of the regular order a triggered algo order became (``actualOrderId``, a string,
    empty until triggered)."""
    return str(raw.get("actualOrderId") or "")


def fill_from_trade(trade: Mapping[str, Any], client_id: str, reduce_only: bool) -> Fill:
    """One ``userTrades`` row; the fee as Binance gives it (its asset may not be USDT)."""
    return Fill(
        fill_id=f"{trade['orderId']}-{trade['id']}",
        order_id=str(trade["orderId"]),
        client_order_id=client_id,
        symbol=trade["symbol"],
        side=Side(trade["side"]),
        qty=Decimal(trade["qty"]),
        price=Decimal(trade["price"]),
        fee=Decimal(trade["commission"]),
        fee_asset=trade.get("commissionAsset") or USDT,
        reduce_only=reduce_only,
        realized_pnl=Decimal(trade["realizedPnl"]) if "realizedPnl" in trade else None,
        ts_ms=int(trade["time"]),
    )


def is_fill_update(o: Mapping[str, Any]) -> bool:
    """An ORDER_TRADE_UPDATE ``o`` that reports a fill (a trade, or a liquidation's ``CALCULATED``)."""
    return o.get("x") in ("TRADE", "CALCULATED") and Decimal(o.get("l") or "0") > 0


def fill_from_order_update(o: Mapping[str, Any], client_id: str) -> Fill:
    """The fill an ORDER_TRADE_UPDATE reports; the fee as Binance gives it (``n`` in asset ``N``)."""
    order_id = str(o["i"])
    return Fill(
        fill_id=f"{order_id}-{o['t']}",
        order_id=order_id,
        client_order_id=client_id,
        symbol=o["s"],
        side=Side(o["S"]),
        qty=Decimal(o["l"]),
        price=Decimal(o["L"]),
        fee=Decimal(o.get("n") or "0"),
        fee_asset=o.get("N") or USDT,
        reduce_only=bool(o.get("R", False)),
        realized_pnl=Decimal(o["rp"]) if o.get("rp") is not None else None,
        ts_ms=int(o["T"]),
    )


def conditional_ended(message: Mapping[str, Any]) -> ConditionalEnded | None:
    """The end an ALGO_UPDATE reports for one of our conditionals, when the exchange ended it without a
    fill: ``REJECTED`` or ``EXPIRED``, or ``CANCELED`` with a failure reason ``rm`` (the docs' sample:
    an algo order CANCELED with "Reduce Only reject" — a cancel we asked for carries no reason). None
    otherwise. ``rm`` is free text: its values for REJECTED/EXPIRED are not documented."""
    o = message["o"]
    client_id = str(o.get("caid") or "")
    status = str(o.get("X") or "")
    reason = str(o.get("rm") or "")
    if not is_ours(client_id):
        return None
    if status not in ENDED_BY_EXCHANGE and not (status == "CANCELED" and reason):
        return None
    return ConditionalEnded(
        symbol=str(o["s"]),
        client_algo_id=client_id,
        status=ALGO_STATUS[status],
        reason=reason,
        ts_ms=int(message.get("T") or message.get("E") or 0),
    )


def traded_qty(fills: Iterable[Fill]) -> Decimal:
    return sum((f.qty for f in fills), Decimal(0))


def position(row: Mapping[str, Any], leverage: int) -> ExchangePosition:
    """A positionRisk row, with the symbol's leverage (from symbolConfig: the v3 rows carry none)."""
    return ExchangePosition(
        symbol=row["symbol"],
        position_amt=Decimal(row["positionAmt"]),
        entry_price=Decimal(row["entryPrice"]),
        mark_price=Decimal(row["markPrice"]),
        unrealized_pnl=Decimal(row["unRealizedProfit"]),
        leverage=leverage,
        liquidation_price=Decimal(row.get("liquidationPrice") or "0"),
    )


def usdt_balance(rows: Iterable[Mapping[str, Any]]) -> Balance:
    """The USDT row of the account balances (all zero when there is none)."""
    for row in rows:
        if row["asset"] == USDT:
            return Balance(
                asset=USDT,
                wallet_balance=Decimal(row["balance"]),
                available_balance=Decimal(row["availableBalance"]),
                unrealized_pnl=Decimal(row.get("crossUnPnl") or "0"),
            )
    return Balance(USDT, Decimal(0), Decimal(0), Decimal(0))
