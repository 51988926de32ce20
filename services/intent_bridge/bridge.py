"""An intent becomes an entry plan or a refusal (pure).

Policy: the allowlist of the policy in force intersected with the exchange's tradable symbols (WIRING_MAP
§6). Size: quantity = margin × leverage / entry price, rounded *down* to the step size, then checked
against the exchange's minimum quantity and notional and the policy's caps. Both sides open positions:
a SELL intent opens a short (the old bridge could not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.contracts import Action, ApplyPlan, IntentRefusal, TradeIntent, plain_decimal
from common.exchange.rules import SymbolRules
from common.ids import entry_plan_id
from common.policy import Policy

#: the ``kind`` of a policy.audit entry for a refused intent
INTENT_REFUSED = "INTENT_REFUSED"


@dataclass(frozen=True)
class Refusal:
    """Why an intent opens nothing: a reason code and the numbers behind it."""

    reason: IntentRefusal
    details: dict[str, Any] = field(default_factory=dict)


def bridge(intent: TradeIntent, policy: Policy, rules: SymbolRules | None, *, now_ms: int, max_age_ms: int,
           source: str) -> ApplyPlan | Refusal:
    """The ``ENTRY_PROPOSED`` plan of ``intent`` (``rules``: the symbol's, None when the exchange does not
    list it), or why it is refused. ``max_age_ms``: an intent older than this would only become a stale
    plan (apply_layer skips those), so it is refused here with its age. The plan is stamped ``now_ms``
    (its age is measured from here)."""
    if intent.symbol not in policy.allowlist:
        return Refusal(IntentRefusal.NOT_IN_ALLOWLIST, {"policy_version": policy.version})
    if rules is None or not rules.tradable:
        return Refusal(IntentRefusal.NOT_TRADABLE, {"status": rules.status if rules else "not listed"})
    age_ms = now_ms - intent.ts
    if age_ms > max_age_ms:
        return Refusal(IntentRefusal.STALE, {"age_ms": age_ms, "max_age_ms": max_age_ms})
    limits = policy.limits
    max_leverage = min(limits.max_leverage, rules.max_leverage)
    if intent.leverage > max_leverage:
        return Refusal(IntentRefusal.ABOVE_MAX_LEVERAGE, {"leverage": intent.leverage, "max_leverage": max_leverage})
    margin = intent.position_size_usd
    if margin > limits.max_margin_per_trade_usd:
        return Refusal(IntentRefusal.ABOVE_MARGIN_CAP, {"margin_usd": plain_decimal(margin),
                                          "max_margin_per_trade_usd": plain_decimal(limits.max_margin_per_trade_usd)})
    qty = rules.round_qty(margin * intent.leverage / intent.entry_price)
    notional = qty * intent.entry_price
    sized = {"qty": plain_decimal(qty), "notional_usd": plain_decimal(notional),
             "step_size": plain_decimal(rules.step_size)}
    if qty <= 0 or qty < rules.min_qty:
        return Refusal(IntentRefusal.BELOW_MIN_QTY, {**sized, "min_qty": plain_decimal(rules.min_qty)})
    if notional < rules.min_notional:
        return Refusal(IntentRefusal.BELOW_MIN_NOTIONAL, {**sized, "min_notional": plain_decimal(rules.min_notional)})
    if qty > rules.market_max_qty:
        return Refusal(IntentRefusal.ABOVE_MAX_QTY, {**sized, "max_qty": plain_decimal(rules.market_max_qty)})
    if notional > limits.max_total_notional_usd:
        cap = plain_decimal(limits.max_total_notional_usd)
        return Refusal(IntentRefusal.ABOVE_NOTIONAL_CAP, {**sized, "max_total_notional_usd": cap})
    return ApplyPlan(
        source=source,
        ts=now_ms,
        trace_id=intent.trace_id,
        plan_id=entry_plan_id(intent.intent_id),
        symbol=intent.symbol,
        action=Action.ENTRY_PROPOSED,
        side=intent.side,
        qty=qty,
        order_type="MARKET",
        reduce_only=False,
        leverage=intent.leverage,
        entry_price=intent.entry_price,
        stop_loss=intent.stop_loss,
        take_profit=intent.take_profit,
        intent_id=intent.intent_id,
    )
