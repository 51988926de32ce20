"""Regular orders: MARKET orders filled at the mark, their trades, liquidations and ADL.

Response builders follow, field for field:

- POST /fapi/v1/order (and DELETE): https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api
- GET /fapi/v1/order: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Query-Order
- GET /fapi/v1/openOrders: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Current-All-Open-Orders
- liquidation / ADL orders: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Users-Force-Orders
"""

from __future__ import annotations

import time
from decimal import ROUND_DOWN, Decimal
from typing import Any

from common.contracts.base import plain_decimal
from common.exchange.rules import SymbolRules
from tests.fakes.fake_binance.core import (
    CONDITIONAL_TYPES,
    ZERO,
    BinanceError,
    FakeCore,
    Position,
    TradeDelay,
    bool_param,
    dec_param,
    multiple_of,
    reducing,
)

#: POST /fapi/v1/order's documented answer (New Order page): no ``time``
NEW_ORDER_FIELDS = (
    "clientOrderId", "cumQty", "cumQuote", "executedQty", "orderId", "avgPrice", "origQty", "price", "reduceOnly",
    "side", "positionSide", "status", "stopPrice", "closePosition", "symbol", "timeInForce", "type", "origType",
    "updateTime", "workingType", "priceProtect", "priceMatch", "selfTradePreventionMode", "goodTillDate",
)
#: GET /fapi/v1/order's documented answer (Query Order page): ``time``, no ``cumQty``; priceMatch,
#: selfTradePreventionMode and goodTillDate are in the New Order sample and in live answers
QUERY_ORDER_FIELDS = (
    "avgPrice", "clientOrderId", "cumQuote", "executedQty", "orderId", "origQty", "origType", "price", "reduceOnly",
    "side", "positionSide", "status", "stopPrice", "closePosition", "symbol", "time", "timeInForce", "type",
    "updateTime", "workingType", "priceProtect", "priceMatch", "selfTradePreventionMode", "goodTillDate",
)
MONEY = Decimal("0.00000001")


class OrdersMixin(FakeCore):
    """MARKET orders, their trades, and the orders Binance places itself (liquidation, ADL)."""

    fee_asset: str
    ack_only: bool
    _fill_parts: int
    _trade_delays: dict[str, TradeDelay]
    _next_trade_delay: TradeDelay | None

    def _reset_orders(self) -> None:
        self.fee_asset = "USDT"
        self.ack_only = False
        self._fill_parts = 1
        self._trade_delays = {}
        self._next_trade_delay = None

    # --- test controls ---------------------------------------------------------------------------

    def delay_trades(self, delay_s: float, client_order_id: str | None = None, *, first_visible: int = 0) -> None:
        """Hide the trades of an order (by client id; None: the next order filled) from userTrades for
        ``delay_s`` seconds, all but its first ``first_visible``. Binance does not document such a lag;
        it asks to pair REST with the user stream, and public reports show history endpoints lagging."""
        with self.lock:
            delay = TradeDelay(delay_s, first_visible)
            if client_order_id is None:
                self._next_trade_delay = delay
            else:
                self._trade_delays[client_order_id] = delay

    def split_next_fill(self, parts: int) -> None:
        """The next order fills in ``parts`` trades (a market order meeting several makers)."""
        with self.lock:
            self._fill_parts = max(1, parts)

    def charge_fees_in(self, asset: str) -> None:
        """Commissions in ``asset`` from now on (``BNB``: the BNB fee discount with BNB in the wallet;
        https://www.binance.com/en/support/faq/binance-futures-fee-structure-fee-calculations-360033544231).
        The fee is the USDT fee at the ``<ASSET>USDT`` mark; the wallet still pays it in USDT (the fake
        keeps no BNB balance)."""
        with self.lock:
            self.fee_asset = asset
            if asset != "USDT" and f"{asset}USDT" not in self.rules:
                self.add_symbol(f"{asset}USDT")

    def set_position(self, symbol: str, amt: Decimal, entry: Decimal) -> None:
        with self.lock:
            self.account.positions[symbol] = Position(Decimal(amt), Decimal(entry), self.now_ms())

    def orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Every regular order the account has (including those triggered algo orders made)."""
        with self.lock:
            return [dict(o) for o in self.account.orders.values() if symbol is None or o["symbol"] == symbol]

    def position_amt(self, symbol: str) -> Decimal:
        with self.lock:
            pos = self.account.positions.get(symbol)
            return pos.amt if pos else ZERO

    def liquidate(
        self, symbol: str, price: Decimal | None = None, *, stream_type: str = "LIQUIDATION"
    ) -> dict[str, Any]:
        """Close the whole position as the liquidation engine does: an ``autoclose-<n>`` order, on REST a
        LIMIT IOC (forceOrders page). On the stream the docs list order type ``LIQUIDATION`` with execution
        ``CALCULATED``; ``stream_type="LIMIT"`` sends ``LIMIT`` / ``TRADE`` instead (which one the live
        stream uses could not be confirmed)."""
        with self.lock:
            pos = self._open_position(symbol)
            fill_price = Decimal(price) if price is not None else self.marks[symbol]
            side = "SELL" if pos.amt > 0 else "BUY"
            client_id = f"autoclose-{self.now_ms()}{next(self._seq):06d}"
            order = self._new_order_record(symbol, side, abs(pos.amt), client_id, "LIMIT", reduce_only=True)
            order.update(type="LIMIT", timeInForce="IOC", price=plain_decimal(fill_price))
            # Event-Order-Update: "c shows as autoclose-XXX, X shows as NEW"
            self._publish_order_update(order, None, execution="NEW", status="NEW", order_type=stream_type)
            trades = self._fill(order, fill_price)
            execution = "CALCULATED" if stream_type == "LIQUIDATION" else "TRADE"
            for trade in trades:
                self._publish_order_update(order, trade, execution=execution, order_type=stream_type)
            self._position_changed(symbol)
            return dict(order)

    def adl(self, symbol: str, price: Decimal | None = None) -> dict[str, Any]:
        """Auto-deleverage the whole position: an ``adl_autoclose`` LIMIT GTC order (forceOrders page;
        Event-Order-Update: "c shows as adl_autoclose, X shows as NEW")."""
        with self.lock:
            pos = self._open_position(symbol)
            fill_price = Decimal(price) if price is not None else self.marks[symbol]
            side = "SELL" if pos.amt > 0 else "BUY"
            self.account.client_ids.pop("adl_autoclose", None)  # Binance reuses the one id
            order = self._new_order_record(symbol, side, abs(pos.amt), "adl_autoclose", "LIMIT", reduce_only=True)
            order.update(type="LIMIT", timeInForce="GTC", price=plain_decimal(fill_price))
            self._publish_order_update(order, None, execution="NEW", status="NEW")
            for trade in self._fill(order, fill_price):
                self._publish_order_update(order, trade)
            self._position_changed(symbol)
            return dict(order)

    def _open_position(self, symbol: str) -> Position:
        pos = self.account.positions.get(symbol)
        if pos is None or pos.amt == 0:
            raise ValueError(f"no position on {symbol}")
        return pos

    # --- endpoints -------------------------------------------------------------------------------

    def new_order(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order: MARKET only. ``newOrderRespType`` ACK (the default) answers the order as
        accepted — status NEW, executedQty "0", avgPrice "0.00000" — though it filled; RESULT answers
        the final FILLED order (New Order page)."""
        with self.lock:
            symbol = params.get("symbol")
            rules = self._rules(symbol)
            assert symbol is not None
            order_type = params.get("type", "")
            if order_type in CONDITIONAL_TYPES:
                raise BinanceError(
                    -4120,
                    "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
                )
            if order_type != "MARKET":
                raise BinanceError(-1116, "Invalid orderType.")
            side = params.get("side")
            if side not in ("BUY", "SELL"):
                raise BinanceError(-1117, "Invalid side.")
            self._check_position_side(params)
            qty = dec_param(params, "quantity")
            assert qty is not None
            reduce_only = bool_param(params, "reduceOnly")
            client_id = params.get("newClientOrderId") or f"fake-{next(self._seq)}"
            if client_id in self.account.client_ids:
                raise BinanceError(-4116, "ClientOrderId is duplicated.")
            self._check_qty(rules, qty)
            mark = self.marks[symbol]
            pos = self.account.positions.get(symbol, Position())
            if reduce_only:
                if not reducing(side, pos.amt):
                    raise BinanceError(-2022, "ReduceOnly Order is rejected.")
                qty = min(qty, abs(pos.amt))
            elif qty * mark < rules.min_notional:
                raise BinanceError(
                    -4164,
                    f"Order's notional must be no smaller than {plain_decimal(rules.min_notional)} "
                    "(unless you choose reduce only).",
                )
            if not reduce_only:
                self._check_margin(symbol, side, qty, mark)
            order = self._new_order_record(symbol, side, qty, client_id, "MARKET", reduce_only=reduce_only)
            self._publish_order_update(order, None, execution="NEW", status="NEW")
            for trade in self._fill(order, mark):
                self._publish_order_update(order, trade)
            self._position_changed(symbol)
            if params.get("newOrderRespType", "ACK") == "ACK" or self.ack_only:
                return self._ack(order)
            return self._answer(order, NEW_ORDER_FIELDS)

    def _check_position_side(self, params: dict[str, str]) -> None:
        """One-way mode wants ``positionSide`` BOTH (or none); hedge mode LONG/SHORT and no reduceOnly."""
        position_side = params.get("positionSide", "BOTH")
        if self.account.dual_side:
            if position_side not in ("LONG", "SHORT"):
                raise BinanceError(-4061, "Order's position side does not match user's setting.")
            if "reduceOnly" in params:
                raise BinanceError(-1106, "Parameter 'reduceonly' sent when not required.")
        elif position_side != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")

    def _ack(self, order: dict[str, Any]) -> dict[str, Any]:
        """The ACK answer: the order as the engine accepted it (a public capture, ccxt/node-binance-api#444,
        shows a MARKET order so: status NEW, executedQty "0", avgPrice "0.00000")."""
        out = self._answer(order, NEW_ORDER_FIELDS)
        out.update(status="NEW", executedQty="0", cumQty="0", cumQuote="0", avgPrice="0.00000",
                   updateTime=order["time"])
        return out

    @staticmethod
    def _answer(order: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        return {name: order[name] for name in fields}

    def _check_qty(self, rules: SymbolRules, qty: Decimal) -> None:
        if qty <= 0:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if not multiple_of(qty, rules.step_size):
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if qty < rules.min_qty:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if qty > rules.market_max_qty:
            raise BinanceError(-4005, "Quantity greater than max quantity.")

    def _check_margin(self, symbol: str, side: str, qty: Decimal, mark: Decimal) -> None:
        pos = self.account.positions.get(symbol, Position())
        signed = qty if side == "BUY" else -qty
        increase = abs(pos.amt + signed) - abs(pos.amt)
        if increase <= 0:
            return
        available = self.account.wallet + self._unrealized() - self._used_margin()
        needed = increase * mark / self._leverage(symbol) + qty * mark * self.taker_fee
        if needed > available:
            raise BinanceError(-2019, "Margin is insufficient.")

    def _used_margin(self) -> Decimal:
        return sum(
            (abs(p.amt) * self.marks[s] / self._leverage(s) for s, p in self.account.positions.items()), ZERO
        )

    def _unrealized(self) -> Decimal:
        return sum(((self.marks[s] - p.entry) * p.amt for s, p in self.account.positions.items()), ZERO)

    def _new_order_record(
        self, symbol: str, side: str, qty: Decimal, client_id: str, orig_type: str, *, reduce_only: bool
    ) -> dict[str, Any]:
        order_id = next(self._order_ids)
        now = self.now_ms()
        order: dict[str, Any] = {
            "orderId": order_id,
            "symbol": symbol,
            "status": "NEW",
            "clientOrderId": client_id,
            "price": "0",
            "avgPrice": "0.00000",
            "origQty": plain_decimal(qty),
            "executedQty": "0",
            "cumQty": "0",
            "cumQuote": "0",
            "timeInForce": "GTC",
            "type": "MARKET",
            "reduceOnly": reduce_only,
            "closePosition": False,
            "side": side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": orig_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": now,
            "updateTime": now,
        }
        self.account.orders[order_id] = order
        self.account.client_ids[client_id] = order_id
        return order

    def _parts(self, qty: Decimal, step: Decimal) -> list[Decimal]:
        parts, self._fill_parts = self._fill_parts, 1
        if parts <= 1:
            return [qty]
        piece = (qty / parts / step).to_integral_value(rounding=ROUND_DOWN) * step
        if piece <= 0:
            return [qty]
        return [piece] * (parts - 1) + [qty - piece * (parts - 1)]

    def _fill(self, order: dict[str, Any], price: Decimal) -> list[dict[str, Any]]:
        """Fill the whole order at ``price`` (in one trade, or as :meth:`split_next_fill` says):
        position, wallet, trade records; the order FILLED."""
        symbol, side = order["symbol"], order["side"]
        qty = Decimal(order["origQty"])
        delay = self._trade_delays.pop(order["clientOrderId"], None) or self._next_trade_delay
        self._next_trade_delay = None
        trades = []
        for index, part in enumerate(self._parts(qty, self.rules[symbol].step_size)):
            fee_usdt = (part * price * self.taker_fee).quantize(MONEY)
            realized = self._apply_to_position(symbol, side, part, price)
            self.account.wallet += realized - fee_usdt
            trade = {
                "buyer": side == "BUY",
                "commission": plain_decimal(self._fee_in_asset(fee_usdt)),
                "commissionAsset": self.fee_asset,
                "id": next(self._trade_ids),
                "maker": False,
                "orderId": order["orderId"],
                "price": plain_decimal(price),
                "qty": plain_decimal(part),
                "quoteQty": plain_decimal(part * price),
                "realizedPnl": plain_decimal(realized),
                "side": side,
                "positionSide": "BOTH",
                "symbol": symbol,
                "time": self.now_ms(),
            }
            self.account.trades.append(trade)
            if delay is not None and index >= delay.first_visible:
                self.account.trade_visible_at[trade["id"]] = time.monotonic() + delay.delay_s
            trades.append(trade)
        order.update(
            status="FILLED",
            executedQty=plain_decimal(qty),
            cumQty=plain_decimal(qty),
            cumQuote=plain_decimal(qty * price),
            avgPrice=plain_decimal(price),
            updateTime=self.now_ms(),
        )
        return trades

    def _fee_in_asset(self, fee_usdt: Decimal) -> Decimal:
        if self.fee_asset == "USDT":
            return fee_usdt
        return (fee_usdt / self.marks[f"{self.fee_asset}USDT"]).quantize(MONEY)

    def _apply_to_position(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> Decimal:
        pos = self.account.positions.setdefault(symbol, Position())
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if pos.amt == 0 or (pos.amt > 0) == (signed > 0):
            total = abs(pos.amt) + qty
            pos.entry = (abs(pos.amt) * pos.entry + qty * price) / total
        else:
            closing = min(qty, abs(pos.amt))
            realized = (price - pos.entry) * closing * (1 if pos.amt > 0 else -1)
            if qty > abs(pos.amt):
                pos.entry = price
        pos.amt += signed
        if pos.amt == 0:
            pos.entry = ZERO
        pos.update_ms = self.now_ms()
        return realized

    def _find_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = params.get("symbol")
        self._rules(symbol)
        order_id: int | None = None
        if params.get("orderId"):
            order_id = int(params["orderId"])
        elif params.get("origClientOrderId"):
            order_id = self.account.client_ids.get(params["origClientOrderId"])
        else:
            raise BinanceError(-1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!")
        order = self.account.orders.get(order_id) if order_id is not None else None
        if order is None or order["symbol"] != symbol:
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def get_order(self, params: dict[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/order (Query Order page)."""
        with self.lock:
            return self._answer(self._find_order(params), QUERY_ORDER_FIELDS)

    def cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        """DELETE /fapi/v1/order: -2011 unless the order is open (Cancel Order page: New Order's fields).
        https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Cancel-Order"""
        with self.lock:
            try:
                order = self._find_order(params)
            except BinanceError as e:
                if e.code == -2013:
                    raise BinanceError(-2011, "Unknown order sent.") from e
                raise
            if order["status"] not in ("NEW", "PARTIALLY_FILLED"):
                raise BinanceError(-2011, "Unknown order sent.")
            order["status"] = "CANCELED"
            return self._answer(order, NEW_ORDER_FIELDS)

    def open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/openOrders (Query Order's fields)."""
        with self.lock:
            symbol = params.get("symbol")
            return [
                self._answer(o, QUERY_ORDER_FIELDS)
                for o in self.account.orders.values()
                if o["status"] in ("NEW", "PARTIALLY_FILLED") and (symbol is None or o["symbol"] == symbol)
            ]
