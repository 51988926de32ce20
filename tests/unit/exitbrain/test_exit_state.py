"""The ``quantum:exit:state:{symbol}`` codec."""

from __future__ import annotations

from services.exitbrain.exit_state import ExitState
from tests.unit.exitbrain.builders import PLAN, D


def test_a_state_survives_the_hash_round_trip() -> None:
    """Every field comes back equal, floats and decimals exactly, the proposed stages as a set."""
    state = ExitState(position_plan_id=PLAN, stage=2, peak_price=D("101.2500"), ladder_stop=D("100.44"),
                      stop_loss=D("100.1"), base_sl=0.01, base_tp=0.0112, sigma_at_entry=0.0123456789,
                      ts_strength_at_entry=0.5, proposed=frozenset({"TP1", "TP2"}), regime_armed=True,
                      closing="", updated_at=17)

    fields = state.to_hash()

    assert fields["proposed"] == "TP1,TP2" and fields["stage"] == "2" and fields["peak_price"] == "101.2500"
    assert ExitState.from_hash(fields) == state


def test_unknowns_are_empty_fields() -> None:
    """No market at entry and no stop yet are empty strings, read back as None."""
    state = ExitState(position_plan_id=PLAN, stage=0, peak_price=D("100"), ladder_stop=D("99"), stop_loss=None,
                      base_sl=0.01, base_tp=0.0133)

    fields = state.to_hash()

    assert (fields["stop_loss"], fields["sigma_at_entry"], fields["proposed"]) == ("", "", "")
    assert ExitState.from_hash(fields) == state


def test_an_absent_or_unreadable_hash_is_none() -> None:
    """No hash, a missing field, or a value that is not a number: None (the state is started afresh)."""
    good = ExitState(position_plan_id=PLAN, stage=1, peak_price=D("100"), ladder_stop=D("99"), stop_loss=None,
                     base_sl=0.01, base_tp=0.0133).to_hash()

    assert ExitState.from_hash({}) is None
    assert ExitState.from_hash({k: v for k, v in good.items() if k != "peak_price"}) is None
    assert ExitState.from_hash({**good, "ladder_stop": "abc"}) is None
    assert ExitState.from_hash({**good, "stage": "x"}) is None
