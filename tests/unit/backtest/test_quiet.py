"""The fast path changes nothing: skipping the path points inside a quiet band gives exactly the trades,
equity curve and decisions of running every decision at every point — under the default settings and
under settings that stress each part of the band (no protective orders, a time exit, an age weight that
can lower the kill score, a kill score that never closes so positions trail for long, a tight ladder)."""

from __future__ import annotations

from typing import Any

import pytest

from backtest import synthetic
from backtest.engine import run
from common.policy import Limits
from tests.unit.backtest.support import config, settings, trades_of

KLINES = synthetic.market(3, 3000, seed=11)
NAMES = list(KLINES)
#: no loss limit: the kill switch would stop the trading these runs compare
OPEN = Limits(daily_loss_limit_pct=100, max_drawdown_pct=100)

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no_protective_orders": {"apply": {"protective_orders": False}},
    "time_exit": {"exit": {"max_hold_s": 3 * 3600}},
    "age_lowers_the_score": {"exit": {"w_age_penalty": -0.3}},
    "kill_never_closes_and_stops_trail": {"exit": {"kill_threshold": 1.0, "trailing_callback_frac": 0.004}},
    "tight_ladder": {"signal": {"reward_risk": 0.5, "min_sl_frac": 0.01}, "exit": {"kill_threshold": 0.99},
                     "apply": {"protective_orders": False}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_and_exact_runs_agree(case: str) -> None:
    """Same trades (times, sides, quantities, prices, PnL, fees, reasons), same equity at every step, same
    count of every plan's result — with far fewer points evaluated."""
    conf = settings(NAMES, **CASES[case])
    exact = run(KLINES, config(KLINES, settings=conf, limits=OPEN, fast=False))
    fast = run(KLINES, config(KLINES, settings=conf, limits=OPEN, fast=True))
    assert len(exact.trades) > 20, "the case trades enough to mean something"
    assert trades_of(fast) == trades_of(exact)
    assert fast.equity == exact.equity
    assert fast.stats.results == exact.stats.results
    assert fast.stats.outcomes == exact.stats.outcomes
    assert fast.stats.proposals == exact.stats.proposals
    assert fast.stats.evaluated < exact.stats.evaluated
