"""The protective orders on the exchange (DESIGN §6 step 5, §12): what a dead fleet leaves behind.

Every open position has exactly one live stop on the exchange: a reduce-only STOP_MARKET for the
position's quantity (not a ``closePosition`` stop — Binance refuses a second close-position stop in the
same direction while one rests, -4130, so a close-position stop could only be replaced by cancelling it
first, leaving a window without one). Replacing the stop (a stop update, or a new quantity after a
partial close or an added entry) places the new stop *first* and then cancels the old one.

A take-profit on the exchange sits only at the ladder's last level, TP3 (a ``closePosition``
TAKE_PROFIT_MARKET: a guard for when the fleet is down), never below the partial levels that
harvest_proposal owns.
"""

from __future__ import annotations

from decimal import Decimal

import structlog

from common.bus import Effects
from common.config import Settings
from common.contracts import AlertEvent
from common.exchange.base import ConditionalKind, Exchange, client_order_id
from common.exchange.errors import OrderNotFound, OrderRejected, TemporaryError, UnknownOutcome
from common.exchange.placement import RetryPolicy, place_conditional_once
from common.exchange.rules import SymbolRules
from common.exit_levels import LadderParams, base_fractions, levels_of
from common.positions import PositionRecord
from common.streams import Service, Stream

log = structlog.get_logger()

#: a protective order could not be placed (the position may be without it)
PLACE_FAILED = (OrderRejected, TemporaryError, UnknownOutcome)


class Protector:
    """Places, replaces and cancels a position's stop and take-profit."""

    def __init__(self, exchange: Exchange, settings: Settings, retry: RetryPolicy) -> None:
        self.exchange = exchange
        self.enabled = settings.apply.protective_orders
        self.ladder = LadderParams.from_settings(settings)
        self.retry = retry

    def tp3_price(self, position: PositionRecord) -> Decimal:
        """The ladder's last take-profit level of the position (what harvest_proposal calls TP3)."""
        base_sl, base_tp = base_fractions(position, self.ladder)
        prices, _ = levels_of(position, base_sl, base_tp, self.ladder)
        return prices.tp3

    async def protect(self, position: PositionRecord, rules: SymbolRules, effects: Effects) -> PositionRecord:
        """A new position: its stop (for its quantity) and a take-profit at TP3."""
        if not self.enabled:
            return position
        sl_id = tp_id = ""
        if position.stop_loss is not None:
            sl_id = await self._place(position, rules, ConditionalKind.STOP_MARKET, position.stop_loss,
                                      client_order_id(position.plan_id, "sl"), effects)
        tp_id = await self._place(position, rules, ConditionalKind.TAKE_PROFIT_MARKET, self.tp3_price(position),
                                  client_order_id(position.plan_id, "tp"), effects)
        return position.with_changes(sl_order_id=sl_id, tp_order_id=tp_id)

    async def replace_stop(self, position: PositionRecord, rules: SymbolRules, stop: Decimal,
                           new_id: str) -> PositionRecord:
        """Place a stop at ``stop`` for the position's quantity under ``new_id``, then cancel the old one:
        never a moment without a stop. Raises what the placement raises (the old stop then stays)."""
        if not self.enabled:
            return position.with_changes(stop_loss=stop)
        await self._send(position, rules, ConditionalKind.STOP_MARKET, stop, new_id)
        if position.sl_order_id and position.sl_order_id != new_id:
            await self.cancel(position.symbol, position.sl_order_id)
        return position.with_changes(stop_loss=stop, sl_order_id=new_id)

    async def replace_tp(self, position: PositionRecord, rules: SymbolRules, new_id: str) -> None:
        """A take-profit at TP3 again, under ``new_id`` (the previous one is gone)."""
        if self.enabled:
            await self._send(position, rules, ConditionalKind.TAKE_PROFIT_MARKET, self.tp3_price(position), new_id)

    async def resize(self, position: PositionRecord, rules: SymbolRules, plan_id: str,
                     effects: Effects) -> PositionRecord:
        """After a fill changed the quantity (a partial close, an added entry): the stop again for exactly
        what is held, under an id of the plan that changed it."""
        if not self.enabled or position.stop_loss is None:
            return position
        try:
            return await self.replace_stop(position, rules, position.stop_loss, client_order_id(plan_id, "sl"))
        except PLACE_FAILED as e:
            self._alert(position, effects, ConditionalKind.STOP_MARKET, position.stop_loss, e)
            return position

    async def cancel_all(self, position: PositionRecord, *, except_id: str = "") -> None:
        """A full close cancels what is left of the position's protective orders."""
        for cid in (position.sl_order_id, position.tp_order_id):
            if cid and cid != except_id:
                await self.cancel(position.symbol, cid)

    async def cancel(self, symbol: str, cid: str) -> None:
        try:
            await self.exchange.cancel_conditional(symbol, cid)
        except OrderNotFound:
            pass  # triggered, expired or cancelled already
        except (TemporaryError, UnknownOutcome) as e:
            log.warning("cancel_failed", client_order_id=cid, error=str(e))

    async def _place(self, position: PositionRecord, rules: SymbolRules, kind: ConditionalKind, price: Decimal,
                     cid: str, effects: Effects) -> str:
        try:
            await self._send(position, rules, kind, price, cid)
            return cid
        except PLACE_FAILED as e:
            self._alert(position, effects, kind, price, e)
            return ""

    async def _send(self, position: PositionRecord, rules: SymbolRules, kind: ConditionalKind, price: Decimal,
                    cid: str) -> None:
        stop = kind is ConditionalKind.STOP_MARKET
        await place_conditional_once(
            self.exchange, position.symbol, kind, position.side.close_side, rules.round_price(price), cid,
            close_position=not stop, quantity=position.quantity if stop else None, policy=self.retry)

    @staticmethod
    def _alert(position: PositionRecord, effects: Effects, kind: ConditionalKind, price: Decimal,
               error: Exception) -> None:
        log.error("protection_not_placed", symbol=position.symbol, kind=kind.value, error=str(error))
        effects.publish(Stream.ALERTS, AlertEvent(
            source=Service.APPLY_LAYER, trace_id=position.trace_id or position.plan_id, kind="PROTECTION_NOT_PLACED",
            reason=str(error)[:500], details={"symbol": position.symbol, "order": kind.value,
                                              "trigger_price": str(price), "plan_id": position.plan_id}))
