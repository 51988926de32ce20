"""The reason codes the fleet publishes, one enumeration per kind (DESIGN §4): why apply_layer skipped
or failed a plan (``apply.result.error``), why intent_bridge refused an intent (``policy.audit``), why
exitbrain ignored a harvest proposal (its log line). On the wire they are the plain strings below."""

from __future__ import annotations

from enum import StrEnum


class PlanReason(StrEnum):
    """``apply.result.error`` of a plan that was skipped or failed (an exchange rejection is
    ``exchange:<code>``, :func:`exchange_reason`)."""

    DUPLICATE_PLAN = "duplicate_plan"
    STALE_PLAN = "stale_plan"
    ESS_TRIPPED = "ess_tripped"
    SYMBOL_NOT_TRADABLE = "symbol_not_tradable"
    COOLDOWN_ACTIVE = "cooldown_active"
    PRICE_BEYOND_LEVELS = "price_beyond_levels"
    PRICE_MOVED = "price_moved"
    NO_POSITION = "no_position"
    BELOW_STEP = "below_step"
    STOP_NOT_TIGHTER = "stop_not_tighter"
    NO_DRIFT = "no_drift"
    DEAD_LETTERED = "dead_lettered"
    EXCHANGE_UNAVAILABLE = "exchange:unavailable"
    RECONCILE_DRIFT = "risk_limit:reconcile_drift"
    ALLOWLIST = "risk_limit:allowlist"
    OPPOSITE_POSITION = "risk_limit:opposite_position"
    MAX_OPEN_POSITIONS = "risk_limit:max_open_positions"
    MAX_LEVERAGE = "risk_limit:max_leverage"
    MARGIN_PER_TRADE = "risk_limit:margin_per_trade"
    TOTAL_NOTIONAL = "risk_limit:total_notional"


def exchange_reason(code: int) -> str:
    """The reason of a plan the exchange rejected with ``code`` (``exchange:-2019``)."""
    return f"exchange:{code}"


class IntentRefusal(StrEnum):
    """Why intent_bridge opened nothing for an intent (``policy.audit.reason``)."""

    NOT_IN_ALLOWLIST = "SKIP_INTENT_SYMBOL_NOT_IN_ALLOWLIST"
    NOT_TRADABLE = "SKIP_INTENT_NOT_TRADABLE"
    STALE = "SKIP_INTENT_STALE"
    ABOVE_MAX_LEVERAGE = "SKIP_INTENT_ABOVE_MAX_LEVERAGE"
    ABOVE_MARGIN_CAP = "SKIP_INTENT_ABOVE_MARGIN_CAP"
    BELOW_MIN_QTY = "SKIP_INTENT_BELOW_MIN_QTY"
    BELOW_MIN_NOTIONAL = "SKIP_INTENT_BELOW_MIN_NOTIONAL"
    ABOVE_MAX_QTY = "SKIP_INTENT_ABOVE_MAX_QTY"
    ABOVE_NOTIONAL_CAP = "SKIP_INTENT_ABOVE_NOTIONAL_CAP"


class ProposalIgnored(StrEnum):
    """Why exitbrain turned a ``harvest.proposal`` into no plan."""

    NO_POSITION = "no_position"
    NOT_THE_CURRENT_POSITION = "not_the_current_position"
    CLOSING = "closing"
    STOP_STAGE = "stop_stage"
    STAGE_DONE = "stage_done"
