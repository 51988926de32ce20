"""The bridge's decision (pure): allowlist ∩ tradable, both sides, rounding down, minimums, caps."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from common.config import DEFAULT_CONFIG_DIR
from common.contracts import Action, ApplyPlan, IntentRefusal, Side, TradeIntent, now_ms
from common.exchange.rules import SymbolRules, load_rules_file
from common.policy import Limits, Policy
from services.intent_bridge import bridge as b
from services.intent_bridge.log_limit import OncePerWindow
from tests.helpers import hex16

D = Decimal
RULES = load_rules_file(DEFAULT_CONFIG_DIR / "paper_symbols.json")
POLICY = Policy(allowlist=("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "币安人生USDT"))
MAX_AGE_MS = 300_000


def make_intent(symbol: str = "BTCUSDT", side: str = "BUY", price: str = "50000", margin: str = "200",
                leverage: int = 10, **extra: Any) -> TradeIntent:
    p = D(price)
    sl, tp = (p * D("0.97"), p * D("1.04")) if side == "BUY" else (p * D("1.03"), p * D("0.96"))
    fields: dict[str, Any] = dict(
        source="trading_bot", trace_id=hex16("trace" + symbol + side), intent_id=hex16("intent" + symbol + side),
        symbol=symbol, side=side, confidence=0.7, entry_price=p, stop_loss=sl, take_profit=tp,
        position_size_usd=D(margin), leverage=leverage, model="fallback-trend-following", atr_pct=0.01,
        regime="TREND")
    fields.update(extra)
    return TradeIntent(**fields)


def decide(intent: TradeIntent, policy: Policy = POLICY, rules: dict[str, SymbolRules] = RULES,
           now: int | None = None) -> ApplyPlan | b.Refusal:
    return b.bridge(intent, policy, rules.get(intent.symbol), now_ms=now if now is not None else intent.ts,
                    max_age_ms=MAX_AGE_MS, source="intent_bridge")


@pytest.mark.parametrize("side", ["BUY", "SELL"])
def test_both_sides_become_entry_plans_with_the_deterministic_plan_id(side: str) -> None:
    """A BUY opens a long and a SELL a short: ENTRY_PROPOSED with plan_id = sha256(intent_id)[:16], the
    intent's trace_id, levels and leverage, reduce_only false, a MARKET order."""
    intent = make_intent(side=side)
    plan = decide(intent)
    assert isinstance(plan, ApplyPlan)
    assert plan.action is Action.ENTRY_PROPOSED and plan.side is Side(side)
    assert plan.plan_id == hex16(intent.intent_id) == b.entry_plan_id(intent.intent_id)
    assert plan.trace_id == intent.trace_id and plan.intent_id == intent.intent_id
    assert (plan.stop_loss, plan.take_profit, plan.entry_price) == (intent.stop_loss, intent.take_profit,
                                                                    intent.entry_price)
    assert plan.leverage == 10 and plan.reduce_only is False and plan.order_type == "MARKET"
    assert plan.qty == D("0.04")  # 200 x 10 / 50000


def test_quantity_is_rounded_down_to_the_step_size() -> None:
    """margin x leverage / price is rounded DOWN to the step: 200 x 10 / 30000 = 0.0666.. -> 0.066 BTC
    (step 0.001), 200 x 7 / 3 = 466.66.. -> 466 SOL (step 1), 150 x 10 / 0.61 = 2459.01.. -> 2459 XRP
    (step 0.1)."""
    btc = decide(make_intent(price="30000"))
    sol = decide(make_intent("SOLUSDT", price="3", leverage=7))
    xrp = decide(make_intent("XRPUSDT", price="0.61", margin="150"))
    assert isinstance(btc, ApplyPlan) and btc.qty == D("0.066")
    assert isinstance(sol, ApplyPlan) and sol.qty == D("466")
    assert isinstance(xrp, ApplyPlan) and xrp.qty == D("2459.0")


def test_same_intent_same_plan_id() -> None:
    """Deciding the same intent twice (a redelivery) gives the same plan_id and quantity."""
    intent = make_intent()
    first, second = decide(intent), decide(intent)
    assert isinstance(first, ApplyPlan) and isinstance(second, ApplyPlan)
    assert (first.plan_id, first.qty) == (second.plan_id, second.qty)


@pytest.mark.parametrize(("symbol", "in_policy", "status", "reason"), [
    ("BTCUSDT", True, "TRADING", None),
    ("ANKRUSDT", False, "TRADING", IntentRefusal.NOT_IN_ALLOWLIST),      # tradable but not allowed
    ("BTCUSDT", True, "BREAK", IntentRefusal.NOT_TRADABLE),              # allowed but halted
    ("DOGEUSDT", True, None, IntentRefusal.NOT_TRADABLE),                # allowed but not listed
    ("CHESSUSDT", False, None, IntentRefusal.NOT_IN_ALLOWLIST),          # neither
])
def test_allowlist_intersected_with_tradable(symbol: str, in_policy: bool, status: str | None,
                                             reason: str | None) -> None:
    """Only a symbol both in the policy's allowlist and TRADING on the exchange opens a position."""
    rules = dict(RULES)
    if status is None:
        rules.pop(symbol, None)
    else:
        rules[symbol] = replace(RULES.get(symbol) or RULES["BTCUSDT"], symbol=symbol, status=status)
    allow = tuple(s for s in (*POLICY.allowlist, symbol) if s != symbol or in_policy)
    outcome = decide(make_intent(symbol, price="50000" if symbol == "BTCUSDT" else "2"),
                     Policy(allowlist=allow), rules)
    if reason is None:
        assert isinstance(outcome, ApplyPlan)
    else:
        assert isinstance(outcome, b.Refusal) and outcome.reason == reason


def test_non_ascii_symbol_passes_unchanged() -> None:
    """币安人生USDT is on the allowlist and in the rules: its plan carries the symbol as is."""
    plan = decide(make_intent("币安人生USDT", price="0.25", margin="50", leverage=5))
    assert isinstance(plan, ApplyPlan) and plan.symbol == "币安人生USDT" and plan.qty == D("1000")


def test_below_min_quantity_and_min_notional() -> None:
    """6 x 10 / 50000 = 0.0012 -> 0.001 BTC = 50 USDT, under BTC's 100 minimum notional; 4 x 10 / 50000 =
    0.0008 rounds to 0, under the 0.001 minimum quantity."""
    notional = decide(make_intent(margin="6"))
    qty = decide(make_intent(margin="4"))
    assert isinstance(notional, b.Refusal) and notional.reason == IntentRefusal.BELOW_MIN_NOTIONAL
    assert notional.details == {"qty": "0.001", "notional_usd": "50.000", "step_size": "0.001",
                                "min_notional": "100"}
    assert isinstance(qty, b.Refusal) and qty.reason == IntentRefusal.BELOW_MIN_QTY and qty.details["qty"] == "0.000"


def test_policy_caps_notional_margin_and_leverage() -> None:
    """The policy's caps refuse: notional 200 x 10 = 2000 over a 1500 cap; margin 600 over the 500 cap;
    leverage 25 over the policy's 20."""
    capped = Policy(allowlist=POLICY.allowlist, limits=Limits(max_total_notional_usd=D("1500")))
    over_notional = decide(make_intent(), capped)
    over_margin = decide(make_intent(margin="600", leverage=2))
    over_leverage = decide(make_intent(leverage=25))
    assert isinstance(over_notional, b.Refusal) and over_notional.reason == IntentRefusal.ABOVE_NOTIONAL_CAP
    assert over_notional.details["notional_usd"] == "2000.000"
    assert over_notional.details["max_total_notional_usd"] == "1500"
    assert isinstance(over_margin, b.Refusal) and over_margin.reason == IntentRefusal.ABOVE_MARGIN_CAP
    assert isinstance(over_leverage, b.Refusal) and over_leverage.reason == IntentRefusal.ABOVE_MAX_LEVERAGE
    assert over_leverage.details == {"leverage": 25, "max_leverage": 20}
    at_cap = decide(make_intent(), Policy(allowlist=POLICY.allowlist,
                                          limits=Limits(max_total_notional_usd=D("2000"))))
    assert isinstance(at_cap, ApplyPlan)


def test_stale_intent_is_refused_with_its_age() -> None:
    """An intent older than apply_layer's entry age limit would only be a stale plan: refused here."""
    intent = make_intent(ts=now_ms() - MAX_AGE_MS - 5_000)
    outcome = decide(intent, now=intent.ts + MAX_AGE_MS + 5_000)
    assert isinstance(outcome, b.Refusal) and outcome.reason == IntentRefusal.STALE
    assert outcome.details["age_ms"] == MAX_AGE_MS + 5_000


def test_log_once_per_reason_and_symbol_per_minute() -> None:
    """The first refusal of a (reason, symbol) in a minute is logged; repeats are counted and reported
    with the next line after the minute; another symbol or reason has its own minute."""
    limiter = OncePerWindow(window_ms=60_000)
    key = (IntentRefusal.NOT_IN_ALLOWLIST, "CHESSUSDT")
    assert limiter.allow(key, 1_000) == (True, 0)
    assert limiter.allow(key, 2_000) == (False, 0)
    assert limiter.allow(key, 60_999) == (False, 0)
    assert limiter.allow((IntentRefusal.NOT_IN_ALLOWLIST, "ANKRUSDT"), 3_000) == (True, 0)
    assert limiter.allow((IntentRefusal.NOT_TRADABLE, "CHESSUSDT"), 3_000) == (True, 0)
    assert limiter.allow(key, 61_000) == (True, 2)
    assert limiter.allow(key, 61_001) == (False, 0)


def test_log_limiter_memory_is_bounded() -> None:
    """However many symbols are refused, at most max_keys windows are remembered (oldest forgotten)."""
    limiter = OncePerWindow(window_ms=60_000, max_keys=100)
    for i in range(1_000):
        limiter.allow((IntentRefusal.NOT_IN_ALLOWLIST, f"S{i}USDT"), 1_000)
    assert len(limiter) == 100
    assert limiter.allow((IntentRefusal.NOT_IN_ALLOWLIST, "S999USDT"), 2_000) == (False, 0)
    assert limiter.allow((IntentRefusal.NOT_IN_ALLOWLIST, "S0USDT"), 2_000) == (True, 0)
