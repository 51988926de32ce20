"""The I/O around exitbrain's decisions: read a position, its exit state, the mark and the market state
(one round trip), decide (:mod:`services.exitbrain.decide`), and commit the exit state with the plans in one MULTI/EXEC.

One asyncio lock per symbol is held from the reads to the commit, by the mark loop and by the
``harvest.proposal`` handler alike (the consumer holds it around its commit too), so the two never
interleave their read-modify-write of one exit state.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from decimal import Decimal

import structlog
from prometheus_client import Histogram
from redis.asyncio import Redis

from common import keys
from common.bus import Delete, Delivery, Effects, HashSet, Op, Publish, commit
from common.config import Settings
from common.contracts import ApplyPlan, HarvestProposal, Message, now_ms
from common.logging import bound
from common.positions import PositionRecord
from common.store import all_positions, read_symbol_view
from common.streams import Service, Stream
from services.exitbrain.decide import ExitParams, Outcome, PnlThrottle, evaluate, on_proposal, pnl
from services.exitbrain.exit_state import ExitState

#: the distribution of kill scores over open positions (observed at the exitbrain.pnl rate)
KILL_SCORE = Histogram("qt_exitbrain_kill_score", "Kill score of open positions",
                       buckets=(0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0))

log = structlog.get_logger()


class ExitBrain:
    """Evaluates open positions on marks and turns harvest proposals into plans."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.params = ExitParams.from_settings(settings)
        self.throttle = PnlThrottle(int(settings.exit.pnl_interval_s * 1000))
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: symbols whose exit state this process wrote (deleted once their position is gone)
        self.tracked: set[str] = set()

    def guard(self, message: Message) -> AbstractAsyncContextManager[object]:
        return self.locks[getattr(message, "symbol", "")]

    # --- marks ---------------------------------------------------------------------------------------

    async def scan(self) -> int:
        """Evaluate every open position at the latest price of its hash; forget closed ones. Returns how
        many positions were evaluated."""
        positions = await all_positions(self.redis)
        for symbol in sorted(self.tracked - positions.keys()):
            await self.evaluate_symbol(symbol)
        for symbol in positions:
            await self.evaluate_symbol(symbol)
        return len(positions)

    async def evaluate_symbol(self, symbol: str, mark: Decimal | None = None) -> None:
        """Decide for one symbol at ``mark`` (default: the price hash's mark) and commit."""
        async with self.locks[symbol]:
            view = await read_symbol_view(self.redis, symbol, (keys.exit_state(symbol),))
            position, market = view.position, view.market
            if position is None:
                await self._forget(symbol)
                return
            if mark is None:
                if view.price is None:
                    log.debug("no_price", symbol=symbol)
                    return
                mark = view.price.mark_price
            state = ExitState.from_hash(view.extra[0])
            now = now_ms()
            outcome = evaluate(position, state, mark, market, now, self.params)
            ops: list[Op] = []
            if outcome.state != state:
                ops.append(HashSet(keys.exit_state(symbol), outcome.state.to_hash(), replace=True))
            ops.extend(Publish(Stream.APPLY_PLAN, plan) for plan in outcome.plans)
            pnl_due = self.throttle.due(symbol, now)
            if pnl_due:
                ops.append(Publish(Stream.EXITBRAIN_PNL, pnl(position, outcome.state, mark, outcome.kill, now)))
            if not ops:
                return
            await commit(self.redis, ops, service=Service.EXITBRAIN)
            self.tracked.add(symbol)
            if pnl_due:
                self.throttle.mark(symbol, now)
                if outcome.kill is not None:
                    KILL_SCORE.observe(outcome.kill.score)
            _log_outcome(position, state, outcome, mark)

    async def _forget(self, symbol: str) -> None:
        if symbol in self.tracked:
            await commit(self.redis, [Delete(keys.exit_state(symbol))], service=Service.EXITBRAIN)
            self.tracked.discard(symbol)
            self.throttle.forget(symbol)
            log.info("exit_state_dropped", symbol=symbol, reason="position_closed")

    # --- harvest proposals ---------------------------------------------------------------------------

    async def handle_proposal(self, delivery: Delivery) -> Effects:
        """A ``harvest.proposal`` → the harvest plans of its stage (once per stage) and the exit state,
        committed by the runtime with the XACK. The consumer holds the symbol's lock around this."""
        proposal = delivery.message
        assert isinstance(proposal, HarvestProposal)
        with bound(trace_id=proposal.trace_id, symbol=proposal.symbol):
            view = await read_symbol_view(self.redis, proposal.symbol, (keys.exit_state(proposal.symbol),))
            position, market, state = view.position, view.market, ExitState.from_hash(view.extra[0])
            outcome = on_proposal(proposal, position, state, market, now_ms(), self.params)
            if outcome.ignored:
                log.info("proposal_ignored", reason=outcome.ignored, stage=proposal.stage.value,
                         position_plan_id=proposal.position_plan_id,
                         current_plan_id=position.plan_id if position else None)
                return Effects()
            assert position is not None
            effects = Effects().hset(keys.exit_state(proposal.symbol), outcome.state.to_hash(), replace=True)
            for plan in outcome.plans:
                effects.publish(Stream.APPLY_PLAN, plan)
            self.tracked.add(proposal.symbol)
            _log_outcome(position, state, outcome, proposal.trigger_price, proposal=proposal)
            return effects


def _log_outcome(position: PositionRecord, before: ExitState | None, outcome: Outcome, mark: Decimal,
                 proposal: HarvestProposal | None = None) -> None:
    """Every decision is a log line (the old exitbrain logged nothing)."""
    with bound(symbol=position.symbol):
        if before is None or before.position_plan_id != position.plan_id:
            log.info("exit_state_started", position_plan_id=position.plan_id, side=position.side.value,
                     entry_price=str(position.entry_price), leverage=position.leverage,
                     base_sl=outcome.state.base_sl, base_tp=outcome.state.base_tp,
                     ladder_stop=str(outcome.state.ladder_stop),
                     sigma_at_entry=outcome.state.sigma_at_entry,
                     ts_strength_at_entry=outcome.state.ts_strength_at_entry)
        for plan in outcome.plans:
            _log_plan(plan, outcome, mark, proposal)


def _log_plan(plan: ApplyPlan, outcome: Outcome, mark: Decimal, proposal: HarvestProposal | None) -> None:
    with bound(trace_id=plan.trace_id, plan_id=plan.plan_id):
        fields: dict[str, object] = {
            "action": plan.action.value, "reason": plan.reason.value if plan.reason else None,
            "position_plan_id": plan.position_plan_id, "mark_price": str(mark), "stage": outcome.state.stage,
            "from_proposal": proposal is not None,
        }
        if plan.action.is_exit:
            fields["close_pct"] = plan.close_pct
        if plan.new_stop_loss is not None:
            fields["new_stop_loss"] = str(plan.new_stop_loss)
        if plan.kill_score is not None:
            fields.update(kill_score=plan.kill_score, k_regime_flip=plan.k_regime_flip,
                          k_sigma_spike=plan.k_sigma_spike, k_ts_drop=plan.k_ts_drop,
                          k_age_penalty=plan.k_age_penalty)
        if proposal is not None:
            fields.update(proposed_close_pct=proposal.close_pct, proposal_r_multiple=proposal.r_multiple)
        log.info("exit_plan_proposed", **fields)
