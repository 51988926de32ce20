"""exitbrain's plans for apply_layer, with the deterministic ids of DESIGN §4.

An exit's ``plan_id`` is the first 16 hex of sha256(``position_plan_id|reason|stage``) and a stop
update's of sha256(``position_plan_id|UPDATE_STOP|new_stop_loss``): the same decision taken twice (a
restart, a repeated proposal) is the same plan, which apply_layer answers with ``duplicate_plan``.
"""

from __future__ import annotations

from decimal import Decimal

from common.contracts import Action, ApplyPlan, ExitReason, PlanStep
from common.ids import exit_plan_id, stop_plan_id, stop_text
from common.maths.kill_score import KillScore
from common.streams import Service

HARVEST_REASONS: dict[int, ExitReason] = {
    1: ExitReason.HARVEST_TP1,
    2: ExitReason.HARVEST_TP2,
    3: ExitReason.HARVEST_TP3,
}


def full_close(symbol: str, position_plan_id: str, reason: ExitReason, stage: int, *, trace_id: str | None = None,
               kill: KillScore | None = None, ts: int | None = None, attempt: int = 0) -> ApplyPlan:
    """Close what is left of the position (reduce-only, market); a kill-score close carries the score
    and its four components."""
    plan_id = exit_plan_id(position_plan_id, reason, stage, attempt)
    scores: dict[str, float] = {}
    if kill is not None:
        scores = {"kill_score": kill.score, "k_regime_flip": kill.k_regime_flip,
                  "k_sigma_spike": kill.k_sigma_spike, "k_ts_drop": kill.k_ts_drop,
                  "k_age_penalty": kill.k_age_penalty}
    return ApplyPlan(
        source=Service.EXITBRAIN, trace_id=trace_id or plan_id, plan_id=plan_id, symbol=symbol,
        action=Action.FULL_CLOSE_PROPOSED, position_plan_id=position_plan_id, reason=reason,
        steps=[PlanStep(step="CLOSE_FULL", pct=100.0)], **_ts(ts), **scores,
    )


def harvest(symbol: str, position_plan_id: str, stage: int, pct: float, *, trace_id: str | None = None,
            ts: int | None = None) -> ApplyPlan:
    """Take-profit stage ``stage`` (1..3): close ``pct`` % of what is open."""
    reason = HARVEST_REASONS[stage]
    plan_id = exit_plan_id(position_plan_id, reason, stage)
    return ApplyPlan(
        source=Service.EXITBRAIN, trace_id=trace_id or plan_id, plan_id=plan_id, symbol=symbol,
        action=Action.PARTIAL_CLOSE_PROPOSED, position_plan_id=position_plan_id, reason=reason,
        steps=[PlanStep(step=f"HARVEST_TP{stage}", pct=pct)], **_ts(ts),
    )


def update_stop(symbol: str, position_plan_id: str, new_stop_loss: Decimal, reason: ExitReason, *,
                trace_id: str | None = None, ts: int | None = None) -> ApplyPlan:
    """Move the exchange-side stop of the position to ``new_stop_loss``."""
    stop = Decimal(stop_text(new_stop_loss))
    plan_id = stop_plan_id(position_plan_id, stop)
    return ApplyPlan(
        source=Service.EXITBRAIN, trace_id=trace_id or plan_id, plan_id=plan_id, symbol=symbol,
        action=Action.UPDATE_STOP, position_plan_id=position_plan_id, new_stop_loss=stop, reason=reason,
        **_ts(ts),
    )


def _ts(ts: int | None) -> dict[str, int]:
    return {} if ts is None else {"ts": ts}
