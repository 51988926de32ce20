"""exitbrain's plans: contracts that decode as apply_layer reads them, with DESIGN §4 ids."""

from __future__ import annotations

import hashlib

import pytest

from common.contracts import Action, ApplyPlan, ExitReason, decode, encode
from common.maths.kill_score import KillScore
from services.exitbrain import plans
from tests.unit.exitbrain.builders import PLAN, D


def hex16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_a_kill_score_close_carries_the_score_and_components_on_the_wire() -> None:
    """FULL_CLOSE_PROPOSED kill_score: steps CLOSE_FULL 100 % reduce-only, the score and its components,
    plan_id sha256(position_plan_id|kill_score|stage), source exitbrain; it decodes back unchanged."""
    kill = KillScore(score=0.81, k_regime_flip=1.0, k_sigma_spike=0.5, k_ts_drop=0.2, k_age_penalty=0.5, close=True)

    plan = plans.full_close("BTCUSDT", PLAN, ExitReason.KILL_SCORE, 1, kill=kill, ts=5)
    fields = encode(plan)

    assert fields["steps"] == '[{"step":"CLOSE_FULL","type":"market_reduce_only","side":"close","pct":100.0}]'
    assert (fields["plan_id"], fields["source"], fields["kill_score"], fields["k_ts_drop"]) == (
        hex16(f"{PLAN}|kill_score|1"), "exitbrain", "0.81", "0.2")
    assert decode(ApplyPlan, fields) == plan


def test_a_harvest_is_a_partial_close_of_the_stage() -> None:
    """harvest_tp2 closes the given share of what is open; its id is sha256(position_plan_id|harvest_tp2|2)."""
    plan = plans.harvest("BTCUSDT", PLAN, 2, 300 / 7)

    assert (plan.action, plan.reason, plan.plan_id) == (Action.PARTIAL_CLOSE_PROPOSED, ExitReason.HARVEST_TP2,
                                                        hex16(f"{PLAN}|harvest_tp2|2"))
    assert plan.close_pct == pytest.approx(42.857142857)
    assert plan.trace_id == plan.plan_id  # an exit decision starts its own chain


def test_a_stop_update_is_canonical() -> None:
    """UPDATE_STOP keeps the stop as a canonical decimal (100.4400 → 100.44) in the plan and in its id, and
    copies a given trace id."""
    plan = plans.update_stop("BTCUSDT", PLAN, D("100.4400"), ExitReason.TRAILING_STOP, trace_id="feedfacefeedface")

    assert encode(plan)["new_stop_loss"] == "100.44"
    assert plan.plan_id == hex16(f"{PLAN}|UPDATE_STOP|100.44") and plan.trace_id == "feedfacefeedface"
