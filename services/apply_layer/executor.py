"""The plan executor (DESIGN §6, §12): one plan at a time per symbol, exactly once.

Its exchange is the service's throttled one, which checks the lease right before every order leaves, and
its commits are fenced by the lease: an instance that lost it neither sends nor commits.

For each plan: a DONE record → ``SKIP duplicate_plan`` (or, for the very entry that record answered, a
plain acknowledgement); a SUBMITTING record (a crash mid-flight) → ask the exchange for
``qt-<plan_id>``: found → record it, not found → submit. Before any plan of a symbol runs, the exchange
fills of that symbol waiting to be booked are booked (a plan never acts on a position the exchange has
closed). Then the gates, then SUBMITTING is recorded *before* the send, then the send (retries with the
same client id), then one commit (by the runtime): record DONE, position hash, cooldown, apply.result,
execution.result per fill.

Locks: every plan holds its symbol's lock from its reads to its commit. An entry also holds the
portfolio lock (taken after the symbol's), so the gates that count across symbols — open positions,
total notional — see every entry committed before them; exits and stop updates never wait on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal

import structlog
from redis.asyncio import Redis

from common import keys
from common.bus import Delivery, Effects, Fence
from common.config import Settings
from common.contracts import (
    Action,
    AlertEvent,
    ApplyPlan,
    ApplyResult,
    Decision,
    FillKind,
    Message,
    PlanReason,
    PositionSide,
    now_ms,
)
from common.exchange.base import Exchange, OrderResult, client_order_id
from common.exchange.errors import REDUCE_ONLY_REJECTED, OrderNotFound, OrderRejected, TemporaryError
from common.exchange.placement import RetryPolicy, place_market_once
from common.exchange.rules import SymbolRules
from common.logging import bound
from common.positions import PositionRecord
from common.store import all_positions, current_policy, read_ess, read_position, read_price
from common.streams import Service, Stream
from services.apply_layer import book, results
from services.apply_layer.fills import FillRouter
from services.apply_layer.gates import EntryFacts, entry_gate, exit_quantity, loosens_stop, position_gate
from services.apply_layer.lease import LeaseLost
from services.apply_layer.metrics import METRICS
from services.apply_layer.protection import Protector
from services.apply_layer.records import PlanRecord, PlanState, done, load_record, mark_submitting

log = structlog.get_logger()

ActionHandler = Callable[[ApplyPlan, str, PlanRecord | None, float], Awaitable[Effects]]


class Executor:
    """Executes plans against ``exchange``; returns the Effects the runtime commits with the XACK."""

    #: what makes a plan wait and try again without counting a delivery: the exchange being unavailable
    #: (an exit is retried until it goes; an entry until it goes stale), or the lease not renewed lately
    #: (nothing is sent meanwhile; a lease really lost stops the service)
    TRANSIENT: tuple[type[BaseException], ...] = (TemporaryError, LeaseLost)

    def __init__(self, redis: Redis, exchange: Exchange, settings: Settings, retry: RetryPolicy, *,
                 fence: Fence | None = None) -> None:
        self.redis = redis
        self.exchange = exchange
        self.settings = settings
        self.apply = settings.apply
        self.retry = retry
        self.fence = fence
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: held by entries (after their symbol's lock) from their gates to their commit
        self.portfolio = asyncio.Lock()
        self.protector = Protector(exchange, settings, retry)
        self.router = FillRouter(redis, exchange, settings, self.locks, self.protector, fence)
        self._by_action: dict[Action, ActionHandler] = {
            Action.ENTRY_PROPOSED: self._entry,
            Action.FULL_CLOSE_PROPOSED: self._exit,
            Action.PARTIAL_CLOSE_PROPOSED: self._exit,
            Action.UPDATE_STOP: self._update_stop,
            Action.ADOPT_EXCHANGE: self._adopt,
        }

    # --- locks ---------------------------------------------------------------------------------------

    def guard(self, message: Message) -> AbstractAsyncContextManager[object]:
        """Held around a plan's handling and its commit: the symbol's lock, and for entries and adoptions
        (which change what the portfolio holds) the portfolio lock after it."""
        symbol = getattr(message, "symbol", "")
        portfolio = isinstance(message, ApplyPlan) and message.action in (Action.ENTRY_PROPOSED,
                                                                          Action.ADOPT_EXCHANGE)
        return self._locked(symbol, portfolio=portfolio)

    @asynccontextmanager
    async def _locked(self, symbol: str, *, portfolio: bool) -> AsyncIterator[object]:
        async with self.locks[symbol]:
            if not portfolio:
                yield None
                return
            async with self.portfolio:
                yield None

    # --- plans -----------------------------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> Effects:
        plan = delivery.message
        assert isinstance(plan, ApplyPlan)
        return await self.execute(plan, delivery.entry_id)

    async def execute(self, plan: ApplyPlan, entry_id: str) -> Effects:
        """Run ``plan`` (its guard is held by the caller)."""
        started = time.monotonic()
        with bound(plan_id=plan.plan_id, symbol=plan.symbol, trace_id=plan.trace_id):
            record = await load_record(self.redis, plan.plan_id)
            if record is not None and record.state is PlanState.DONE:
                if entry_id and record.entry_id == entry_id:
                    # this very entry was settled already (at start, or by the settling round): its one
                    # result exists; acknowledge it without a second
                    log.info("plan_already_settled", action=plan.action.value, decision=record.decision)
                    return Effects()
                log.info("plan_duplicate", action=plan.action.value, first_decision=record.decision)
                return self._result(Effects(), results.skip(plan, PlanReason.DUPLICATE_PLAN))
            await self.router.flush_locked(plan.symbol)
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
        position = await read_position(self.redis, plan.symbol)
        alerts = Effects()
        if order is None:
            reason = entry_gate(plan, await self._entry_facts(plan, rules))
            if reason is not None:
                return self._finish_skip(plan, reason, entry_id)
            assert rules is not None
            qty = rules.round_qty(plan.qty)
            if qty <= 0:
                return self._finish_skip(plan, PlanReason.BELOW_STEP, entry_id)
            position, agrees = await self._verified(plan, position, Decimal(0), alerts)
            if not agrees:
                return self._finish_skip(plan, PlanReason.RECONCILE_DRIFT, entry_id).extend(alerts)
            try:
                await self.exchange.set_leverage(plan.symbol, plan.leverage)
                await mark_submitting(self.redis, plan, cid, entry_id, self.apply.record_ttl_s)
                order = await place_market_once(self.exchange, plan.symbol, plan.side, qty, cid, reduce_only=False,
                                                policy=self.retry)
            except OrderRejected as e:
                return self._finish_error(plan, e.reason_code, cid, started, entry_id)
            except TemporaryError as e:
                log.warning("entry_not_placed", error=str(e))
                return self._finish_error(plan, PlanReason.EXCHANGE_UNAVAILABLE, cid, started, entry_id)
        else:
            # placed before a crash: the position it joins is checked against the exchange too (a stop of
            # the position may have filled since), but the order exists and is booked whatever it says
            delta = order.executed_qty * plan.side.position_side.sign
            position, _ = await self._verified(plan, position, delta, alerts)
        effects = Effects().extend(alerts)
        after = await self._book_fills(effects, plan, order, position, FillKind.ENTRY)
        if after is not None and rules is not None:
            if position is None:
                after = await self.protector.protect(after, rules, effects)
            elif after.quantity != position.quantity:
                after = await self.protector.resize(after, rules, plan.plan_id, effects)
        if after is not None:
            effects.hset(keys.position(plan.symbol), after.to_hash(), replace=True)
        if self.apply.cooldown_s:
            effects.set(keys.cooldown(plan.symbol), plan.plan_id, ttl_ms=self.apply.cooldown_s * 1000)
        return self._finish_executed(effects, plan, order, cid, started, entry_id)

    async def _entry_facts(self, plan: ApplyPlan, rules: SymbolRules | None) -> EntryFacts:
        price = await read_price(self.redis, plan.symbol)
        return EntryFacts(
            ess=await read_ess(self.redis),
            rules=rules,
            cooldown_active=bool(await self.redis.exists(keys.cooldown(plan.symbol))),
            reconcile_blocked=bool(await self.redis.exists(keys.reconcile_drift(plan.symbol))),
            policy=await current_policy(self.redis, self.settings),
            positions=await all_positions(self.redis),
            mark_price=price.mark_price if price else None,
            now_ms=now_ms(),
            entry_max_age_ms=self.apply.entry_max_age_s * 1000,
            entry_max_move_frac=self.apply.entry_max_move_frac,
        )

    async def _verified(self, plan: ApplyPlan, position: PositionRecord | None, delta: Decimal,
                        alerts: Effects) -> tuple[PositionRecord | None, bool]:
        """The position an entry joins, checked against the exchange (which should hold it plus ``delta``,
        this entry's own fill when it was placed already). When they differ, the symbol's missed fills are
        booked first and the position read again; (the position, whether they agree now)."""
        theirs = await self._exchange_qty(plan.symbol)
        if theirs == book.signed(position) + delta:
            return position, True
        await self.router.catch_up_locked(plan.symbol)
        position = await read_position(self.redis, plan.symbol)
        if theirs == book.signed(position) + delta:
            return position, True
        log.error("entry_position_drift", redis_qty=str(book.signed(position)), exchange_qty=str(theirs),
                  entry_qty=str(delta))
        alerts.publish(Stream.ALERTS, AlertEvent(
            source=Service.APPLY_LAYER, trace_id=plan.trace_id, kind="RECONCILE_DRIFT", reason="entry_check",
            details={"symbol": plan.symbol, "redis_qty": str(book.signed(position)), "exchange_qty": str(theirs),
                     "plan_id": plan.plan_id}))
        return position, False

    async def _exchange_qty(self, symbol: str) -> Decimal:
        theirs = (await self.exchange.positions()).get(symbol)
        return theirs.position_amt if theirs is not None else Decimal(0)

    # --- exits -------------------------------------------------------------------------------------

    async def _exit(self, plan: ApplyPlan, entry_id: str, record: PlanRecord | None, started: float) -> Effects:
        cid = client_order_id(plan.plan_id)
        position = await read_position(self.redis, plan.symbol)
        rules = (await self.exchange.symbol_rules()).get(plan.symbol)
        order = await self._settle(plan, cid, record)
        if order is None:
            reason = position_gate(plan, position)
            if reason is not None:
                return self._finish_skip(plan, reason, entry_id)
            assert position is not None
            price = await read_price(self.redis, plan.symbol)
            qty = (exit_quantity(plan, position, rules, price.mark_price if price else None) if rules
                   else position.quantity)
            if qty <= 0:
                return self._finish_skip(plan, PlanReason.BELOW_STEP, entry_id)
            await mark_submitting(self.redis, plan, cid, entry_id, self.apply.record_ttl_s)
            try:
                # exits are retried until they go: a TemporaryError past the retries leaves the plan
                # pending (SUBMITTING) and it is redelivered, never reported as done
                order = await place_market_once(self.exchange, plan.symbol, position.side.close_side, qty, cid,
                                                reduce_only=True, policy=self.retry)
            except OrderRejected as e:
                if e.code == REDUCE_ONLY_REJECTED and await self._closed_by_the_exchange(plan.symbol):
                    return self._finish_skip(plan, PlanReason.NO_POSITION, entry_id)
                return self._finish_error(plan, e.reason_code, cid, started, entry_id)
        effects = Effects()
        after = await self._book_fills(effects, plan, order, position, FillKind.EXIT)
        if after is None:
            effects.delete(keys.position(plan.symbol))
            if position is not None:
                await self.protector.cancel_all(position)
        else:
            if rules is not None and position is not None and after.quantity != position.quantity:
                after = await self.protector.resize(after, rules, plan.plan_id, effects)
            effects.hset(keys.position(plan.symbol), after.to_hash(), replace=True)
        return self._finish_executed(effects, plan, order, cid, started, entry_id)

    async def _closed_by_the_exchange(self, symbol: str) -> bool:
        """After a reduce-only rejection: the exchange had nothing to reduce — its own stop (or take-profit,
        or a liquidation) closed the position a moment ago and its fill is not booked yet. Book what the
        exchange filled (the symbol's lock is held) and say whether the position is gone."""
        await self.router.flush_locked(symbol)
        await self.router.catch_up_locked(symbol)
        gone = await read_position(self.redis, symbol) is None
        log.info("exit_met_an_exchange_close", symbol=symbol, position_gone=gone)
        return gone

    # --- stop updates ------------------------------------------------------------------------------

    async def _update_stop(self, plan: ApplyPlan, entry_id: str, record: PlanRecord | None,
                           started: float) -> Effects:
        assert plan.new_stop_loss is not None and plan.reason is not None
        position = await read_position(self.redis, plan.symbol)
        reason = position_gate(plan, position)
        if reason is not None:
            return self._finish_skip(plan, reason, entry_id)
        assert position is not None
        cid = client_order_id(plan.plan_id, "sl")
        rules = (await self.exchange.symbol_rules()).get(plan.symbol)
        stop = rules.round_price(plan.new_stop_loss) if rules else plan.new_stop_loss
        if loosens_stop(position, stop):
            return self._finish_skip(plan, PlanReason.STOP_NOT_TIGHTER, entry_id)
        if rules is None:
            return self._finish_skip(plan, PlanReason.SYMBOL_NOT_TRADABLE, entry_id)
        try:
            # the new stop first, then the old one goes: the position is never without a stop
            after = await self.protector.replace_stop(position, rules, stop, cid)
        except OrderRejected as e:
            return self._finish_error(plan, e.reason_code, cid, started, entry_id)
        after = after.with_changes(stop_reason=plan.reason.value, updated_at=now_ms())
        effects = Effects().hset(keys.position(plan.symbol), after.to_hash(), replace=True)
        return self._finish_executed(effects, plan, None, cid, started, entry_id)

    # --- adopting the exchange's truth ----------------------------------------------------------------

    async def _adopt(self, plan: ApplyPlan, entry_id: str, record: PlanRecord | None, started: float) -> Effects:
        """Rewrite (or delete) the position hash from the exchange's position, under the symbol's lock —
        what reconciliation asks for with resolution=adopt. No order is placed. A position taken over
        from the exchange has no stop or target on record: exitbrain manages it with default levels.
        position_monitor, the one detector of drift, sees it resolved on its next pass."""
        position = await read_position(self.redis, plan.symbol)
        theirs = (await self.exchange.positions()).get(plan.symbol)
        amount = theirs.position_amt if theirs is not None else Decimal(0)
        ours = book.signed(position)
        if ours == amount:
            return self._finish_skip(plan, PlanReason.NO_DRIFT, entry_id)
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
            await self.protector.cancel_all(position)
        log.warning("exchange_position_adopted", redis_qty=str(ours), exchange_qty=str(amount))
        return self._finish_executed(effects, plan, None, "", started, entry_id)

    # --- settling what was left SUBMITTING ---------------------------------------------------------

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
        return self._finish_error(plan, reason, cid, started, "")

    async def dead_lettered(self, message: Message, reason: str) -> Effects:
        """A plan dead-lettered by the runtime still gets its one result: ERROR ``dead_lettered`` when it
        never reached the exchange. A SUBMITTING one is left to the settling round (its order may exist);
        a DONE one has its result already."""
        assert isinstance(message, ApplyPlan)
        record = await load_record(self.redis, message.plan_id)
        if record is not None:
            return Effects()
        log.warning("plan_dead_lettered", plan_id=message.plan_id, symbol=message.symbol, reason=reason[:200])
        return self._finish_error(message, PlanReason.DEAD_LETTERED, "", time.monotonic(), "")

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

    async def _book_fills(self, effects: Effects, plan: ApplyPlan, order: OrderResult,
                          position: PositionRecord | None, kind: FillKind) -> PositionRecord | None:
        """execution.result per fill, with the position after each; returns the position after all. A
        fill already booked (its marker exists) is not booked again."""
        after = position
        now = now_ms()
        for fill in results.fills_of(order):
            if await self.redis.exists(keys.apply_fill(fill.fill_id)):
                continue
            after = book.after_fill(after, fill.side, fill.qty, fill.price, now,
                                    plan if kind is FillKind.ENTRY else None)
            owner = after.plan_id if after is not None else (position.plan_id if position else plan.position_plan_id)
            effects.publish(Stream.EXECUTION_RESULT, results.execution(
                fill, plan_id=plan.plan_id, trace_id=plan.trace_id, kind=kind, position_after=book.signed(after),
                position_plan_id=owner, reason=plan.reason))
            effects.set(keys.apply_fill(fill.fill_id), plan.plan_id, ttl_ms=self.apply.record_ttl_s * 1000)
            METRICS.fills.labels(kind.value).inc()
        return after

    def _result(self, effects: Effects, result: ApplyResult) -> Effects:
        METRICS.results.labels(result.action.value, result.decision.value).inc()
        return effects.publish(Stream.APPLY_RESULT, result)

    def _finish_skip(self, plan: ApplyPlan, reason: str, entry_id: str) -> Effects:
        effects = Effects()
        effects.ops.append(done(plan.plan_id, Decision.SKIP, error=reason, entry_id=entry_id,
                                ttl_s=self.apply.record_ttl_s))
        return self._result(effects, results.skip(plan, reason))

    def _finish_error(self, plan: ApplyPlan, reason: str, cid: str, started: float, entry_id: str) -> Effects:
        effects = Effects()
        effects.ops.append(done(plan.plan_id, Decision.ERROR, error=reason, client_order_id=cid, entry_id=entry_id,
                                ttl_s=self.apply.record_ttl_s))
        return self._result(effects, results.error(plan, reason, cid, _ms_since(started)))

    def _finish_executed(self, effects: Effects, plan: ApplyPlan, order: OrderResult | None, cid: str,
                         started: float, entry_id: str) -> Effects:
        latency = _ms_since(started)
        effects.ops.append(done(plan.plan_id, Decision.EXECUTE, client_order_id=cid,
                                order_id=order.order_id if order else "", entry_id=entry_id,
                                ttl_s=self.apply.record_ttl_s))
        METRICS.latency.observe(latency / 1000)
        return self._result(effects, results.executed(plan, order, cid, latency))


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

