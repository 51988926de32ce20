"""The ``quantum:exit:state:{symbol}`` codec."""

from __future__ import annotations

from services.exitbrain.exit_state import ExitState
from tests.unit.exitbrain.builders import PLAN, D


def test_a_state_survives_the_hash_round_trip() -> None:
    """Every field comes back equal, floats and decimals exactly, the proposed stages as a set."""
    state = ExitState(position_plan_id=PLAN, stage=2, peak_price=D("101.2500"), ladder_stop=D("100.44"),
                      stop_loss=D("100.1"), base_sl=0.01, base_tp=0.0112, sigma_at_entry=0.0123456789,
                      ts_strength_at_entry=0.5, proposed=frozenset({"TP1", "TP2"}), regime_armed=True,
                      closing="", tp3_proposed_at=12, updated_at=17)

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


def test_a_hash_written_by_an_older_exitbrain_still_loads() -> None:
    """A hash without the fields added since (the close in flight, the TP3 time) loads with their
    defaults; one left at stage 3 by the exitbrain that abandoned such positions takes its last change as
    the TP3 time, so the TP3 retry picks the position up."""
    old = {"position_plan_id": PLAN, "stage": "3", "peak_price": "101.05", "ladder_stop": "100.24",
           "stop_loss": "100.1", "base_sl": "0.005", "base_tp": "0.00559", "sigma_at_entry": "0.01",
           "ts_strength_at_entry": "0.5", "proposed": "TP1,TP2,TP3", "updated_at": "1700000000000"}

    state = ExitState.from_hash(old)

    assert state is not None
    assert (state.stage, state.proposed, state.closing, state.close_attempts, state.regime_armed) == (
        3, frozenset({"TP1", "TP2", "TP3"}), "", 0, False)
    assert state.tp3_proposed_at == 1_700_000_000_000
    before_tp3 = ExitState.from_hash({**old, "stage": "1", "proposed": "TP1"})
    assert before_tp3 is not None and before_tp3.tp3_proposed_at == 0
