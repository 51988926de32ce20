"""exitbrain's decisions (pure): a position, its exit state, the mark and the market state in; the plans
to publish and the new exit state out.

Per mark (:func:`evaluate`), in this order:

1. the stop in force crossed in software → ``FULL_CLOSE_PROPOSED`` (``stop_loss`` before TP1,
   ``trailing_stop`` after);
2. the kill score (DESIGN §7) at or over the threshold → ``FULL_CLOSE_PROPOSED`` ``kill_score`` with
   the score and its four components. ``k_regime_flip`` means the regime *turned* against the position:
   it counts once the regime has been seen not against it (a position opened in a trendless market has
   no trend to lose; without this every such position would be killed on its first evaluation);
3. each take-profit of the adaptive ladder reached → ``PARTIAL_CLOSE_PROPOSED`` ``harvest_tp1..3``
   closing the share of what is open that keeps the split of the original position;
4. a stop that tightened by at least ``min_stop_step_pct`` since the one last asked for → ``UPDATE_STOP``
   (``stop_loss`` for the leverage-aware stop, ``breakeven`` after TP1, ``trailing_stop`` after that).

After a full close is proposed nothing more is proposed for the position. A harvest proposal
(:func:`on_proposal`) becomes the same harvest plans, once per stage whatever is re-proposed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal

from common.config import Settings
from common.contracts import (
    ApplyPlan,
    ExitbrainPnl,
    ExitReason,
    HarvestProposal,
    HarvestStage,
    MarketState,
    PositionSide,
)
from common.exit_levels import LadderParams, base_fractions, levels_of
from common.maths.kill_score import KillScore, KillScoreParams, kill_score, regime_flipped
from common.maths.levels import (
    ExitLadderState,
    Harvest,
    LevelPrices,
    Split,
    StopHit,
    advance,
    breakeven_price,
    close_pct_of_current,
    stop_moved_enough,
    tighten,
    trailing_stop,
)
from common.maths.marketstate import MarketStateValue
from common.positions import PositionRecord
from common.streams import Service
from services.exitbrain import plans
from services.exitbrain.exit_state import ExitState

TP_STAGES: dict[HarvestStage, int] = {HarvestStage.TP1: 1, HarvestStage.TP2: 2, HarvestStage.TP3: 3}
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class ExitParams(LadderParams):
    """The constants of exitbrain's decisions (``[exit]`` settings, DESIGN §7 defaults): the ladder's and
    the kill score's."""

    kill: KillScoreParams = field(default_factory=KillScoreParams)
    #: a full close still not done this long after it was proposed is proposed again
    close_retry_ms: int = 120_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ExitParams:
        e = settings.exit
        return cls(
            kill=KillScoreParams(w_regime_flip=e.w_regime_flip, w_sigma_spike=e.w_sigma_spike,
                                 w_ts_drop=e.w_ts_drop, w_age_penalty=e.w_age_penalty,
                                 threshold=e.kill_threshold, horizon_ms=e.kill_age_horizon_s * 1000),
            levels=LadderParams.levels_from(settings),
            default_sl=settings.signal.min_sl_pct,
            reward_risk=settings.signal.reward_risk,
            close_retry_ms=int(e.close_retry_s * 1000),
        )


@dataclass(frozen=True)
class Outcome:
    """What one decision leaves: the state to write, the plans to publish (in order), the kill score
    when the market state allowed one, and why nothing was done when a proposal was ignored."""

    state: ExitState
    plans: list[ApplyPlan] = field(default_factory=list)
    kill: KillScore | None = None
    ignored: str = ""


# --- the position's levels --------------------------------------------------------------------------


def position_levels(position: PositionRecord, state: ExitState, params: ExitParams) -> tuple[LevelPrices, Split]:
    """The adaptive TP1..TP3 and SL prices of the position (leverage-aware), and its harvest split."""
    return levels_of(position, state.base_sl, state.base_tp, params)


def market_value(market: MarketState) -> MarketStateValue:
    """The market state contract as the kill score reads it (the trend's sign is the sign of ``mu``)."""
    return MarketStateValue(
        sigma=market.sigma, mu=market.mu, ts_strength=market.ts_strength, p_trend=market.p_trend,
        p_mr=market.p_mr, p_chop=market.p_chop, regime=market.regime, atr_pct=market.atr_pct,
        trend_sign=(market.mu > 0.0) - (market.mu < 0.0), efficiency_ratio=0.0, autocorr=0.0,
    )


def start(position: PositionRecord, market: MarketState | None, params: ExitParams, now: int) -> ExitState:
    """A fresh exit state for a position seen for the first time (or whose entry plan changed): stage 0,
    best price the entry, the stop in force the tighter of the position's and the leverage-aware one."""
    base_sl, base_tp = base_fractions(position, params)
    state = ExitState(position_plan_id=position.plan_id, stage=0, peak_price=position.entry_price,
                      ladder_stop=position.entry_price, stop_loss=position.stop_loss, base_sl=base_sl,
                      base_tp=base_tp, updated_at=now)
    prices, _ = position_levels(position, state, params)
    state = state.with_changes(ladder_stop=tighten(position.side, position.stop_loss, prices.sl))
    return _remember_market(state, market, position.side, params)


def _remember_market(state: ExitState, market: MarketState | None, side: PositionSide,
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


def current_state(position: PositionRecord, state: ExitState | None, market: MarketState | None,
                  params: ExitParams, now: int) -> ExitState:
    """``state`` when it belongs to this position, else a fresh one; the market at entry filled in."""
    if state is None or state.position_plan_id != position.plan_id:
        return start(position, market, params, now)
    return _remember_market(state, market, position.side, params)


def score(position: PositionRecord, state: ExitState, market: MarketState | None, now: int,
          params: ExitParams) -> KillScore | None:
    """The kill score, once both the market now and the market at entry are known."""
    if market is None or state.sigma_at_entry is None or state.ts_strength_at_entry is None:
        return None
    kill_params = params.kill if state.regime_armed else replace(params.kill, w_regime_flip=0.0)
    result = kill_score(position.side, market_value(market), state.sigma_at_entry, state.ts_strength_at_entry,
                        max(0, now - position.created_at), kill_params)
    # the regime was against the position since it opened: it has not *turned* against it, so the flip
    # neither counts nor is reported
    return result if state.regime_armed else replace(result, k_regime_flip=0.0)


# --- per mark -----------------------------------------------------------------------------------------


def evaluate(position: PositionRecord, state: ExitState | None, mark: Decimal, market: MarketState | None,
             now: int, params: ExitParams) -> Outcome:
    """The decisions of one mark price for one position (see the module's docstring for the order)."""
    current = current_state(position, state, market, params, now)
    kill = score(position, current, market, now, params)
    if current.closing and now - current.closing_at >= params.close_retry_ms:
        # the position is still here long after its full close was proposed: that close did not happen
        current = current.with_changes(closing="")
    if current.closing or current.stage >= 3:
        return Outcome(current, [], kill)
    prices, split = position_levels(position, current, params)
    stop = current.ladder_stop
    if position.stop_loss is not None:  # a stop tightened elsewhere (rounding, an operator) counts too
        stop = tighten(position.side, stop, position.stop_loss)
    ladder = ExitLadderState(stage=current.stage, best_price=current.peak_price, stop=stop)
    after, actions = advance(position.side, position.entry_price, mark, ladder, prices, split, params.levels)

    if any(isinstance(a, StopHit) for a in actions):
        reason = ExitReason.STOP_LOSS if current.stage == 0 else ExitReason.TRAILING_STOP
        plan = plans.full_close(position.symbol, position.plan_id, reason, current.stage, ts=now,
                                attempt=current.close_attempts)
        return Outcome(_closing(current, reason, now), [plan], kill)
    if kill is not None and kill.close:
        plan = plans.full_close(position.symbol, position.plan_id, ExitReason.KILL_SCORE, current.stage,
                                kill=kill, ts=now, attempt=current.close_attempts)
        return Outcome(_closing(current, ExitReason.KILL_SCORE, now), [plan], kill)

    out: list[ApplyPlan] = []
    proposed = set(current.proposed)
    for action in actions:
        if isinstance(action, Harvest) and _stage_name(action.stage) not in proposed:
            out.append(plans.harvest(position.symbol, position.plan_id, action.stage,
                                     action.close_pct_of_current, ts=now))
            proposed.add(_stage_name(action.stage))
    moved = current.with_changes(stage=after.stage, peak_price=after.best_price, ladder_stop=after.stop,
                                 proposed=frozenset(proposed))
    moved, stop_plan = _stop_update(position, moved, now, params)
    if stop_plan is not None:
        out.append(stop_plan)
    if moved != current:
        moved = moved.with_changes(updated_at=now)
    return Outcome(moved, out, kill)


def _closing(state: ExitState, reason: ExitReason, now: int) -> ExitState:
    return state.with_changes(closing=reason.value, closing_at=now, close_attempts=state.close_attempts + 1,
                              updated_at=now)


def _stop_update(position: PositionRecord, state: ExitState, now: int,
                 params: ExitParams, trace_id: str | None = None) -> tuple[ExitState, ApplyPlan | None]:
    """An ``UPDATE_STOP`` when the software stop is tighter, by at least the minimum step, than the
    tighter of the stop last asked for and the one the position holds. A stop never loosens, and
    there is none to move once TP3 closed everything."""
    if state.stage >= 3:
        return state, None  # TP3 closes what is left: no stop to move
    side = position.side
    held = state.stop_loss
    if position.stop_loss is not None:
        held = tighten(side, held, position.stop_loss)
    new = state.ladder_stop
    if held is not None and (tighten(side, held, new) != new or new == held):
        return state, None
    if not stop_moved_enough(held, new, params.levels.min_stop_step_pct):
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
                market: MarketState | None, now: int, params: ExitParams) -> Outcome:
    """A ``harvest.proposal`` turned into the harvest plans of the stages it reaches that were not
    proposed yet (a gap gives each missing stage in order), with the stop moved as the ladder would.
    A proposal for another position, a stop-only stage (exitbrain trails itself), a stage done, or a
    position being closed is ignored, and says why."""
    if position is None:
        return Outcome(state or _placeholder(proposal), ignored="no_position")
    current = current_state(position, state, market, params, now)
    if proposal.position_plan_id != position.plan_id:
        return Outcome(current, ignored="not_the_current_position")
    if current.closing:
        return Outcome(current, ignored="closing")
    target = TP_STAGES.get(proposal.stage)
    if target is None:
        return Outcome(current, ignored="stop_stage")
    if target <= current.stage or _stage_name(target) in current.proposed:
        return Outcome(current, ignored="stage_done")
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
    best = proposal.trigger_price
    best = max(current.peak_price, best) if side.sign > 0 else min(current.peak_price, best)
    stop = tighten(side, current.ladder_stop, breakeven_price(side, position.entry_price, params.levels.fee_rate))
    stop = tighten(side, stop, trailing_stop(side, best, params.levels.trailing_callback_pct))
    moved = current.with_changes(stage=target, peak_price=best, ladder_stop=stop, proposed=frozenset(proposed),
                                 updated_at=now)
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
