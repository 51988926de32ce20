"""Fills apply_layer did not ask for directly — protective stop-loss and take-profit orders and
liquidations — turned into execution.result entries and position updates like any other fill.

Exchange events arrive through ``Exchange.events()``; ``fills_since`` is the fallback (a fill made while
apply_layer was down, or an event lost in between). A marker per ``fill_id`` keeps it to one
execution.result per fill, whichever path saw it first.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import structlog
from redis.asyncio import Redis

from common import keys
from common.bus import Effects, commit
from common.config import Settings
from common.contracts import ExitReason, FillKind, new_trace_id, now_ms
from common.exchange.base import Exchange, ExchangeEvent, Fill
from common.exchange.errors import OrderNotFound, TemporaryError, UnknownOutcome
from common.logging import bound
from common.positions import PositionRecord, all_positions, read_position
from common.redis_client import hgetall
from common.streams import Service, Stream
from services.apply_layer import book, results
from services.apply_layer.metrics import METRICS

log = structlog.get_logger()

#: how far back the polling fallback looks before the last booked fill (clock skew, same-ms fills)
CURSOR_OVERLAP_MS = 60_000

_REASONS = {FillKind.TAKE_PROFIT: ExitReason.TAKE_PROFIT, FillKind.LIQUIDATION: ExitReason.LIQUIDATION}


def kind_of(fill: Fill) -> FillKind | None:
    """What a fill is, from its client id: ``qt-<plan>-sl`` a stop, ``-tp`` a take-profit, ``autoclose-``
    a liquidation; None for our own market orders (booked by the plan that placed them)."""
    cid = fill.client_order_id
    if cid.startswith("autoclose") or cid.startswith("adl_autoclose"):
        return FillKind.LIQUIDATION
    if cid.startswith("qt-") and cid.endswith("-sl"):
        return FillKind.STOP
    if cid.startswith("qt-") and cid.endswith("-tp"):
        return FillKind.TAKE_PROFIT
    return None


class FillRouter:
    def __init__(self, redis: Redis, exchange: Exchange, settings: Settings,
                 locks: defaultdict[str, asyncio.Lock]) -> None:
        self.redis = redis
        self.exchange = exchange
        self.settings = settings
        self.locks = locks

    async def on_event(self, event: ExchangeEvent) -> bool:
        """Book one exchange event (under the symbol's lock); False when it was booked already."""
        return await self.book(event.fill, event.kind, event.origin_id)

    async def book(self, fill: Fill, kind: FillKind, origin_id: str) -> bool:
        if fill.ts_ms < now_ms() - self.settings.apply.record_ttl_s * 1000 + CURSOR_OVERLAP_MS:
            log.warning("exchange_fill_too_old", fill_id=fill.fill_id, ts=fill.ts_ms)
            return False  # older than its marker could be: it may have been booked already
        async with self.locks[fill.symbol]:
            if await self.redis.exists(keys.apply_fill(fill.fill_id)):
                return False
            position = await read_position(self.redis, fill.symbol)
            with bound(symbol=fill.symbol, trace_id=position.trace_id if position else None):
                effects, after = self._effects(fill, kind, origin_id, position)
                if position is not None and after is None:
                    await self._cancel_rest(position, fill.client_order_id)
                await commit(self.redis, effects.ops, service=Service.APPLY_LAYER)
                METRICS.fills.labels(kind.value).inc()
                log.info("exchange_fill_booked", kind=kind.value, fill_id=fill.fill_id, origin_id=origin_id,
                         qty=str(fill.qty), price=str(fill.price), position_after=str(book.signed(after)))
            return True

    def _effects(self, fill: Fill, kind: FillKind, origin_id: str,
                 position: PositionRecord | None) -> tuple[Effects, PositionRecord | None]:
        after = book.after_fill(position, fill.side, fill.qty, fill.price, fill.ts_ms)
        reason = (ExitReason(position.stop_reason) if kind is FillKind.STOP and position is not None
                  else _REASONS.get(kind, ExitReason.STOP_LOSS))
        effects = Effects().publish(Stream.EXECUTION_RESULT, results.execution(
            fill, plan_id=origin_id, trace_id=position.trace_id if position and position.trace_id else new_trace_id(),
            kind=kind, position_after=book.signed(after), position_plan_id=position.plan_id if position else None,
            reason=reason))
        ttl_ms = self.settings.apply.record_ttl_s * 1000
        effects.set(keys.apply_fill(fill.fill_id), origin_id, ttl_ms=ttl_ms)
        effects.hset(keys.apply_fill_cursor(), {fill.symbol: str(fill.ts_ms)})
        if position is not None:
            if after is None:
                effects.delete(keys.position(fill.symbol))
            else:
                effects.hset(keys.position(fill.symbol), after.to_hash(), replace=True)
        return effects, after

    async def _cancel_rest(self, position: PositionRecord, filled_id: str) -> None:
        for cid in (position.sl_order_id, position.tp_order_id):
            if cid and cid != filled_id:
                try:
                    await self.exchange.cancel_conditional(position.symbol, cid)
                except OrderNotFound:
                    pass
                except (TemporaryError, UnknownOutcome) as e:
                    log.warning("cancel_failed", client_order_id=cid, error=str(e))

    async def catch_up(self) -> int:
        """Book the protective and liquidation fills the exchange has that we have not (the fallback)."""
        cursor = await hgetall(self.redis, keys.apply_fill_cursor())
        symbols = set(cursor) | set(await all_positions(self.redis))
        booked = 0
        # never older than the fill markers live: a fill whose marker expired must not be booked again
        horizon = now_ms() - self.settings.apply.record_ttl_s * 1000 + CURSOR_OVERLAP_MS
        for symbol in sorted(symbols):
            since = max(horizon, int(cursor.get(symbol, "0")) - CURSOR_OVERLAP_MS)
            for fill in sorted(await self.exchange.fills_since(symbol, since), key=lambda f: f.ts_ms):
                kind = kind_of(fill)
                if kind is not None and await self.book(fill, kind, fill.client_order_id):
                    booked += 1
        if booked:
            log.warning("fills_caught_up", count=booked)
        return booked


