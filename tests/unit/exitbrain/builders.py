"""Builders for exitbrain's unit tests: positions, market states and proposals with chosen values."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.contracts import HarvestProposal, HarvestStage, MarketState, PositionSide
from common.maths.marketstate import CHOP, TREND
from common.positions import PositionRecord

D = Decimal
PLAN = "aaaaaaaaaaaaaaaa"
HOUR_MS = 3_600_000
T0 = 1_700_000_000_000


def position(side: PositionSide = PositionSide.LONG, *, entry: str = "100", stop: str | None = None,
             tp: str | None = None, qty: str = "10", leverage: int = 10, plan_id: str = PLAN,
             created_at: int = T0) -> PositionRecord:
    """A position; by default the small levels whose TP1 (≈100.5 / 99.5) still leaves the stop at break-even:
    base_sl 0.5 %, base_tp 0.559 % (entry 100)."""
    long = side is PositionSide.LONG
    stop = stop or ("99.5" if long else "100.5")
    tp = tp or ("100.559" if long else "99.441")
    return PositionRecord(symbol="BTCUSDT", side=side, quantity=D(qty), entry_price=D(entry), leverage=leverage,
                          stop_loss=D(stop), take_profit=D(tp), plan_id=plan_id, created_at=created_at,
                          updated_at=created_at, trace_id="0123456789abcdef")


def market(*, sigma: float = 0.01, ts_strength: float = 0.5, flipped: bool = False, mu: float = 0.005) -> MarketState:
    """A market state: a rising trend, or (``flipped``) the trend lost: p_trend 0.2, p_mr + p_chop 0.8."""
    fields: dict[str, Any] = dict(p_trend=0.8, p_mr=0.1, p_chop=0.1, regime=TREND)
    if flipped:
        fields = dict(p_trend=0.2, p_mr=0.3, p_chop=0.5, regime=CHOP)
    return MarketState(source="marketdata", trace_id="0123456789abcdef", symbol="BTCUSDT", sigma=sigma, mu=mu,
                       ts_strength=ts_strength, atr_pct=0.01, **fields)


def proposal(stage: HarvestStage, trigger: str, *, plan_id: str = PLAN, trace: str = "feedfacefeedface",
             close_pct: float = 30.0) -> HarvestProposal:
    return HarvestProposal(source="harvest_proposal", trace_id=trace, symbol="BTCUSDT", position_plan_id=plan_id,
                           stage=stage, trigger_price=D(trigger), close_pct=close_pct, new_stop_loss=None,
                           r_multiple=1.0)
