"""The backtest's speed: klines per second for the fleet's decisions with the fallback model on generated
5m klines of 10 symbols (a year by default: 1,051,200 klines), beside a bare loop that only reads the same
klines in the same order (the reference), and the rate of loading them from their files.

Goal (issue 15): a year of 10 symbols in under 60 s on one core, ≥ 20,000 klines/s. The run trades the whole
year: the policy's daily-loss and drawdown limits are lifted so the kill switch never stops the work.
``python -m bench.backtest [KLINES_PER_SYMBOL]`` prints the figures; :func:`run` returns them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from backtest import synthetic
from backtest.config import BacktestConfig
from backtest.engine import run as backtest
from common.config import load_settings
from common.kline_files import load_kline_files
from common.klines import Kline
from common.policy import Limits, Policy

GOAL_KLINES_PER_S = 20_000
YEAR_OF_5M = 365 * 288


def bare_loop(klines: dict[str, list[Kline]]) -> float:
    """Read every kline once, in the backtest's order (open time, then symbol), as the engine reads them:
    the four prices as floats. Returns a checksum (so nothing is optimised away)."""
    steps = sorted({k.open_time for series in klines.values() for k in series})
    cursors = dict.fromkeys(klines, 0)
    total = 0.0
    for step in steps:
        for symbol, series in klines.items():
            i = cursors[symbol]
            if i < len(series) and series[i].open_time == step:
                k = series[i]
                total += float(k.open) + float(k.high) + float(k.low) + float(k.close)
                cursors[symbol] = i + 1
    return total


def run(klines_per_symbol: int = YEAR_OF_5M, symbols: int = 10, seed: int = 1) -> dict[str, Any]:
    """Generate, write, read back and backtest; the figures as a dict (and printed)."""
    data = synthetic.market(symbols, klines_per_symbol, seed=seed)
    names = list(data)
    count = sum(len(k) for k in data.values())
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        paths = synthetic.write_klines(Path(tmp), data)
        started = time.perf_counter()
        loaded = load_kline_files(paths)
        load_s = time.perf_counter() - started
    assert sum(len(k) for k in loaded.values()) == count

    started = time.perf_counter()
    bare_loop(loaded)
    bare_s = time.perf_counter() - started

    settings = load_settings(symbols=tuple(names))
    limits = Limits(daily_loss_limit_pct=Decimal(100), max_drawdown_pct=Decimal(100))
    config = BacktestConfig(settings=settings, policy=Policy(allowlist=tuple(names), limits=limits),
                            rules=synthetic.rules_for(names))
    started, cpu = time.perf_counter(), time.process_time()
    result = backtest(loaded, config)
    run_s, run_cpu_s = time.perf_counter() - started, time.process_time() - cpu

    figures = {
        "klines": count, "symbols": symbols, "interval": "5m",
        "backtest_s": round(run_s, 2), "backtest_cpu_s": round(run_cpu_s, 2),
        "backtest_klines_per_s": round(count / run_s), "backtest_klines_per_cpu_s": round(count / run_cpu_s),
        "bare_loop_klines_per_s": round(count / bare_s), "load_files_klines_per_s": round(count / load_s),
        "goal_klines_per_s": GOAL_KLINES_PER_S, "goal_met": count / run_s >= GOAL_KLINES_PER_S,
        "trades": len(result.trades), "path_points": result.stats.path_points,
        "path_points_evaluated": result.stats.evaluated,
    }
    print(f"backtest  {figures['backtest_klines_per_s']:>10,} klines/s  ({count:,} klines of {symbols} symbols in "
          f"{run_s:.1f} s, {run_cpu_s:.1f} s CPU; {len(result.trades)} trades; goal {GOAL_KLINES_PER_S:,}/s "
          f"{'met' if figures['goal_met'] else 'NOT met'})")
    print(f"bare loop {figures['bare_loop_klines_per_s']:>10,} klines/s  (the same klines read, nothing decided)")
    print(f"load      {figures['load_files_klines_per_s']:>10,} klines/s  (JSON files parsed and validated)")
    return figures


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else YEAR_OF_5M)
