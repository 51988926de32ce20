"""Walk-forward: the klines cut into ``n + 1`` windows of equal time; fold ``k`` trains the direction
model on window ``k`` (:func:`services.ai_engine.train.fit`, ai_engine's own training) and backtests
window ``k + 1`` with it — no look-ahead: the model learns only from klines that closed before the
window it trades, and the backtest of a window sees each kline only once it has closed.

A model that does not beat the majority-class baseline on its own held-out tail is not used (``qt
train`` would not make it current, and trading_bot would run on its fallback): that fold trades on the
fallback, unless ``force``. The model is one for the fleet: with several symbols it is trained on the
first symbol's klines of the window. The backtest of a window starts ``signal.window_klines`` klines
before it (the bot's window and the market state warm up on them) and enters only from the window's
start.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backtest.config import BacktestConfig
from backtest.engine import ProgressFn, RunResult, run
from backtest.metrics import Summary, summarize
from common.klines import Kline, interval_ms
from services.ai_engine.model import Evaluation, TrainedModel
from services.ai_engine.train import TrainingError, feature_spec, fit


@dataclass(frozen=True)
class Span:
    """``[start_ms, end_ms)``: the klines whose open time falls inside."""

    start_ms: int
    end_ms: int

    def of(self, klines: Sequence[Kline]) -> list[Kline]:
        return [k for k in klines if self.start_ms <= k.open_time < self.end_ms]


@dataclass(frozen=True)
class Fold:
    """One step of the walk: what was trained where, what traded, and how it did."""

    index: int
    train: Span
    test: Span
    trained_symbol: str
    model: TrainedModel | None
    evaluation: Evaluation | None
    #: ``model``, or why the fallback traded (``below_baseline``, ``training_failed: ...``)
    used: str
    result: RunResult
    summary: Summary

    def describe(self) -> dict[str, Any]:
        e = self.evaluation
        o = self.summary.overall
        return {
            "fold": self.index, "train_start": self.train.start_ms, "train_end": self.train.end_ms,
            "test_start": self.test.start_ms, "test_end": self.test.end_ms, "trained_on": self.trained_symbol,
            "model_trained_on": self.model.trained_on if self.model is not None else None,
            "accuracy": e.accuracy if e else None, "baseline_accuracy": e.baseline_accuracy if e else None,
            "log_loss": e.log_loss if e else None, "baseline_log_loss": e.baseline_log_loss if e else None,
            "beats_baseline": e.beats_baseline if e else None, "used": self.used, "trades": o.trades,
            "win_rate": o.win_rate, "net_pnl": format(o.net_pnl, "f"), "return": self.summary.total_return,
            "max_drawdown": self.summary.max_drawdown, "sharpe": self.summary.sharpe,
        }


def spans(start_ms: int, end_ms: int, count: int, length_ms: int) -> list[Span]:
    """``count`` consecutive windows of (nearly) equal time over ``[start_ms, end_ms)``, cut on kline
    boundaries."""
    if count < 2:
        raise ValueError("a walk needs at least two windows")
    klines = (end_ms - start_ms) // length_ms
    if klines < count:
        raise ValueError(f"{klines} klines cannot make {count} windows")
    cuts = [start_ms + (klines * i // count) * length_ms for i in range(count)] + [end_ms]
    return [Span(a, b) for a, b in itertools.pairwise(cuts)]


def walk(klines: Mapping[str, Sequence[Kline]], config: BacktestConfig, folds: int, *, horizon: int = 5,
         test_fraction: float = 0.2, force: bool = False, progress: ProgressFn | None = None) -> list[Fold]:
    """``folds`` train-then-test steps over ``n + 1`` windows (see the module docstring)."""
    if folds < 1:
        raise ValueError("--walk-forward needs at least one fold")
    symbols = [s for s, k in klines.items() if k]
    if not symbols:
        raise ValueError("no klines to walk")
    interval = klines[symbols[0]][0].interval
    length = interval_ms(interval)
    start = min(klines[s][0].open_time for s in symbols)
    end = max(klines[s][-1].open_time for s in symbols) + length
    windows = spans(start, end, folds + 1, length)
    warmup = config.settings.signal.window_klines * length
    spec = feature_spec(config.settings)
    done: list[Fold] = []
    for k in range(folds):
        train, test = windows[k], windows[k + 1]
        training = train.of(klines[symbols[0]])
        model: TrainedModel | None = None
        evaluation: Evaluation | None = None
        try:
            model, evaluation = fit(training, spec=spec, horizon=horizon, test_fraction=test_fraction)
            used = "model" if evaluation.beats_baseline or force else "below_baseline"
        except TrainingError as e:
            used = f"training_failed: {e}"
        seen = Span(max(start, test.start_ms - warmup), test.end_ms)
        window_klines = {s: seen.of(klines[s]) for s in symbols}
        fold_config = replace(config, model=model if used == "model" else None, trade_from_ms=test.start_ms,
                              notes={**config.notes, "fold": k})
        result = run({s: v for s, v in window_klines.items() if v}, fold_config, progress)
        done.append(Fold(k, train, test, symbols[0], model, evaluation, used, result, summarize(result)))
    return done
