"""exitbrain and harvest_proposal as real processes, and the Redis facts they read, for the exit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import keys
from common.contracts import ApplyPlan, HarvestProposal, MarketState, decode
from common.market import marketstate_mapping
from common.maths.marketstate import CHOP, TREND
from common.streams import Stream
from tests.integration.processes import Proc

#: fast timings: every position evaluated every 100 ms, PnL every 200 ms
FAST_ENV = {
    "QT_EXIT__EVALUATE_INTERVAL_S": "0.1",
    "QT_EXIT__PNL_INTERVAL_S": "0.2",
    "QT_BUS__BLOCK_MS": "100",
    "QT_BUS__CLAIM_INTERVAL_MS": "100",
    "QT_RUNTIME__METRICS_PORTS__EXITBRAIN": "0",
    "QT_RUNTIME__METRICS_PORTS__HARVEST_PROPOSAL": "0",
}


@contextmanager
def service(name: str, redis_url: str, tmp_path: Path, **env: str) -> Iterator[Proc]:
    """``python -m services.<name>`` against ``redis_url``; stopped with SIGTERM (exit code 0 checked)."""
    proc = Proc(["-m", f"services.{name}"], {"REDIS_URL": redis_url, **FAST_ENV, **env},
                tmp_path / f"{name}.log").start()
    try:
        yield proc
        assert proc.terminate() == 0, proc.log()[-3000:]
    finally:
        proc.kill()


def market_state(symbol: str = "BTCUSDT", *, flipped: bool = False, sigma: float = 0.01,
                 ts_strength: float = 0.5) -> dict[str, str]:
    """The fields of ``quantum:marketstate:{symbol}``: a rising trend, or the trend lost (p_trend 0.2)."""
    regime: dict[str, Any] = dict(p_trend=0.2, p_mr=0.3, p_chop=0.5, regime=CHOP) if flipped else dict(
        p_trend=0.8, p_mr=0.1, p_chop=0.1, regime=TREND)
    return marketstate_mapping(MarketState(source="marketdata", trace_id="0123456789abcdef", symbol=symbol,
                                           sigma=sigma, mu=0.002, ts_strength=ts_strength, atr_pct=0.01, **regime))


def plans_in(entries: list[tuple[str, dict[str, str]]]) -> list[ApplyPlan]:
    return [decode(ApplyPlan, fields) for _, fields in entries]


def proposals_in(entries: list[tuple[str, dict[str, str]]]) -> list[HarvestProposal]:
    return [decode(HarvestProposal, fields) for _, fields in entries]


PLAN_KEY = keys.stream(Stream.APPLY_PLAN)
PNL_KEY = keys.stream(Stream.EXITBRAIN_PNL)
PROPOSAL_KEY = keys.stream(Stream.HARVEST_PROPOSAL)
TICK_KEY = keys.stream(Stream.MARKET_TICK)
D = Decimal
