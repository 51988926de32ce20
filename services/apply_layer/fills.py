"""What the exchange did that apply_layer did not ask for directly — fills of the protective orders,
liquidations, and protective orders the exchange rejected or expired — booked like any other fill.

Exchange events arrive through ``Exchange.events()`` and wait here per symbol. They are booked under the
symbol's lock, by the router's own loop or — first of all — by the executor before it runs any plan of
that symbol (DESIGN §12: a plan never acts on a position the exchange has already closed).
``fills_since`` is the fallback (a fill made while apply_layer was down, or an event lost in between). A
marker per ``fill_id`` keeps it to one execution.result per fill, whichever path saw it first.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis

from common import keys
from common.bus import Effects, Fence, commit
from common.config import Settings
from common.contracts import Action, AlertEvent, ApplyPlan, ExitReason, FillKind, PlanStep, new_trace_id, now_ms
from common.exchange.base import (
    ConditionalEnded,
    ConditionalStatus,
    Exchange,
    Fill,
    OrderEvent,
    client_order_id,
    is_ours,
)
from common.exchange.errors import ExchangeError, OrderNotFound
from common.ids import exit_plan_id, hex16
from common.logging import bound
from common.positions import PositionRecord
from common.redis_client import hgetall
from common.store import all_positions, read_position
from common.streams import Service, Stream
from services.apply_layer import book, results
from services.apply_layer.lease import LeaseLost
from services.apply_layer.metrics import METRICS
from services.apply_layer.protection import PLACE_FAILED, Protector

log = structlog.get_logger()

#: how far back the polling fallback looks before the last booked fill (clock skew, same-ms fills)
CURSOR_OVERLAP_MS = 60_000
#: exchange events waiting to be booked at most (the event pump waits for room)
PENDING_MAX = 1000
#: a protective order in one of these states protects nothing any more
ENDED = frozenset({ConditionalStatus.EXPIRED, ConditionalStatus.REJECTED, ConditionalStatus.CANCELED,
                   ConditionalStatus.FINISHED})

_REASONS = {FillKind.TAKE_PROFIT: ExitReason.TAKE_PROFIT, FillKind.LIQUIDATION: ExitReason.LIQUIDATION}



@dataclass(frozen=True)
class CaughtUp:
    """What a catch-up did: exchange fills booked, and the plans of our own orders it found fills of
    that were not booked (their plans are settled by the caller)."""

    booked: int
    own_plans: tuple[str, ...] = ()


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


def own_plan_id(fill: Fill) -> str | None:
    """The plan id of one of our own market orders (``qt-<plan_id>``), else None."""
    cid = fill.client_order_id
    if cid.startswith("qt-") and kind_of(fill) is None and len(cid) == 19:
        return cid[3:]
    return None


def protection_lost_plan(position: PositionRecord, reason: str) -> ApplyPlan:
    """The full close of a position whose stop the exchange dropped and that cannot be protected again."""
    plan_id = exit_plan_id(position.plan_id, ExitReason.PROTECTION_LOST, 0)
    return ApplyPlan(source=Service.APPLY_LAYER, trace_id=position.trace_id or plan_id, plan_id=plan_id,
                     symbol=position.symbol, action=Action.FULL_CLOSE_PROPOSED, position_plan_id=position.plan_id,
                     reason=ExitReason.PROTECTION_LOST, steps=[PlanStep(step="CLOSE_FULL", pct=100.0)])


#: how soon events queued for a busy symbol are looked at again; and events the exchange could not be
#: asked about (re-protection during an outage)
BUSY_RECHECK_S = 0.02
DEFERRED_RECHECK_S = 0.2


class FillRouter:
    def __init__(self, redis: Redis, exchange: Exchange, settings: Settings, locks: defaultdict[str, asyncio.Lock],
                 protector: Protector, fence: Fence | None = None) -> None:
        self.redis = redis
        self.exchange = exchange
        self.settings = settings
        self.locks = locks
        self.protector = protector
        self.fence = fence
        self._pending: defaultdict[str, list[OrderEvent]] = defaultdict(list)
        self._count = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()

    # --- events: queued per symbol, booked under its lock ------------------------------------------

    async def accept(self, event: OrderEvent) -> None:
        """Queue an event for its symbol (waits while PENDING_MAX are queued)."""
        while self._count >= PENDING_MAX:
            self._room.clear()
            await self._room.wait()
        self._pending[_symbol(event)].append(event)
        self._count += 1
        self._arrived.set()

    async def book_waiting(self, timeout_s: float) -> int:
        """Book the queued events of every symbol whose lock is free (a symbol busy with a plan books its
        own before its next plan, or on the next round); waits up to ``timeout_s`` for one to arrive. An
        event the exchange cannot be asked about now (re-protection), or not without a lease renewed
        lately, stays queued. Returns how many were booked."""
        if not self._count:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=timeout_s)
            except TimeoutError:
                return 0
        booked = 0
        deferred = False
        for symbol in [s for s, events in self._pending.items() if events]:
            if self.locks[symbol].locked():
                continue
            async with self.locks[symbol]:
                try:
                    booked += await self.flush_locked(symbol)
                except (ExchangeError, LeaseLost) as e:
                    deferred = True
                    # a lease renewed late (Redis restarting) sends nothing now; one truly lost stops the
                    # service through its renewal task
                    log.warning("exchange_event_deferred", symbol=symbol, error=str(e) or type(e).__name__)
        if self._count and not booked:
            # the rest waits for busy symbols (a plan in hand: it books them itself before its next plan) or
            # for the exchange; looked at again soon — a stop's fill must not wait long behind a plan
            await asyncio.sleep(min(timeout_s, DEFERRED_RECHECK_S if deferred else BUSY_RECHECK_S))
        return booked

    async def flush_locked(self, symbol: str) -> int:
        """Book the queued events of ``symbol`` in order; the caller holds the symbol's lock. An event
        stays queued until it is booked (a Redis outage raises; it is tried again)."""
        queue = self._pending.get(symbol)
        done = 0
        while queue:
            event = queue[0]
            if isinstance(event, ConditionalEnded):
                await self._protection_ended(event)
            else:
                await self._book_locked(event.fill, event.kind, event.origin_id)
            queue.pop(0)
            self._count -= 1
            self._room.set()
            done += 1
        return done

    async def book(self, fill: Fill, kind: FillKind, origin_id: str) -> bool:
        """Book one exchange fill under the symbol's lock; False when it was booked already."""
        async with self.locks[fill.symbol]:
            return await self._book_locked(fill, kind, origin_id)

    async def _book_locked(self, fill: Fill, kind: FillKind, origin_id: str) -> bool:
        if fill.ts_ms < now_ms() - self.settings.apply.record_ttl_s * 1000 + CURSOR_OVERLAP_MS:
            log.warning("exchange_fill_too_old", fill_id=fill.fill_id, ts=fill.ts_ms)
            return False  # older than its marker could be: it may have been booked already
        if await self.redis.exists(keys.apply_fill(fill.fill_id)):
            return False
        position = await read_position(self.redis, fill.symbol)
        with bound(symbol=fill.symbol, trace_id=position.trace_id if position else None):
            effects, after = self._effects(fill, kind, origin_id, position)
            if position is not None and after is None:
                await self.protector.cancel_all(position, except_id=fill.client_order_id)
            await commit(self.redis, effects.ops, service=Service.APPLY_LAYER, fence=self.fence)
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

    # --- a protective order the exchange dropped ---------------------------------------------------

    async def _protection_ended(self, event: ConditionalEnded) -> None:
        """The exchange rejected or expired a protective order: alert, and protect the position again (a
        new stop for what is held); a stop that cannot be placed again closes the position, or only
        alerts, per ``apply.unprotected``."""
        position = await read_position(self.redis, event.symbol)
        with bound(symbol=event.symbol):
            if position is None or event.client_algo_id not in (position.sl_order_id, position.tp_order_id):
                log.info("protection_ended_ignored", client_algo_id=event.client_algo_id, status=event.status.value,
                         reason=event.reason)
                return
            is_stop = event.client_algo_id == position.sl_order_id
            trace = position.trace_id or position.plan_id
            effects = Effects().publish(Stream.ALERTS, AlertEvent(
                source=Service.APPLY_LAYER, trace_id=trace, kind="PROTECTION_ENDED", reason=event.reason[:500] or
                event.status.value, details={"symbol": event.symbol, "client_algo_id": event.client_algo_id,
                                             "status": event.status.value, "plan_id": position.plan_id}))
            log.error("protection_ended", client_algo_id=event.client_algo_id, status=event.status.value,
                      reason=event.reason, order="stop" if is_stop else "take_profit")
            rules = (await self.exchange.symbol_rules()).get(event.symbol)
            new_id = client_order_id(hex16(position.plan_id, event.client_algo_id), "sl" if is_stop else "tp")
            after: PositionRecord | None = None
            try:
                if rules is None:
                    raise ExchangeError(f"no trading rules for {event.symbol}")
                if is_stop and position.stop_loss is not None:
                    after = await self.protector.replace_stop(position.with_changes(sl_order_id=""), rules,
                                                              position.stop_loss, new_id)
                elif not is_stop:
                    await self.protector.replace_tp(position, rules, new_id)
                    after = position.with_changes(tp_order_id=new_id)
                log.warning("protection_replaced", client_algo_id=new_id)
            except (*PLACE_FAILED, ExchangeError) as e:
                log.error("protection_not_replaced", error=str(e))
                if is_stop:
                    after = position.with_changes(sl_order_id="")
                    if self.settings.apply.unprotected == "close":
                        effects.publish(Stream.APPLY_PLAN, protection_lost_plan(position, str(e)))
                        log.warning("unprotected_position_closing", plan_id=position.plan_id)
                effects.publish(Stream.ALERTS, AlertEvent(
                    source=Service.APPLY_LAYER, trace_id=trace, kind="PROTECTION_NOT_PLACED", reason=str(e)[:500],
                    details={"symbol": event.symbol, "plan_id": position.plan_id,
                             "action": "closing" if is_stop and self.settings.apply.unprotected == "close"
                             else "alert_only"}))
            if after is not None:
                effects.hset(keys.position(event.symbol), after.to_hash(), replace=True)
            await commit(self.redis, effects.ops, service=Service.APPLY_LAYER, fence=self.fence)

    async def audit_protection(self) -> int:
        """Every open position's protective orders, asked of the exchange: a stop or take-profit that ended
        without filling (an event lost in a restart) is handled as that event would have been, and a
        position that has no stop on record gets one. Returns how many were found wanting."""
        wanting = 0
        for symbol, position in sorted((await all_positions(self.redis)).items()):
            async with self.locks[symbol]:
                position = await read_position(self.redis, symbol)  # type: ignore[assignment]
                if position is None:
                    continue
                for cid in (position.sl_order_id, position.tp_order_id):
                    if not cid:
                        continue
                    try:
                        order = await self.exchange.get_conditional(symbol, cid)
                    except OrderNotFound:
                        order = None
                    if order is None or order.status in ENDED:
                        wanting += 1
                        status = order.status if order is not None else ConditionalStatus.EXPIRED
                        await self._protection_ended(ConditionalEnded(symbol, cid, status, "found by the audit",
                                                                      now_ms()))
                        position = await read_position(self.redis, symbol)  # type: ignore[assignment]
                        if position is None:
                            break
                if position is not None and not position.sl_order_id and position.stop_loss is not None:
                    wanting += 1
                    await self._reprotect_stop(position)
        return wanting

    async def sweep_orphans(self) -> int:
        """Our protective orders resting on a symbol with no position — a cancel lost to a fault, or a stop
        placed as its position closed — are cancelled: a quantity-based reduce-only stop outlives its
        position on Binance and would close a later position of the symbol at a stale level. A symbol whose
        exchange position is not booked yet is left to the catch-up. Returns how many were cancelled."""
        positions = await all_positions(self.redis)
        swept = 0
        for order in await self.exchange.open_conditionals():
            if not is_ours(order.client_algo_id) or order.symbol in positions:
                continue
            async with self.locks[order.symbol]:
                if await read_position(self.redis, order.symbol) is not None:
                    continue
                if order.symbol in await self.exchange.positions():
                    continue
                try:
                    await self.exchange.cancel_conditional(order.symbol, order.client_algo_id)
                except OrderNotFound:
                    continue
            swept += 1
            log.warning("orphan_protection_cancelled", symbol=order.symbol, client_algo_id=order.client_algo_id,
                        kind=order.kind.value, trigger_price=str(order.trigger_price))
        return swept

    async def _reprotect_stop(self, position: PositionRecord) -> None:
        """A position with no stop on record (its placement failed): place one now."""
        rules = (await self.exchange.symbol_rules()).get(position.symbol)
        if rules is None or position.stop_loss is None or not self.protector.enabled:
            return
        effects = Effects()
        after = await self.protector.resize(position, rules, hex16(position.plan_id, "reprotect", position.updated_at),
                                           effects)
        if after.sl_order_id:
            log.warning("protection_restored", symbol=position.symbol, client_algo_id=after.sl_order_id)
            effects.hset(keys.position(position.symbol), after.to_hash(), replace=True)
        await commit(self.redis, effects.ops, service=Service.APPLY_LAYER, fence=self.fence)

    # --- the polling fallback -----------------------------------------------------------------------

    async def catch_up(self) -> CaughtUp:
        """Book the protective and liquidation fills the exchange has that we have not (the fallback), and
        name the plans of our own orders whose fills are there but not booked (still SUBMITTING)."""
        cursor = await hgetall(self.redis, keys.apply_fill_cursor())
        symbols = set(cursor) | set(await all_positions(self.redis))
        booked = 0
        own: list[str] = []
        for symbol in sorted(symbols):
            async with self.locks[symbol]:
                caught = await self.catch_up_locked(symbol, cursor.get(symbol))
            booked += caught.booked
            own.extend(caught.own_plans)
        if booked:
            log.warning("fills_caught_up", count=booked)
        return CaughtUp(booked, tuple(own))

    async def catch_up_locked(self, symbol: str, cursor: str | None = None) -> CaughtUp:
        """The fallback for one symbol (its lock held): its protective and liquidation fills since the
        cursor are booked; fills of our own market orders not booked yet name their plans."""
        if cursor is None:
            cursor = (await hgetall(self.redis, keys.apply_fill_cursor())).get(symbol)
        # never older than the fill markers live: a fill whose marker expired must not be booked again
        horizon = now_ms() - self.settings.apply.record_ttl_s * 1000 + CURSOR_OVERLAP_MS
        since = max(horizon, int(cursor or "0") - CURSOR_OVERLAP_MS)
        booked = 0
        own: list[str] = []
        for fill in sorted(await self.exchange.fills_since(symbol, since), key=lambda f: f.ts_ms):
            kind = kind_of(fill)
            if kind is not None:
                booked += await self._book_locked(fill, kind, fill.client_order_id)
            elif ((plan_id := own_plan_id(fill)) is not None and plan_id not in own
                  and not await self.redis.exists(keys.apply_fill(fill.fill_id))):
                own.append(plan_id)
        return CaughtUp(booked, tuple(own))


def _symbol(event: OrderEvent) -> str:
    return event.symbol if isinstance(event, ConditionalEnded) else event.fill.symbol

