"""``python -m bench [GROUP ...]``: every figure beside its reference measured in the same run, the ratio and
the goal, printed as a table and written to ``bench/results.json``.

Figures depend on the machine and are never asserted by a test. Groups (default: all, about 12 minutes):
``codec`` (contracts and decision maths), ``bus`` (one and three hops against a bare redis-py loop),
``fleet`` (real processes: stop crossings, the 580-kline burst, marketdata on Binance's all-market streams,
intent_bridge's restart, memory), ``backtest`` (a year of 5m klines of 10 symbols).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import backtest, bus, fleet_rows
from bench.report import Row, format_row, header, write
from common.contracts import ApplyPlan, TradeIntent, decode, encode
from common.contracts.enums import PositionSide
from common.maths.kill_score import KillScoreParams, kill_score
from common.maths.marketstate import MarketStateEstimator, MarketStateParams
from ops.redis_server import EmbeddedRedis, free_port


def codec(n: int = 20_000) -> list[Row]:
    """Encode+decode of the two busiest contracts (validated, Decimal fields); the reference is a JSON round
    trip of the same fields (serialization without a contract)."""
    message = bus.intent(1)
    rows = []
    for contract, sample in ((TradeIntent, message), (ApplyPlan, bus.plan_of(message))):
        fields = encode(sample)
        started = time.perf_counter()
        for _ in range(n):
            decode(contract, encode(sample))
        rate = n / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(n):
            json.loads(json.dumps(fields))
        bare = n / (time.perf_counter() - started)
        rows.append(Row(f"codec_{contract.__name__}", f"codec {contract.__name__} encode+decode", rate, "msg/s",
                        "JSON round trip of the fields", bare, details={"fields": len(fields)}))
    return rows


def decisions(n: int = 50_000) -> list[Row]:
    estimator = MarketStateEstimator(MarketStateParams())
    price = 100.0
    started = time.perf_counter()
    value = None
    for i in range(n):
        price *= 1.0 + (0.001 if i % 7 else -0.004)
        value = estimator.update(price, price * 1.002, price * 0.998, price)
    state_rate = n / (time.perf_counter() - started)
    assert value is not None
    started = time.perf_counter()
    for _ in range(n):
        kill_score(PositionSide.LONG, value, 0.01, 0.5, 3_600_000, KillScoreParams())
    score_rate = n / (time.perf_counter() - started)
    return [Row("marketstate_update", "market state incremental update", state_rate, "kline/s"),
            Row("kill_score", "kill score", score_rate, "eval/s")]


def bus_rows() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(free_port(), Path(tmp)) as server:
        return asyncio.run(bus.measure(server.url))


def fleet() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="qt-bench-") as tmp:
        return fleet_rows.measure(Path(tmp), on_row=lambda row: print(format_row(row), flush=True))


def backtest_rows() -> list[Row]:
    f = backtest.run()
    return [Row("backtest_klines_per_s", "backtest: a year of 5m klines, 10 symbols, fallback model",
                f["backtest_klines_per_s"], "kline/s", "bare loop reading the same klines",
                f["bare_loop_klines_per_s"], f"≥ {f['goal_klines_per_s']:,} kline/s", bool(f["goal_met"]),
                details=f)]


#: each group's rows; "fleet" prints its rows itself as they are measured
GROUPS: dict[str, Callable[[], list[Row]]] = {"codec": lambda: codec() + decisions(), "bus": bus_rows,
                                              "fleet": fleet, "backtest": backtest_rows}
PRINTS_ITSELF = {"fleet"}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        print(f"unknown bench group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    print("Quantum Trader benchmarks (figures beside their references; not limits)")
    print(header())
    rows: list[Row] = []
    for name in names:
        for row in GROUPS[name]():
            if name not in PRINTS_ITSELF:
                print(format_row(row), flush=True)
            rows.append(row)
    write(rows)
    print(f"{len(rows)} rows written to bench/results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
