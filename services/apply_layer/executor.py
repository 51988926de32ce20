"""The plan executor (DESIGN §6): one plan at a time per symbol, exactly once.

For each plan: a DONE record → ``SKIP duplicate_plan``; a SUBMITTING record (a crash mid-flight) → ask
the exchange for ``qt-<plan_id>``: found → record it, not found → submit. Then the gates, then
SUBMITTING is recorded *before* the send, then the send (retries with the same client id), then one
commit (by the runtime): record DONE, position hash, cooldown, apply.result, execution.result per fill.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal

import structlog
from redis.asyncio import Redis

from common import keys
from common.bus import Delivery, Effects
from common.config import Settings
from common.contracts import (
    Action,
    AlertEvent,
    ApplyPlan,
    ApplyResult,
    Decision,
    FillKind,
    Message,
    PositionSide,
    ReconcileEvent,
    ReconcileKind,
    now_ms,
)
from common.ess import read_ess
from common.exchange.base import ConditionalKind, Exchange, OrderResult, client_order_id
from common.exchange.errors import OrderNotFound, OrderRejected, TemporaryError, UnknownOutcome
from common.exchange.placement import RetryPolicy, place_conditional_once, place_market_once
from common.exchange.rules import SymbolRules
from common.logging import bound
from common.market import read_price
from common.policy import current_policy
from common.positions import PositionRecord, all_positions, read_position
from common.streams import Service, Stream
from services.apply_layer import book, results
from services.apply_layer.gates import EntryFacts, entry_gate, exit_quantity, position_gate
from services.apply_layer.metrics import METRICS
from services.apply_layer.records import PlanRecord, PlanState, done, load_record, mark_submitting

log = structlog.get_logger()

ActionHandler = Callable[[ApplyPlan, str, PlanRecord | None, float], Awaitable[Effects]]


class Executor:
    """Executes plans against ``exchange``; returns the Effects the runtime commits with the XACK."""

    def __init__(self, redis: Redis, exchange: Exchange, settings: Settings, retry: RetryPolicy) -> None:
        self.redis = redis
        self.exchange = exchange
        self.settings = settings
        self.apply = settings.apply
        self.retry = retry
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._by_action: dict[Action, ActionHandler] = {
            Action.ENTRY_PROPOSED: self._entry,
            Action.FULL_CLOSE_PROPOSED: self._exit,
            Action.PARTIAL_CLOSE_PROPOSED: self._exit,
            Action.UPDATE_STOP: self._update_stop,
            Action.ADOPT_EXCHANGE: self._adopt,
        }

    def guard(self, message: Message) -> AbstractAsyncContextManager[object]:
        """The per-symbol lock, held around a plan's handling and commit (and by the fill router)."""
        return self.locks[getattr(message, "symbol", "")]

    async def handle(self, delivery: Delivery) -> Effects:
        plan = delivery.message
        assert isinstance(plan, ApplyPlan)
        return await self.execute(plan, delivery.entry_id)

    async def execute(self, plan: ApplyPlan, entry_id: str) -> Effects:
        started = time.monotonic()
        with bound(plan_id=plan.plan_id, symbol=plan.symbol, trace_id=plan.trace_id):
            record = await load_record(self.redis, plan.plan_id)
            if record is not None and record.state is PlanState.DONE:
                log.info("plan_duplicate", action=plan.action.value, first_decision=record.decision)
                return self._result(Effects(), results.skip(plan, "duplicate_plan"))
            effects = await self._by_action[plan.action](plan, entry_id, record, started)
            for result in effects.published(Stream.APPLY_RESULT):
                assert isinstance(result, ApplyResult)
                log.info("plan_applied", action=plan.action.value, decision=result.decision.value,
                         error=result.error, filled_qty=str(result.filled_qty), latency_ms=result.latency_ms)
            return effects

    # --- entries -----------------------------------------------------------------------------------

    async def _entry(self, plan: ApplyPlan, entry_id: str, record: PlanRecord | None, started: float) -> Effects:
        assert plan.side is not None and plan.qty is not None and plan.leverage is not None
        cid = client_order_id(plan.plan_id)
        rules = (await self.exchange.symbol_rules()).get(plan.symbol)
        order = await self._settle(plan, cid, record)
        if order is None:
            reason = entry_gate(plan, await self._entry_facts(plan, rules))
            if reason is not None:
                return self._finish_skip(plan, reason)
            assert rules is not None
            qty = rules.round_qty(plan.qty)
            if qty <= 0:
                return self._finish_skip(plan, "below_step")
            try:
                await self.exchange.set_leverage(plan.symbol, plan.leverage)
                await mark_submitting(self.redis, plan, cid, entry_id, self.apply.record_ttl_s)
                order = await place_market_once(self.exchange, plan.symbol, plan.side, qty, cid, reduce_only=False,
                                                policy=self.retry)
            except OrderRejected as e:
                return self._finish_error(plan, e.reason_code, cid, started)
            except TemporaryError as e:
                log.warning("entry_not_placed", error=str(e))
                return self._finish_error(plan, "exchange:unavailable", cid, started)
        position = await read_position(self.redis, plan.symbol)
        effects = Effects()
        after = self._book_fills(effects, plan, order, position, FillKind.ENTRY)
        if position is None and after is not None and self.apply.protective_orders and rules is not None:
            after = await self._protect(after, rules, effects)
        if after is not None:
            effects.hset(keys.position(plan.symbol), after.to_hash(), replace=True)
        if self.apply.cooldown_s:
            effects.set(keys.cooldown(plan.symbol), plan.plan_id, ttl_ms=self.apply.cooldown_s * 1000)
        return self._finish_executed(effects, plan, order, cid, started)

    async def _entry_facts(self, plan: ApplyPlan, rules: SymbolRules | None) -> EntryFacts:
        price = await read_price(self.redis, plan.symbol)
        return EntryFacts(
            ess=await read_ess(self.redis),
            rules=rules,
            cooldown_active=bool(await self.redis.exists(keys.cooldown(plan.symbol))),
            reconcile_blocked=bool(await self.redis.exists(keys.apply_blocked(plan.symbol))),
            policy=await current_policy(self.redis, self.settings),
            positions=await all_positions(self.redis),
            mark_price=price.mark_price if price else None,
            now_ms=now_ms(),
            entry_max_age_ms=self.apply.entry_max_age_s * 1000,
        )

    # --- exits -------------------------------------------------------------------------------------

    async def _exit(self, plan: ApplyPlan, entry_id: str, record: PlanRecord | None, started: float) -> Effects:
        cid = client_order_id(plan.plan_id)
        position = await read_position(self.redis, plan.symbol)
        order = await self._settle(plan, cid, record)
        if order is None:
            reason = position_gate(plan, position)
            if reason is not None:
                return self._finish_skip(plan, reason)
            assert position is not None
            rules = (await self.exchange.symbol_rules()).get(plan.symbol)
            price = await read_price(self.redis, plan.symbol)
            qty = (exit_quantity(plan, position, rules, price.mark_price if price else None) if rules
                   else position.quantity)
            if qty <= 0:
                return self._finish_skip(plan, "below_step")
            await mark_submitting(self.redis, plan, cid, entry_id, self.apply.record_ttl_s)
            try:
                # exits are retried until they go: a TemporaryError past the retries leaves the plan
                # pending (SUBMITTING) and it is redelivered, never reported as done
                order = await place_market_once(self.exchange, plan.symbol, position.side.close_side, qty, cid,
                                                reduce_only=True, policy=self.retry)
            except OrderRejected as e:
                return self._finish_error(plan, e.reason_code, cid, started)
        effects = Effects()
        after = self._book_fills(effects, plan, order, position, FillKind.EXIT)
        if after is None:
            effects.delete(keys.position(plan.symbol))
            if position is not None:
                await self._cancel_protection(position)
        else:
            effects.hset(keys.position(plan.symbol), after.to_hash(), replace=True)
        return self._finish_executed(effects, plan, order, cid, started)

    # --- stop updates ------------------------------------------------------------------------------

    async def _update_stop(self, plan: ApplyPlan, entry_id: str, record: PlanRecord | None,
                           started: float) -> Effects:
        assert plan.new_stop_loss is not None and plan.reason is not None
        position = await read_position(self.redis, plan.symbol)
        reason = position_gate(plan, position)
        if reason is not None:
            return self._finish_skip(plan, reason)
        assert position is not None
        cid = client_order_id(plan.plan_id, "sl")
        rules = (await self.exchange.symbol_rules()).get(plan.symbol)
        stop = rules.round_price(plan.new_stop_loss) if rules else plan.new_stop_loss
        if position.stop_loss is not None and (stop - position.stop_loss) * position.side.sign < 0:
            # a stop only ever tightens: an update that arrives late (after a tighter one) is refused
            return self._finish_skip(plan, "stop_not_tighter")
        sl_order_id = position.sl_order_id
        if self.apply.protective_orders:
            try:
                # the new stop first, then the old one goes: the position is never without a stop
                await place_conditional_once(self.exchange, plan.symbol, ConditionalKind.STOP_MARKET,
                                             position.side.close_side, stop, cid, policy=self.retry)
            except OrderRejected as e:
                return self._finish_error(plan, e.reason_code, cid, started)
            if position.sl_order_id and position.sl_order_id != cid:
                await self._cancel(plan.symbol, position.sl_order_id)
            sl_order_id = cid
        after = position.with_changes(stop_loss=stop, sl_order_id=sl_order_id, stop_reason=plan.reason.value,
                                      updated_at=now_ms())
        effects = Effects().hset(keys.position(plan.symbol), after.to_hash(), replace=True)
        return self._finish_executed(effects, plan, None, cid, started)

    # --- adopting the exchange's truth ----------------------------------------------------------------

    async def _adopt(self, plan: ApplyPlan, entry_id: str, record: PlanRecord | None, started: float) -> Effects:
        """Rewrite (or delete) the position hash from the exchange's position, under the symbol's lock —
        what reconciliation asks for with resolution=adopt. No order is placed. A position taken over
        from the exchange has no stop or target on record: exitbrain manages it with default levels."""
        position = await read_position(self.redis, plan.symbol)
        theirs = (await self.exchange.positions()).get(plan.symbol)
        amount = theirs.position_amt if theirs is not None else Decimal(0)
        ours = book.signed(position)
        if ours == amount:
            return self._finish_skip(plan, "no_drift")
        now = now_ms()
        effects = Effects()
        after: PositionRecord | None = None
        if theirs is None or amount == 0:
            effects.delete(keys.position(plan.symbol))
        else:
            side = PositionSide.LONG if amount > 0 else PositionSide.SHORT
            if position is not None and position.side is side:
                after = position.with_changes(quantity=abs(amount), entry_price=theirs.entry_price, updated_at=now)
            else:
                after = PositionRecord(plan.symbol, side, abs(amount), theirs.entry_price, theirs.leverage, None,
                                       None, plan.plan_id, now, now, plan.trace_id)
            effects.hset(keys.position(plan.symbol), after.to_hash(), replace=True)
        if position is not None and (after is None or after.plan_id != position.plan_id):
            await self._cancel_protection(position)
        effects.delete(keys.apply_blocked(plan.symbol))
        effects.publish(Stream.RECONCILE_EVENTS, ReconcileEvent(
            source=Service.APPLY_LAYER, trace_id=plan.trace_id, symbol=plan.symbol, kind=ReconcileKind.RESOLVED,
            redis_qty=ours, exchange_qty=amount, action_taken="adopted_exchange_position"))
        log.warning("exchange_position_adopted", redis_qty=str(ours), exchange_qty=str(amount))
        return self._finish_executed(effects, plan, None, "", started)

    async def abandon(self, plan: ApplyPlan, reason: str) -> Effects:
        """Close a SUBMITTING plan without sending anything: its order, if the exchange has one, is
        recorded as executed; otherwise the plan ends as ERROR ``reason``."""
        started = time.monotonic()
        cid = client_order_id(plan.plan_id)
        if plan.action is Action.ENTRY_PROPOSED or plan.action.is_exit:
            record = await load_record(self.redis, plan.plan_id)
            if await self._settle(plan, cid, record) is not None:
                return await self.execute(plan, "")
        log.warning("plan_abandoned", reason=reason)
        return self._finish_error(plan, reason, cid, started)

    # --- shared steps ------------------------------------------------------------------------------

    async def _settle(self, plan: ApplyPlan, cid: str, record: PlanRecord | None) -> OrderResult | None:
        """A SUBMITTING record is settled by asking the exchange — never by sending again blindly."""
        if record is None or record.state is not PlanState.SUBMITTING:
            return None
        try:
            order = await self.exchange.get_order(plan.symbol, cid)
        except OrderNotFound:
            log.info("plan_settled", found=False)
            return None
        log.info("plan_settled", found=True, order_id=order.order_id)
        METRICS.settled.inc()
        return order

    def _book_fills(self, effects: Effects, plan: ApplyPlan, order: OrderResult, position: PositionRecord | None,
                    kind: FillKind) -> PositionRecord | None:
        """execution.result per fill, with the position after each; returns the position after all."""
        after = position
        now = now_ms()
        for fill in results.fills_of(order):
            after = book.after_fill(after, fill.side, fill.qty, fill.price, now,
                                    plan if kind is FillKind.ENTRY else None)
            owner = after.plan_id if after is not None else (position.plan_id if position else plan.position_plan_id)
            effects.publish(Stream.EXECUTION_RESULT, results.execution(
                fill, plan_id=plan.plan_id, trace_id=plan.trace_id, kind=kind, position_after=book.signed(after),
                position_plan_id=owner, reason=plan.reason))
            effects.set(keys.apply_fill(fill.fill_id), plan.plan_id, ttl_ms=self.apply.record_ttl_s * 1000)
            METRICS.fills.labels(kind.value).inc()
        return after

    async def _protect(self, position: PositionRecord, rules: SymbolRules, effects: Effects) -> PositionRecord:
        """Stop-loss and take-profit on the exchange, so a dead fleet still leaves a protected position."""
        ids: dict[str, str] = {}
        for kind, price, suffix in ((ConditionalKind.STOP_MARKET, position.stop_loss, "sl"),
                                    (ConditionalKind.TAKE_PROFIT_MARKET, position.take_profit, "tp")):
            if price is None:
                continue
            cid = client_order_id(position.plan_id, suffix)
            try:
                await place_conditional_once(self.exchange, position.symbol, kind, position.side.close_side,
                                             rules.round_price(price), cid, policy=self.retry)
                ids[suffix] = cid
            except (OrderRejected, TemporaryError, UnknownOutcome) as e:
                log.error("protection_not_placed", kind=kind.value, error=str(e))
                effects.publish(Stream.ALERTS, AlertEvent(
                    source=Service.APPLY_LAYER, trace_id=position.trace_id, kind="PROTECTION_NOT_PLACED",
                    reason=str(e)[:500], details={"symbol": position.symbol, "order": kind.value,
                                                  "trigger_price": str(price), "plan_id": position.plan_id}))
        return position.with_changes(sl_order_id=ids.get("sl", ""), tp_order_id=ids.get("tp", ""))

    async def _cancel_protection(self, position: PositionRecord) -> None:
        """A full close cancels what is left of its protective orders."""
        for cid in (position.sl_order_id, position.tp_order_id):
            if cid:
                await self._cancel(position.symbol, cid)

    async def _cancel(self, symbol: str, cid: str) -> None:
        try:
            await self.exchange.cancel_conditional(symbol, cid)
        except OrderNotFound:
            pass  # triggered, expired or cancelled already
        except (TemporaryError, UnknownOutcome) as e:
            log.warning("cancel_failed", client_order_id=cid, error=str(e))

    def _result(self, effects: Effects, result: ApplyResult) -> Effects:
        METRICS.results.labels(result.action.value, result.decision.value).inc()
        return effects.publish(Stream.APPLY_RESULT, result)

    def _finish_skip(self, plan: ApplyPlan, reason: str) -> Effects:
        effects = Effects()
        effects.ops.append(done(plan.plan_id, Decision.SKIP, error=reason, ttl_s=self.apply.record_ttl_s))
        return self._result(effects, results.skip(plan, reason))

    def _finish_error(self, plan: ApplyPlan, reason: str, cid: str, started: float) -> Effects:
        effects = Effects()
        effects.ops.append(done(plan.plan_id, Decision.ERROR, error=reason, client_order_id=cid,
                                ttl_s=self.apply.record_ttl_s))
        return self._result(effects, results.error(plan, reason, cid, _ms_since(started)))

    def _finish_executed(self, effects: Effects, plan: ApplyPlan, order: OrderResult | None, cid: str,
                         started: float) -> Effects:
        latency = _ms_since(started)
        effects.ops.append(done(plan.plan_id, Decision.EXECUTE, client_order_id=cid,
                                order_id=order.order_id if order else "", ttl_s=self.apply.record_ttl_s))
        METRICS.latency.observe(latency / 1000)
        return self._result(effects, results.executed(plan, order, cid, latency))


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


