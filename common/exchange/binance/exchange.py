"""Binance USD-M perpetual futures through python-binance's ``AsyncClient`` (DESIGN §6, §8, §12): the
:class:`~common.exchange.base.Exchange` on REST, its events from :mod:`common.exchange.binance.user_stream`.

Quantities and prices are rounded to the symbol's step and tick and sent as plain decimal strings,
booleans as ``"true"``/``"false"``, our own ``newClientOrderId`` / ``clientAlgoId`` on every order;
every request goes through :meth:`BinanceClient.call` (timeout, clock, error translation).

Binance as it is (DESIGN §12):

- the account must be in one-way mode: :meth:`BinanceExchange.start` refuses hedge mode
  (``ConfigurationError``);
- a symbol's max leverage and notional brackets come from ``GET /fapi/v1/leverageBracket``
  (exchangeInfo has none); only the ``binance.contract_types`` are traded;
- an executed order is returned only with all its trades (their quantities add up to ``executedQty``),
  fees in USDT (BNB and other assets converted at the mark); else :class:`FillsIncomplete`;
- -2013 from ``GET /fapi/v1/algoOrder`` alone never means "not placed": the open and historical algo
  orders are searched first;
- a triggered algo order's child order is mapped back to our ``clientAlgoId`` through ``actualOrderId``
  (ALGO_UPDATE ``ai``, or the algo order history), whatever client id the child carries.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any, Final

import structlog

from common.config import BinanceSettings, ConfigurationError, Settings
from common.contracts.base import plain_decimal
from common.contracts.enums import Side
from common.exchange.base import (
    Balance,
    ConditionalKind,
    ConditionalOrder,
    Exchange,
    ExchangePosition,
    Fill,
    OrderEvent,
    OrderResult,
    is_ours,
)
from common.exchange.binance.client import BinanceClient, is_testnet
from common.exchange.binance.fills import PAGE_MAX, FillReader
from common.exchange.binance.tracking import OrderTracking
from common.exchange.binance.user_stream import UserStream
from common.exchange.binance.wire import (
    WORKING_STATUSES,
    conditional,
    order_result,
    position,
    traded_qty,
    usdt_balance,
)
from common.exchange.errors import (
    ExchangeError,
    FillsIncomplete,
    OrderNotFound,
    OrderRejected,
    SymbolNotTradable,
    TemporaryError,
)
from common.exchange.rules import NO_BRACKET_MAX_LEVERAGE, SymbolRules, build_rules, parse_leverage_brackets

log = structlog.get_logger()

#: re-reads of an executed order's trades within ``fills_wait_s`` before FillsIncomplete
FILLS_POLLS: Final = 4
#: GET /fapi/v1/positionSide/dual: true = hedge mode
#: https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Get-Current-Position-Mode
HEDGE_MODE_FIELD: Final = "dualSidePosition"


def _bool_param(value: bool) -> str:
    return "true" if value else "false"


def _examples(names: list[str], count: int = 5) -> list[str]:
    return sorted(names)[:count]


class BinanceExchange(Exchange):
    """Binance USD-M futures (mainnet or testnet) through python-binance."""

    def __init__(self, settings: BinanceSettings, *, testnet: bool = False) -> None:
        self.settings = settings
        self.testnet = testnet
        self.name = "binance-testnet" if testnet else "binance"
        self.client = BinanceClient(settings, testnet=testnet)
        self.tracking = OrderTracking()
        self.fills = FillReader(self.client, self.tracking, self.mark_price)
        self.user_stream = UserStream(self.client, settings, self.tracking, self.fills, self)
        self._rules: dict[str, SymbolRules] = {}
        self._rules_loaded_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BinanceExchange:
        return cls(settings.binance, testnet=is_testnet(settings))

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the client inside the running loop, sync the clock, refuse an account in hedge mode,
        load the rules."""
        self.client.open()
        self.user_stream.open()
        try:
            await self.client.sync_time()
            await self._refuse_hedge_mode()
            await self.symbol_rules()
        except BaseException:
            await self.close()
            raise
        log.info("binance_started", exchange=self.name, symbols=len(self._rules), testnet=self.testnet)

    async def _refuse_hedge_mode(self) -> None:
        """Hedge mode (one LONG and one SHORT position per symbol, orders needing ``positionSide``) is
        not supported: this adapter keys positions by symbol and sends ``reduceOnly``, which Binance
        refuses in hedge mode (-1106). Refuse to start rather than mishandle it."""
        raw = await self.client.call("futures_get_position_mode", mutation=False)
        if raw.get(HEDGE_MODE_FIELD) in (True, "true"):
            raise ConfigurationError(
                "binance.position_mode",
                "the Binance account is in hedge mode (dualSidePosition=true); switch it to one-way mode "
                "(Binance: Preferences > Position Mode > One-way, or POST /fapi/v1/positionSide/dual "
                "dualSidePosition=false, with no open position or order) and start again",
            )

    async def close(self) -> None:
        """Stop the user data stream, end :meth:`events`, release the HTTP sessions."""
        await self.user_stream.close()
        await self.client.close()

    @property
    def user_stream_connected(self) -> bool:
        """Whether the user data stream's websocket is up (else :meth:`events` is polling)."""
        return self.user_stream.connected

    def events(self) -> AsyncIterator[OrderEvent]:
        return self.user_stream.events()

    # --- symbol rules and market data ------------------------------------------------------------

    async def symbol_rules(self) -> dict[str, SymbolRules]:
        """exchangeInfo and the leverage brackets, re-read every ``rules_ttl_s``; only the symbols of
        ``binance.contract_types``."""
        if self._rules and time.monotonic() - self._rules_loaded_at < self.settings.rules_ttl_s:
            return self._rules
        info = await self.client.call("futures_exchange_info", mutation=False)
        brackets = parse_leverage_brackets(await self.client.call("futures_leverage_bracket", mutation=False))
        load = build_rules(info, brackets, self.settings.contract_types)
        if load.excluded:
            log.info(
                "binance_symbols_left_out",
                reason="contract type not in binance.contract_types",
                contract_types=list(self.settings.contract_types),
                count=len(load.excluded),
                by_type=dict(sorted(Counter(load.excluded.values()).items())),
                examples=_examples(list(load.excluded)),
            )
        if load.without_brackets:
            log.warning(
                "binance_symbols_without_leverage_brackets",
                count=len(load.without_brackets),
                examples=_examples(load.without_brackets),
                max_leverage=NO_BRACKET_MAX_LEVERAGE,
            )
        self._rules = load.rules
        self._rules_loaded_at = time.monotonic()
        return self._rules

    async def _tradable(self, symbol: str) -> SymbolRules:
        rules = (await self.symbol_rules()).get(symbol)
        if rules is None or not rules.tradable:
            raise SymbolNotTradable(symbol)
        return rules

    async def mark_price(self, symbol: str) -> Decimal:
        raw = await self.client.call("futures_mark_price", mutation=False, symbol=symbol)
        return Decimal(raw["markPrice"])

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        raw = await self.client.call("futures_change_leverage", mutation=True, symbol=symbol, leverage=str(leverage))
        return int(raw["leverage"])

    # --- orders ----------------------------------------------------------------------------------

    async def place_market_order(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *, reduce_only: bool
    ) -> OrderResult:
        rules = await self._tradable(symbol)
        quantity = rules.round_qty(qty)
        if quantity <= 0:
            raise OrderRejected(-4003, f"Quantity {plain_decimal(qty)} rounds to zero at step {rules.step_size}.")
        self.tracking.watched.add(symbol)
        raw = await self.client.call(
            "futures_create_order",
            mutation=True,
            symbol=symbol,
            side=side.value,
            type="MARKET",
            quantity=plain_decimal(quantity),
            reduceOnly=_bool_param(reduce_only),
            newClientOrderId=client_order_id,
            newOrderRespType="RESULT",
        )
        self.tracking.remember_order(raw)
        result = await self._complete(raw)
        log.info(
            "binance_order_placed",
            symbol=symbol,
            client_order_id=client_order_id,
            order_id=result.order_id,
            status=result.status.value,
            executed_qty=plain_decimal(result.executed_qty),
        )
        return result

    async def get_order(self, symbol: str, client_order_id: str) -> OrderResult:
        raw = await self.client.call(
            "futures_get_order", mutation=False, symbol=symbol, origClientOrderId=client_order_id
        )
        self.tracking.remember_order(raw)
        return await self._complete(raw)

    async def _complete(self, raw: Mapping[str, Any]) -> OrderResult:
        """The order with every one of its trades: a MARKET order still working (an ACK-style answer:
        NEW, ``executedQty`` 0) is re-read, and the trades are re-read until their quantities add up to
        ``executedQty`` — a few times within ``binance.fills_wait_s``, then :class:`FillsIncomplete`
        (never a result booked short). Binance does not document how far ``userTrades`` may lag an
        order that shows FILLED; it asks to pair REST with the user stream."""
        cid, order_id = raw["clientOrderId"], str(raw["orderId"])
        interval_s = self.settings.fills_wait_s / FILLS_POLLS
        problem = "not read"
        last_error: ExchangeError | None = None
        for attempt in range(FILLS_POLLS + 1):
            if attempt:
                await asyncio.sleep(interval_s)
                try:
                    raw = await self.client.call(
                        "futures_get_order", mutation=False, symbol=raw["symbol"], orderId=order_id
                    )
                except ExchangeError as e:
                    last_error, problem = e, f"order re-read failed: {type(e).__name__}"
                    continue
            if raw["type"] == "MARKET" and raw["status"] in WORKING_STATUSES:
                problem = f"the order is still {raw['status']}"
                continue
            executed = Decimal(raw["executedQty"])
            if executed <= 0:
                return order_result(raw, ())
            try:
                fills = await self.fills.trades_of(raw)
            except ExchangeError as e:
                last_error, problem = e, f"trades read failed: {type(e).__name__}"
                continue
            traded = traded_qty(fills)
            if traded == executed:
                return order_result(raw, fills)
            problem = f"trades add up to {plain_decimal(traded)} of executedQty {plain_decimal(executed)}"
        log.warning("binance_fills_incomplete", client_order_id=cid, order_id=order_id, problem=problem,
                    waited_s=self.settings.fills_wait_s)
        waited = self.settings.fills_wait_s
        raise FillsIncomplete(f"order {cid} ({order_id}): {problem} after {waited}s") from last_error

    # --- conditional (algo) orders ---------------------------------------------------------------

    async def place_conditional(
        self,
        symbol: str,
        kind: ConditionalKind,
        side: Side,
        trigger_price: Decimal,
        client_algo_id: str,
        *,
        close_position: bool = True,
        quantity: Decimal | None = None,
    ) -> ConditionalOrder:
        """A conditional on the mark price: ``closePosition`` (Binance keeps one per type and direction:
        -4130 for a second), or reduce-only for ``quantity`` (several may rest at once)."""
        rules = await self._tradable(symbol)
        params: dict[str, Any] = {
            "symbol": symbol,
            "side": side.value,
            "type": kind.value,
            "triggerPrice": plain_decimal(rules.round_price(trigger_price)),
            "workingType": "MARK_PRICE",
            # python-binance invents an id unless it is given one: always give ours
            "clientAlgoId": client_algo_id,
        }
        if close_position:
            params["closePosition"] = "true"  # Binance refuses reduceOnly/quantity beside it
        else:
            if quantity is None:
                raise ValueError("quantity is required unless close_position")
            size = rules.round_qty(quantity)
            if size <= 0:
                raise OrderRejected(-4003, f"Quantity {plain_decimal(quantity)} rounds to zero.")
            params["quantity"] = plain_decimal(size)
            params["reduceOnly"] = "true"
        self.tracking.watched.add(symbol)
        raw = await self.client.call("futures_create_order", mutation=True, **params)
        order = conditional(raw)
        self.tracking.track_open(symbol, client_algo_id)
        log.info(
            "binance_conditional_placed",
            symbol=symbol,
            client_algo_id=client_algo_id,
            algo_id=order.algo_id,
            kind=kind.value,
            trigger_price=plain_decimal(order.trigger_price),
            quantity=None if order.quantity is None else plain_decimal(order.quantity),
        )
        return order

    async def get_conditional(self, symbol: str, client_algo_id: str) -> ConditionalOrder:
        """GET /fapi/v1/algoOrder by ``clientAlgoId`` (its documented parameters only: no symbol). Its
        -2013 is not trusted alone (it answers so for completed orders past their retention, and public
        reports show it for orders ``allAlgoOrders`` still lists): openAlgoOrders and allAlgoOrders of the
        symbol are searched before concluding OrderNotFound."""
        try:
            raw = await self.client.call("futures_get_algo_order", mutation=False, clientAlgoId=client_algo_id)
        except OrderNotFound:
            raw = await self._find_algo(symbol, client_algo_id)
        self.tracking.note_algo(raw)
        return conditional(raw)

    async def _find_algo(self, symbol: str, client_algo_id: str) -> Mapping[str, Any]:
        open_now = await self.client.call("futures_get_open_orders", mutation=False, conditional=True, symbol=symbol)
        for raw in open_now:
            if raw.get("clientAlgoId") == client_algo_id:
                log.info("binance_algo_found_after_2013", client_algo_id=client_algo_id, where="openAlgoOrders")
                return dict(raw)
        history = await self.fills.algo_history(symbol)
        for raw in history:
            if raw.get("clientAlgoId") == client_algo_id:
                log.info("binance_algo_found_after_2013", client_algo_id=client_algo_id, where="allAlgoOrders")
                return dict(raw)
        if len(history) >= PAGE_MAX:
            # a full page without it proves nothing: there may be more
            raise TemporaryError(f"algo order {client_algo_id}: -2013, and the algo history has more than "
                                 f"{PAGE_MAX} orders to search")
        raise OrderNotFound(f"-2013: algo order {client_algo_id} is in neither algoOrder, openAlgoOrders nor "
                            "allAlgoOrders (the last 7 days)")

    async def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        await self.client.call("futures_cancel_algo_order", mutation=True, clientAlgoId=client_algo_id)
        self.tracking.forget_open(symbol, client_algo_id)
        log.info("binance_conditional_cancelled", symbol=symbol, client_algo_id=client_algo_id)

    async def open_conditionals(self, symbol: str | None = None) -> list[ConditionalOrder]:
        params: dict[str, Any] = {"conditional": True}
        if symbol is not None:
            params["symbol"] = symbol
        raw = await self.client.call("futures_get_open_orders", mutation=False, **params)
        orders = [conditional(o) for o in raw if o.get("orderType") in ConditionalKind.__members__]
        # ours are tracked until we learn how they ended (one that is gone from this list is looked up by
        # the poll, never just forgotten)
        for o in orders:
            if is_ours(o.client_algo_id):
                self.tracking.track_open(o.symbol, o.client_algo_id)
        self.tracking.watched.update(o.symbol for o in orders)
        return orders

    # --- account ---------------------------------------------------------------------------------

    async def positions(self) -> dict[str, ExchangePosition]:
        risk = await self.client.call("futures_position_information", mutation=False)
        open_rows = [r for r in risk if Decimal(r["positionAmt"]) != 0]
        if not open_rows:
            return {}
        config = await self.client.call("futures_symbol_config", mutation=False)
        leverage = {c["symbol"]: int(c["leverage"]) for c in config}
        positions = {r["symbol"]: position(r, leverage.get(r["symbol"], 0)) for r in open_rows}
        self.tracking.watched.update(positions)
        return positions

    async def balance(self) -> Balance:
        return usdt_balance(await self.client.call("futures_account_balance", mutation=False))

    async def fills_since(self, symbol: str, since_ms: int) -> list[Fill]:
        """The symbol's trades since ``since_ms`` (at most 7 days back); see :meth:`FillReader.fills_since`."""
        return await self.fills.fills_since(symbol, since_ms)
