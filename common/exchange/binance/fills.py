"""Trades read as fills: each with the client id of the order it belongs to — for the child of a
triggered algo order, our ``clientAlgoId`` (mapped through ``actualOrderId``) — and its fee in USDT."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, Final

import structlog

from common.contracts.base import plain_decimal
from common.exchange.base import Fill, is_ours
from common.exchange.binance.client import BinanceClient
from common.exchange.binance.tracking import OrderFacts, OrderTracking
from common.exchange.binance.wire import USDT, fill_from_trade, is_forced_close
from common.exchange.errors import OrderNotFound, OrderRejected

log = structlog.get_logger()

#: userTrades refuses a startTime more than 7 days back
USER_TRADES_MAX_LOOKBACK_MS: Final = 7 * 86_400_000 - 60_000
#: the most rows userTrades and allAlgoOrders return per call
PAGE_MAX: Final = 1_000
#: commissions are kept to 8 decimals, as Binance reports them
FEE_PLACES: Final = Decimal("0.00000001")
#: a fee asset's mark price is reused this long when converting fees to USDT
FEE_MARK_TTL_S: Final = 10.0


class FillReader:
    """userTrades and the algo order history, read into :class:`Fill` values."""

    def __init__(self, client: BinanceClient, tracking: OrderTracking,
                 mark_price: Callable[[str], Awaitable[Decimal]]) -> None:
        self.client = client
        self.tracking = tracking
        self.mark_price = mark_price
        self._fee_marks: dict[str, tuple[float, Decimal]] = {}

    async def fills_since(self, symbol: str, since_ms: int) -> list[Fill]:
        """The symbol's trades since ``since_ms`` (at most 7 days back), each with the client id of the
        order it belongs to — for the child of a triggered algo order, our ``clientAlgoId`` (mapped
        through ``actualOrderId`` from the algo history when the stream did not tell us)."""
        since_ms = max(since_ms, self.client.server_now_ms() - USER_TRADES_MAX_LOOKBACK_MS)
        self.tracking.watched.add(symbol)  # asked about: events() polls it too while the stream is down
        trades = await self.client.call(
            "futures_account_trades", mutation=False, symbol=symbol, startTime=str(since_ms), limit=str(PAGE_MAX)
        )
        fills = []
        history_read = False
        for trade in sorted(trades, key=lambda t: (int(t["time"]), int(t["id"]))):
            order_id = str(trade["orderId"])
            if order_id not in self.tracking.algo_children:
                client_id, _, _ = await self.order_facts(symbol, order_id)
                if not history_read and not is_ours(client_id) and not is_forced_close(client_id):
                    await self.algo_history(symbol)  # perhaps the child of one of our algo orders
                    history_read = True
            client_id, _, reduce_only = await self.fill_facts(symbol, order_id)
            fills.append(await self.in_usdt(fill_from_trade(trade, client_id, reduce_only)))
        return fills

    async def trades_of(self, raw: Mapping[str, Any]) -> tuple[Fill, ...]:
        """Every trade of an order (its answer ``raw``), oldest first, fees in USDT."""
        trades = await self.client.call(
            "futures_account_trades", mutation=False, symbol=raw["symbol"], orderId=str(raw["orderId"]),
            limit=str(PAGE_MAX),
        )
        fills = [fill_from_trade(t, raw["clientOrderId"], bool(raw["reduceOnly"])) for t in trades]
        return tuple([await self.in_usdt(f) for f in sorted(fills, key=lambda f: (f.ts_ms, f.fill_id))])

    async def fill_facts(self, symbol: str, order_id: str) -> OrderFacts:
        """(client id, order type, reduce-only) to classify a fill by: a triggered algo order's child
        is ours under the clientAlgoId and the algo order's type, whatever the child's own id."""
        child = self.tracking.algo_children.get(order_id)
        if child is not None:
            return child[0], child[1], True
        return await self.order_facts(symbol, order_id)

    async def order_facts(self, symbol: str, order_id: str) -> OrderFacts:
        """(client id, original type, reduce-only) of an order: userTrades does not carry them."""
        key = (symbol, order_id)
        if key not in self.tracking.order_info:
            try:
                raw = await self.client.call("futures_get_order", mutation=False, symbol=symbol, orderId=order_id)
                self.tracking.remember_order(raw)
            except OrderNotFound:
                self.tracking.order_info[key] = ("", "", False)
        return self.tracking.order_info[key]

    async def algo_history(self, symbol: str) -> list[Mapping[str, Any]]:
        """``allAlgoOrders`` of the symbol over its default window (the recent 7 days; which time the
        window applies to, creation or update, is not documented), the children they made remembered."""
        rows: list[Mapping[str, Any]] = await self.client.call(
            "futures_get_all_orders", mutation=False, conditional=True, symbol=symbol, limit=str(PAGE_MAX)
        )
        self.tracking.algo_history_read[symbol] = time.monotonic()
        for raw in rows:
            self.tracking.note_algo(raw)
        return rows

    async def in_usdt(self, fill: Fill) -> Fill:
        """The fill with its fee in USDT: a fee paid in another asset (BNB with the BNB fee discount) is
        converted at that asset's ``<ASSET>USDT`` mark price now (not at the trade's time). An asset
        without such a symbol keeps its fee in its own asset, logged."""
        if fill.fee_asset == USDT:
            return fill
        asset = fill.fee_asset
        cached = self._fee_marks.get(asset)
        if cached is not None and time.monotonic() - cached[0] < FEE_MARK_TTL_S:
            mark = cached[1]
        else:
            try:
                mark = await self.mark_price(f"{asset}USDT")
            except OrderRejected as e:  # -1121: no such symbol to convert through
                log.warning("binance_fee_not_converted", fill_id=fill.fill_id, fee=plain_decimal(fill.fee),
                            fee_asset=asset, code=e.code)
                return fill
            self._fee_marks[asset] = (time.monotonic(), mark)
        fee = (fill.fee * mark).quantize(FEE_PLACES)
        log.info("binance_fee_converted", fill_id=fill.fill_id, fee=plain_decimal(fill.fee), fee_asset=asset,
                 mark_price=plain_decimal(mark), fee_usdt=plain_decimal(fee))
        return replace(fill, fee=fee, fee_asset=USDT)
