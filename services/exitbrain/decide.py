"""exitbrain's decisions (pure): a position, its exit state, the mark and the market state in; the plans
to publish and the new exit state out.

exitbrain owns the risk exits; the take-profit ladder is harvest_proposal's (DESIGN §12), and its stages
reach exitbrain only as ``harvest.proposal`` messages. Per mark (:func:`evaluate`), in this order:

1. the stop in force crossed in software → ``FULL_CLOSE_PROPOSED`` (``stop_loss`` before TP1; after it
   the reason of the stop in force: ``breakeven`` while it sits at break-even, else ``trailing_stop``);
2. the kill score (DESIGN §7) at or over the threshold → ``FULL_CLOSE_PROPOSED`` ``kill_score`` with
   the score and its four components. ``k_regime_flip`` means the regime *turned* against the position:
   it counts once the regime has been seen not against it (a position opened in a trendless market has
   no trend to lose; without this every such position would be killed on its first evaluation);
3. the position held ``max_hold_ms`` or longer (when set) → ``FULL_CLOSE_PROPOSED`` ``time_exit``;
4. the TP3 harvest (100 % of what is open) proposed ``close_retry_ms`` ago and the position still open →
   ``FULL_CLOSE_PROPOSED`` ``harvest_tp3``;
5. a stop that tightened by at least ``min_stop_step_frac`` since the one last asked for → ``UPDATE_STOP``
   (``stop_loss`` for the leverage-aware stop before TP1; after it the trailing stop follows the best mark).

A full close in flight holds everything else back; if the position is still open ``close_retry_ms``
after it was proposed, the same close is proposed again under a new attempt id. Every open position is
managed so, whatever its ladder stage: a position still open after TP3 keeps its stop, trailing, kill
score, time exit and retries. A harvest proposal (:func:`on_proposal`) becomes the stage's harvest
plans, once per position and stage whatever is re-proposed, and moves the stop as the stage requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property

from common.config import Settings
from common.contracts import (
    ApplyPlan,
    ExitbrainPnl,
    ExitReason,
    HarvestProposal,
    HarvestStage,
    PositionSide,
    ProposalIgnored,
)
from common.exit_levels import LadderParams, base_fractions, levels_of
from common.maths.kill_score import KillScore, KillScoreParams, kill_score, regime_flipped
from common.maths.levels import (
    LevelPrices,
    Split,
    best_price,
    breakeven_price,
    close_pct_of_current,
    stop_crossed,
    stop_moved_enough,
    tighten,
    trailing_stop,
)
from common.maths.marketstate import MarketStateValue, MarketView
from common.positions import PositionRecord
from common.streams import Service
from services.exitbrain import plans
from services.exitbrain.exit_state import ExitState

TP_STAGES: dict[HarvestStage, int] = {HarvestStage.TP1: 1, HarvestStage.TP2: 2, HarvestStage.TP3: 3}
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class ExitParams(LadderParams):
    """The constants of exitbrain's decisions (``[exit]`` settings, DESIGN §7 defaults): the ladder's (for
    the leverage-aware stop, break-even and trailing), the kill score's, the close retry and the time exit."""

    kill: KillScoreParams = field(default_factory=KillScoreParams)
    #: a full close (or the TP3 harvest) still not done this long after it was proposed is proposed again
    close_retry_ms: int = 120_000
    #: a position open this long is closed in full (``time_exit``); 0: no time exit
    max_hold_ms: int = 0

    @cached_property
    def kill_unarmed(self) -> KillScoreParams:
        """The kill score's constants for a position whose regime has not been seen not against it: the
        regime flip weighs nothing."""
        return replace(self.kill, w_regime_flip=0.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> ExitParams:
        e = settings.exit
        return cls(
            kill=KillScoreParams(w_regime_flip=e.w_regime_flip, w_sigma_spike=e.w_sigma_spike,
                                 w_ts_drop=e.w_ts_drop, w_age_penalty=e.w_age_penalty,
                                 threshold=e.kill_threshold, horizon_ms=e.kill_age_horizon_s * 1000),
            levels=LadderParams.levels_from(settings),
            default_sl=settings.signal.min_sl_frac,
            reward_risk=settings.signal.reward_risk,
            close_retry_ms=int(e.close_retry_s * 1000),
            max_hold_ms=e.max_hold_s * 1000,
        )


@dataclass(frozen=True)
class Outcome:
    """What one decision leaves: the state to write, the plans to publish (in order), the kill score
    when the market state allowed one, and why nothing was done when a proposal was ignored."""

    state: ExitState
    plans: list[ApplyPlan] = field(default_factory=list)
    kill: KillScore | None = None
    ignored: ProposalIgnored | None = None


# --- the position's levels --------------------------------------------------------------------------


def position_levels(position: PositionRecord, state: ExitState, params: ExitParams) -> tuple[LevelPrices, Split]:
    """The adaptive TP1..TP3 and SL prices of the position (leverage-aware), and its harvest split."""
    return levels_of(position, state.base_sl, state.base_tp, params)


def market_value(market: MarketView) -> MarketStateValue:
    """The market state contract as the kill score reads it (the trend's sign is the sign of ``mu``); the
    estimator's own value as it is."""
    if isinstance(market, MarketStateValue):
        return market
    return MarketStateValue(
        sigma=market.sigma, mu=market.mu, ts_strength=market.ts_strength, p_trend=market.p_trend,
        p_mr=market.p_mr, p_chop=market.p_chop, regime=market.regime, atr_pct=market.atr_pct,
        trend_sign=(market.mu > 0.0) - (market.mu < 0.0), efficiency_ratio=0.0, autocorr=0.0,
    )


def start(position: PositionRecord, market: MarketView | None, params: ExitParams, now: int) -> ExitState:
    """A fresh exit state for a position seen for the first time (or whose entry plan changed): stage 0,
    best price the entry, the stop in force the tighter of the position's and the leverage-aware one."""
    base_sl, base_tp = base_fractions(position, params)
    state = ExitState(position_plan_id=position.plan_id, stage=0, peak_price=position.entry_price,
                      ladder_stop=position.entry_price, stop_loss=position.stop_loss, base_sl=base_sl,
                      base_tp=base_tp, updated_at=now)
    prices, _ = position_levels(position, state, params)
    state = state.with_changes(ladder_stop=tighten(position.side, position.stop_loss, prices.sl))
    return _remember_market(state, market, position.side, params)


def _remember_market(state: ExitState, market: MarketView | None, side: PositionSide,
                     params: ExitParams) -> ExitState:
    """The market state at entry is the first one seen with the position; the regime flip is armed once
    the regime is seen not against the position."""
    if market is None:
        return state
    if not state.has_entry_market:
        state = state.with_changes(sigma_at_entry=market.sigma, ts_strength_at_entry=market.ts_strength)
    if not state.regime_armed and not regime_flipped(side, market_value(market), params.kill):
        state = state.with_changes(regime_armed=True)
    return state


def current_state(position: PositionRecord, state: ExitState | None, market: MarketView | None,
                  params: ExitParams, now: int) -> ExitState:
    """``state`` when it belongs to this position, else a fresh one; the market at entry filled in."""
    if state is None or state.position_plan_id != position.plan_id:
        return start(position, market, params, now)
    return _remember_market(state, market, position.side, params)


def score(position: PositionRecord, state: ExitState, market: MarketView | None, now: int,
          params: ExitParams) -> KillScore | None:
    """The kill score, once both the market now and the market at entry are known."""
    if market is None or state.sigma_at_entry is None or state.ts_strength_at_entry is None:
        return None
    kill_params = params.kill if state.regime_armed else params.kill_unarmed
    result = kill_score(position.side, market_value(market), state.sigma_at_entry, state.ts_strength_at_entry,
                        max(0, now - position.created_at), kill_params)
    if state.regime_armed:
        return result
    # the regime was against the position since it opened: it has not *turned* against it, so the flip
    # neither counts nor is reported
    return KillScore(result.score, 0.0, result.k_sigma_spike, result.k_ts_drop, result.k_age_penalty, result.close)


# --- per mark -----------------------------------------------------------------------------------------


def evaluate(position: PositionRecord, state: ExitState | None, mark: Decimal, market: MarketView | None,
             now: int, params: ExitParams) -> Outcome:
    """The decisions of one mark price for one position (see the module's docstring for the order).
    Whatever the ladder stage: a position still open after TP3 is managed like any other."""
    current = current_state(position, state, market, params, now)
    kill = score(position, current, market, now, params)
    if current.closing:
        return _retry(position, current, now, kill, params)
    stop = stop_in_force(position, current)
    if stop_crossed(position.side, mark, stop):
        return _close(position, current, stop_reason(position, current, stop, params), now, kill)
    if kill is not None and kill.close:
        return _close(position, current, ExitReason.KILL_SCORE, now, kill)
    if params.max_hold_ms and now - position.created_at >= params.max_hold_ms:
        return _close(position, current, ExitReason.TIME_EXIT, now, kill)
    if current.tp3_proposed_at and now - current.tp3_proposed_at >= params.close_retry_ms:
        # the TP3 harvest closes all that is open: a position still here did not get it (failed, partial)
        return _close(position, current, ExitReason.HARVEST_TP3, now, kill)

    moved = _follow(position, current, mark, params)
    moved, stop_plan = _stop_update(position, moved, now, params)
    if moved != current:
        moved = moved.with_changes(updated_at=now)
    return Outcome(moved, [stop_plan] if stop_plan is not None else [], kill)


def stop_in_force(position: PositionRecord, state: ExitState) -> Decimal:
    """The software stop, or the position's own when that is tighter (rounded to the tick, moved by an
    operator): crossing it closes the position."""
    if position.stop_loss is None:
        return state.ladder_stop
    return tighten(position.side, state.ladder_stop, position.stop_loss)


def stop_reason(position: PositionRecord, state: ExitState, stop: Decimal, params: ExitParams) -> ExitReason:
    """Why the stop in force sits where it does, as apply_layer books the fill of the exchange's stop:
    ``stop_loss`` before TP1; after it ``breakeven`` while it sits at break-even, else ``trailing_stop``."""
    if state.stage == 0:
        return ExitReason.STOP_LOSS
    if stop != state.ladder_stop and position.stop_reason in _STOP_REASONS_AFTER_TP1:
        # the position's own stop is the tighter one (rounded to the tick): the reason it was placed for
        return ExitReason(position.stop_reason)
    if stop == breakeven_price(position.side, position.entry_price, params.levels.fee_rate):
        return ExitReason.BREAKEVEN
    return ExitReason.TRAILING_STOP


_STOP_REASONS_AFTER_TP1 = frozenset({ExitReason.BREAKEVEN.value, ExitReason.TRAILING_STOP.value})


def _follow(position: PositionRecord, state: ExitState, mark: Decimal, params: ExitParams) -> ExitState:
    """The best mark remembered; after TP1 the software stop trails it at ``trailing_callback_frac``
    (before TP1 the leverage-aware stop holds)."""
    side = position.side
    best = best_price(side, state.peak_price, mark)
    stop = state.ladder_stop
    if state.stage >= 1:
        stop = tighten(side, stop, trailing_stop(side, best, params.levels.trailing_callback_frac))
    return state.with_changes(peak_price=best, ladder_stop=stop)


def _retry(position: PositionRecord, state: ExitState, now: int, kill: KillScore | None,
           params: ExitParams) -> Outcome:
    """A full close is in flight: nothing more until ``close_retry_ms`` after it was proposed; a position
    still open then did not get it (an outage past its retries, a rejection), and the same close is
    proposed again under a new attempt id — an exit is never dropped because its first plan failed, nor
    because its trigger has passed since (a kill-score retry carries the score as it is now)."""
    reason = _reason(state.closing)
    if now - state.closing_at < params.close_retry_ms:
        return Outcome(state, [], kill)
    if reason is ExitReason.KILL_SCORE and kill is None:
        return Outcome(state, [], kill)  # a kill-score close carries the score: it waits for a market state
    return _close(position, state, reason, now, kill)


def _close(position: PositionRecord, state: ExitState, reason: ExitReason, now: int,
           kill: KillScore | None) -> Outcome:
    """A ``FULL_CLOSE_PROPOSED`` for ``reason``, its attempt counted; the state remembers the close in flight."""
    # attempt 0 of harvest_tp3 is the TP3 harvest itself: a full close repeating it must not reuse its id
    attempt = max(state.close_attempts, 1 if reason is ExitReason.HARVEST_TP3 else 0)
    plan = plans.full_close(position.symbol, position.plan_id, reason, state.stage, ts=now, attempt=attempt,
                            kill=kill if reason is ExitReason.KILL_SCORE else None)
    closing = state.with_changes(closing=reason.value, closing_at=now, close_attempts=attempt + 1, updated_at=now)
    return Outcome(closing, [plan], kill)


def _reason(closing: str) -> ExitReason:
    """The reason of the close in flight (a hash written by hand may hold anything: a stop-loss then)."""
    try:
        return ExitReason(closing)
    except ValueError:
        return ExitReason.STOP_LOSS


def _stop_update(position: PositionRecord, state: ExitState, now: int,
                 params: ExitParams, trace_id: str | None = None) -> tuple[ExitState, ApplyPlan | None]:
    """An ``UPDATE_STOP`` when the software stop is tighter, by at least the minimum step, than the
    tighter of the stop last asked for and the one the position holds. A stop never loosens; after TP3
    a position still open keeps its stop moving like any other."""
    side = position.side
    held = state.stop_loss
    if position.stop_loss is not None:
        held = tighten(side, held, position.stop_loss)
    new = state.ladder_stop
    if held is not None and (tighten(side, held, new) != new or new == held):
        return state, None
    if not stop_moved_enough(held, new, params.levels.min_stop_step_frac):
        return state, None
    if state.stage == 0:
        reason = ExitReason.STOP_LOSS
    elif new == breakeven_price(side, position.entry_price, params.levels.fee_rate):
        reason = ExitReason.BREAKEVEN
    else:
        reason = ExitReason.TRAILING_STOP
    plan = plans.update_stop(position.symbol, position.plan_id, new, reason, trace_id=trace_id, ts=now)
    return state.with_changes(stop_loss=plan.new_stop_loss), plan


def _stage_name(stage: int) -> str:
    return f"TP{stage}"


# --- harvest proposals --------------------------------------------------------------------------------


def on_proposal(proposal: HarvestProposal, position: PositionRecord | None, state: ExitState | None,
                market: MarketView | None, now: int, params: ExitParams) -> Outcome:
    """A ``harvest.proposal`` turned into the harvest plans of the stages it reaches that were not
    proposed yet (a gap gives each missing stage in order), with the stop moved as the stage requires
    (break-even after TP1, the trailing stop from the best price). A proposal for another position, a
    stop-only stage (exitbrain trails itself), a stage done, or a position being closed is ignored, and
    says why. The TP3 harvest is remembered: a position still open ``close_retry_ms`` later is closed in
    full by :func:`evaluate`."""
    if position is None:
        return Outcome(state or _placeholder(proposal), ignored=ProposalIgnored.NO_POSITION)
    current = current_state(position, state, market, params, now)
    if proposal.position_plan_id != position.plan_id:
        return Outcome(current, ignored=ProposalIgnored.NOT_THE_CURRENT_POSITION)
    if current.closing:
        return Outcome(current, ignored=ProposalIgnored.CLOSING)
    target = TP_STAGES.get(proposal.stage)
    if target is None:
        return Outcome(current, ignored=ProposalIgnored.STOP_STAGE)
    if target <= current.stage or _stage_name(target) in current.proposed:
        return Outcome(current, ignored=ProposalIgnored.STAGE_DONE)
    _, split = position_levels(position, current, params)
    out: list[ApplyPlan] = []
    proposed = set(current.proposed)
    for stage in range(current.stage + 1, target + 1):
        if _stage_name(stage) in proposed:
            continue
        out.append(plans.harvest(position.symbol, position.plan_id, stage, close_pct_of_current(stage, split),
                                 trace_id=proposal.trace_id, ts=now))
        proposed.add(_stage_name(stage))
    side = position.side
    best = best_price(side, current.peak_price, proposal.trigger_price)
    stop = tighten(side, current.ladder_stop, breakeven_price(side, position.entry_price, params.levels.fee_rate))
    stop = tighten(side, stop, trailing_stop(side, best, params.levels.trailing_callback_frac))
    moved = current.with_changes(stage=target, peak_price=best, ladder_stop=stop, proposed=frozenset(proposed),
                                 updated_at=now)
    if target == 3:
        moved = moved.with_changes(tp3_proposed_at=now)
    moved, stop_plan = _stop_update(position, moved, now, params, trace_id=proposal.trace_id)
    if stop_plan is not None:
        out.append(stop_plan)
    return Outcome(moved, out)


def _placeholder(proposal: HarvestProposal) -> ExitState:
    """A state that is never written: what an ignored proposal for a missing position carries."""
    return ExitState(position_plan_id=proposal.position_plan_id, stage=0, peak_price=proposal.trigger_price,
                     ladder_stop=proposal.trigger_price, stop_loss=None, base_sl=0.0, base_tp=0.0)


# --- the PnL view -------------------------------------------------------------------------------------


def r_multiple(position: PositionRecord, state: ExitState, mark: Decimal) -> tuple[Decimal, float]:
    """Unrealized PnL at ``mark`` and the R multiple: unrealized / initial risk, the initial risk being
    the distance to the position's own stop at first sight, times the quantity."""
    unrealized = (mark - position.entry_price) * position.quantity * position.side.sign
    risk = position.entry_price * Decimal(repr(state.base_sl)) * position.quantity
    return unrealized, float(unrealized / risk) if risk > 0 else 0.0


def pnl(position: PositionRecord, state: ExitState, mark: Decimal, kill: KillScore | None,
        now: int) -> ExitbrainPnl:
    """The ``exitbrain.pnl`` entry of one position."""
    unrealized, r = r_multiple(position, state, mark)
    trace = position.trace_id if _HEX16.match(position.trace_id) else position.plan_id
    return ExitbrainPnl(source=Service.EXITBRAIN, trace_id=trace, ts=now, symbol=position.symbol,
                        position_plan_id=position.plan_id, mark_price=mark, unrealized_pnl=unrealized,
                        r_multiple=r, kill_score=kill.score if kill is not None else 0.0)


class PnlThrottle:
    """At most one ``exitbrain.pnl`` per position per ``interval_ms`` (in memory: a restart may publish
    one early, which is harmless)."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self._last: dict[str, int] = {}

    def due(self, symbol: str, now: int) -> bool:
        last = self._last.get(symbol)
        return last is None or now - last >= self.interval_ms

    def mark(self, symbol: str, now: int) -> None:
        self._last[symbol] = now

    def forget(self, symbol: str) -> None:
        self._last.pop(symbol, None)
