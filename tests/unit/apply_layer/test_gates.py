"""apply_layer's pure gates: which reason stops an entry, what an exit may close, and the price checks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.contracts import PositionSide
from common.ess import Ess, EssState
from common.exchange.rules import SymbolRules
from common.policy import Limits, Policy
from common.positions import PositionRecord
from services.apply_layer.gates import EntryFacts, entry_gate, exit_quantity, position_gate, price_gate
from tests.plans import close, entry

D = Decimal
NOW = 1_800_000_000_000
RULES = SymbolRules("BTCUSDT", "TRADING", D("0.1"), D("0.001"), D("0.001"), D("1000"), D("120"), D("100"), 125)


def facts(**changes: object) -> EntryFacts:
    base: dict[str, object] = dict(
        ess=Ess(EssState.ARMED), rules=RULES, cooldown_active=False, reconcile_blocked=False,
        policy=Policy(allowlist=("BTCUSDT", "ETHUSDT"), limits=Limits()), positions={}, mark_price=D("50000"),
        now_ms=NOW, entry_max_age_ms=300_000, entry_max_move_frac=0.01)
    base.update(changes)
    return EntryFacts(**base)  # type: ignore[arg-type]


def held(symbol: str = "ETHUSDT", qty: str = "1", price: str = "3000", side: PositionSide = PositionSide.LONG
         ) -> PositionRecord:
    return PositionRecord(symbol, side, D(qty), D(price), 10, None, None, "a" * 16, NOW, NOW, "b" * 16)


def test_a_plain_entry_passes() -> None:
    """An entry within every limit, at its own price, goes."""
    assert entry_gate(entry("ok", ts=NOW), facts()) is None


@pytest.mark.parametrize(("changes", "plan_extra", "expected"), [
    ({"now_ms": NOW + 300_001}, {}, "stale_plan"),
    ({"ess": Ess(EssState.TRIPPED)}, {}, "ess_tripped"),
    ({"rules": None}, {}, "symbol_not_tradable"),
    ({"reconcile_blocked": True}, {}, "risk_limit:reconcile_drift"),
    ({"cooldown_active": True}, {}, "cooldown_active"),
    ({"policy": Policy(allowlist=("ETHUSDT",), limits=Limits())}, {}, "risk_limit:allowlist"),
    ({"mark_price": D("48500")}, {}, "price_beyond_levels"),  # the plan's stop is 48,500
    ({"mark_price": D("52000")}, {}, "price_beyond_levels"),  # its take-profit is 52,000
    ({"mark_price": D("50501")}, {}, "price_moved"),  # +1.002 % from 50,000
    ({"positions": {"BTCUSDT": held("BTCUSDT", "0.01", "50000", PositionSide.SHORT)}}, {},
     "risk_limit:opposite_position"),
    ({"positions": {"ETHUSDT": held()}, "policy": Policy(allowlist=("BTCUSDT",),
                                                          limits=Limits(max_open_positions=1))},
     {}, "risk_limit:max_open_positions"),
    ({}, {"leverage": 25}, "risk_limit:max_leverage"),
    ({}, {"qty": D("0.2")}, "risk_limit:margin_per_trade"),  # 10,000 notional at 10x: 1,000 > 500
    ({"positions": {"ETHUSDT": held(qty="8.2")}}, {}, "risk_limit:total_notional"),  # 24,600 + 500 > 25,000
])
def test_each_entry_gate_gives_its_reason(changes: dict[str, object], plan_extra: dict[str, object],
                                          expected: str) -> None:
    """Each gate, on its own, stops the entry with its reason code."""
    plan = entry("gate", ts=NOW, **plan_extra)  # type: ignore[arg-type]
    assert entry_gate(plan, facts(**changes)) == expected


def test_price_gate_within_one_percent_and_between_the_levels_passes() -> None:
    """A mark 0.9 % away and between the stop and the target is fine; without a mark nothing is judged."""
    plan = entry("price", ts=NOW)
    assert price_gate(plan, D("50450"), 0.01) is None
    assert price_gate(plan, None, 0.01) is None
    short = entry("short", side="SELL", ts=NOW)  # stop 51,500, take-profit 48,000
    assert price_gate(short, D("51500"), 0.01) == "price_beyond_levels"
    assert price_gate(short, D("48000"), 0.01) == "price_beyond_levels"
    assert price_gate(short, D("49600"), 0.01) is None


def test_exits_name_their_position() -> None:
    """An exit for no position is no_position; for another entry plan's position, stale_plan."""
    position = held("BTCUSDT", "0.01", "50000")
    assert position_gate(close("x", position.plan_id), None) == "no_position"
    assert position_gate(close("x", "0" * 16), position) == "stale_plan"
    assert position_gate(close("x", position.plan_id), position) is None


def test_exit_quantity_rounds_down_and_closes_a_dust_remainder() -> None:
    """30 % of 0.017 rounds down to the step: 0.005 (0.012 stays, 600 USDT). 90 % of 0.010 would leave
    0.001 = 50 USDT, under the 100 USDT minimum notional: the whole 0.010 is closed. 1 % rounds to 0."""
    position = held("BTCUSDT", "0.017", "50000")
    assert exit_quantity(close("a", position.plan_id, pct=30.0), position, RULES, D("50000")) == D("0.005")
    small = held("BTCUSDT", "0.01", "50000")
    assert exit_quantity(close("b", small.plan_id, pct=90.0), small, RULES, D("50000")) == D("0.01")
    assert exit_quantity(close("c", small.plan_id, pct=50.0), small, RULES, D("50000")) == D("0.005")
    assert exit_quantity(close("d", small.plan_id, pct=1.0), small, RULES, D("50000")) == D(0)
