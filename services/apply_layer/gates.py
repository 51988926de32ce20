"""The gates (pure): entries are stopped by the kill switch, the symbol, the cooldown, reconciliation
drift and the policy limits; exits only by facts about the position they mean — never by cooldown,
limits or the kill switch (a stuck position is worse than a missed re-entry)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.contracts import ApplyPlan, PlanReason
from common.ess import Ess
from common.exchange.rules import SymbolRules
from common.policy import Policy
from common.positions import PositionRecord


@dataclass(frozen=True)
class EntryFacts:
    """What the entry gates look at, read just before they run."""

    ess: Ess
    rules: SymbolRules | None
    cooldown_active: bool
    reconcile_blocked: bool
    policy: Policy
    positions: dict[str, PositionRecord]
    mark_price: Decimal | None
    now_ms: int
    entry_max_age_ms: int
    #: the largest move of the mark from the plan's entry_price that still lets it go (a fraction)
    entry_max_move_frac: float = 0.01


def entry_gate(plan: ApplyPlan, facts: EntryFacts) -> PlanReason | None:
    """The reason code that stops this entry, or None when it may go."""
    assert plan.qty is not None and plan.leverage is not None and plan.side is not None
    if facts.now_ms - plan.ts > facts.entry_max_age_ms:
        return PlanReason.STALE_PLAN
    if facts.ess.tripped:
        return PlanReason.ESS_TRIPPED
    if facts.rules is None or not facts.rules.tradable:
        return PlanReason.SYMBOL_NOT_TRADABLE
    if facts.reconcile_blocked:
        return PlanReason.RECONCILE_DRIFT
    if facts.cooldown_active:
        return PlanReason.COOLDOWN_ACTIVE
    limits = facts.policy.limits
    if plan.symbol not in facts.policy.allowlist:
        return PlanReason.ALLOWLIST
    moved = price_gate(plan, facts.mark_price, facts.entry_max_move_frac)
    if moved is not None:
        return moved
    held = facts.positions.get(plan.symbol)
    if held is not None and held.side is not plan.side.position_side:
        return PlanReason.OPPOSITE_POSITION
    if held is None and len(facts.positions) >= limits.max_open_positions:
        return PlanReason.MAX_OPEN_POSITIONS
    if plan.leverage > min(limits.max_leverage, facts.rules.max_leverage):
        return PlanReason.MAX_LEVERAGE
    price = facts.mark_price or plan.entry_price
    assert price is not None
    notional = plan.qty * price
    if notional / plan.leverage > limits.max_margin_per_trade_usd:
        return PlanReason.MARGIN_PER_TRADE
    open_notional = sum((p.notional() for p in facts.positions.values()), Decimal(0))
    if open_notional + notional > limits.max_total_notional_usd:
        return PlanReason.TOTAL_NOTIONAL
    return None


def price_gate(plan: ApplyPlan, mark: Decimal | None, max_move_frac: float) -> PlanReason | None:
    """An entry the market has already left behind: the mark beyond its own stop-loss or take-profit
    (it would be closed at once, two fees and the slippage for nothing), or moved more than
    ``max_move_frac`` from the price it was sized at. No mark: nothing to judge here."""
    assert plan.side is not None
    if mark is None:
        return None
    sign = plan.side.position_side.sign
    if plan.stop_loss is not None and (mark - plan.stop_loss) * sign <= 0:
        return PlanReason.PRICE_BEYOND_LEVELS
    if plan.take_profit is not None and (plan.take_profit - mark) * sign <= 0:
        return PlanReason.PRICE_BEYOND_LEVELS
    if plan.entry_price and abs(mark - plan.entry_price) > plan.entry_price * Decimal(repr(max_move_frac)):
        return PlanReason.PRICE_MOVED
    return None


def loosens_stop(position: PositionRecord, stop: Decimal) -> bool:
    """A stop only ever tightens: True when ``stop`` is further from the market than the position's own (an
    update that arrives late, after a tighter one)."""
    return position.stop_loss is not None and (stop - position.stop_loss) * position.side.sign < 0


def position_gate(plan: ApplyPlan, position: PositionRecord | None) -> PlanReason | None:
    """Exits and stop updates must name the position they mean (its entry plan)."""
    if position is None:
        return PlanReason.NO_POSITION
    if position.plan_id != plan.position_plan_id:
        return PlanReason.STALE_PLAN
    return None


def exit_quantity(plan: ApplyPlan, position: PositionRecord, rules: SymbolRules, mark: Decimal | None) -> Decimal:
    """pct x position rounded down to the step, never more than held; 0 when it rounds to nothing. A
    remainder that would be left below the minimum quantity or notional is closed with the rest."""
    pct = Decimal(str(plan.close_pct))
    if pct >= 100:
        return position.quantity
    qty = min(rules.round_qty(position.quantity * pct / 100), position.quantity)
    if qty <= 0:
        return Decimal(0)
    rest = position.quantity - qty
    price = mark if mark is not None else position.entry_price
    if rest > 0 and (rest < rules.min_qty or rest * price < rules.min_notional):
        return position.quantity
    return qty
