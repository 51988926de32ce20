"""Walk-forward: fold k's model learns from window k only — it never saw a kline at or after window k+1's
start — and trades window k+1 alone; a model that does not beat the baseline is not traded unless forced."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np

from backtest import synthetic
from backtest.walk_forward import spans, walk
from common.klines import interval_ms
from common.policy import Limits
from tests.unit.backtest.support import config

L = interval_ms("5m")
DATA = synthetic.market(2, 3 * 1500, seed=9)
OPEN = Limits(daily_loss_limit_pct=Decimal(100), max_drawdown_pct=Decimal(100))


def test_the_windows_tile_the_period_on_kline_boundaries() -> None:
    windows = spans(0, 10 * L + 0, 3, L)
    assert [(w.start_ms, w.end_ms) for w in windows] == [(0, 3 * L), (3 * L, 6 * L), (6 * L, 10 * L)]


def test_no_fold_sees_its_test_window_and_each_trades_only_there() -> None:
    """Two folds over three windows: each model's training klines end before its test window starts (its
    recorded first and last open times, and the weights do not move when everything from the test window on
    is replaced); each fold's trades open inside its test window."""
    folds = walk(DATA, config(DATA, limits=OPEN), 2, force=True)
    assert len(folds) == 2
    first = next(iter(DATA))
    for fold in folds:
        assert fold.model is not None and fold.used == "model"
        seen = fold.model.trained_on
        assert seen["symbol"] == first
        assert fold.train.start_ms <= seen["first_open_time"]
        assert seen["last_open_time"] + L <= fold.test.start_ms, "the last training kline closed before the test"
        assert fold.train.end_ms == fold.test.start_ms
        assert all(fold.test.start_ms <= t.opened_at < fold.test.end_ms + L for t in fold.result.trades)
        assert fold.result.start_ms == fold.test.start_ms

    # the future rewritten: every kline from fold 0's test window on is replaced by another market's
    other = synthetic.market(2, 3 * 1500, seed=99)
    cut = folds[0].test.start_ms
    changed = {s: [k if k.open_time < cut else replace(o, symbol=s) for k, o in zip(DATA[s], other[f"GEN0{i}USDT"],
                                                                                   strict=True)]
               for i, s in enumerate(DATA)}
    again = walk(changed, config(changed, limits=OPEN), 2, force=True)
    assert again[0].model is not None and folds[0].model is not None
    assert np.array_equal(again[0].model.model.weights, folds[0].model.model.weights)
    assert again[0].model.model.bias == folds[0].model.model.bias
    assert not np.array_equal(again[1].model.model.weights, folds[1].model.model.weights)  # type: ignore[union-attr]


def test_a_model_below_the_baseline_is_not_traded() -> None:
    """Without force, a fold whose model does not beat the majority class trades on the fallback."""
    folds = walk(DATA, config(DATA, limits=OPEN), 2)
    for fold in folds:
        assert fold.evaluation is not None
        expected = "model" if fold.evaluation.beats_baseline else "below_baseline"
        assert fold.used == expected
        assert fold.describe()["beats_baseline"] == fold.evaluation.beats_baseline
