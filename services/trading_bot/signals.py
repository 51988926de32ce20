"""The fallback signal: trend-following on an EMA fast/slow cross, filtered by the market state.

The side is the sign of the EMA spread ``(ema_fast − ema_slow)/close``. How sure it is grows with the
spread measured in ATRs (``tanh(|spread|/atr_pct)``) and with how much the market state says the
market trends *the same way* (``p_trend`` when the sign of ``mu`` agrees with the side):

    confidence = 0.5 + 0.5 · tanh(|spread| / atr_pct) · w,
    w = p_trend (trend agrees), 0 (trend disagrees), 0.5 (no market state known)

A cross against a strong trend (the regime is TREND with ``p_trend ≥ strong_trend_p`` and ``mu`` of
the other sign: no long in a strong down trend, no short in a strong up trend) is vetoed: confidence
0. So in a ranging or choppy market the confidence stays near 0.5, below ``min_confidence``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from common.contracts import Side
from common.maths.indicators import atr_series, ema_last
from common.maths.marketstate import TREND, MarketView

FALLBACK_MODEL = "fallback-trend-following"
UNKNOWN_REGIME = "UNKNOWN"
#: the note of a signal vetoed by a strong trend the other way
AGAINST_TREND = "against_trend"


@dataclass(frozen=True)
class TrendParams:
    ema_fast: int = 9
    ema_slow: int = 21
    #: p_trend at or above which a TREND regime vetoes a signal against it
    strong_trend_p: float = 0.5
    #: the weight of the market state when none is known
    unknown_state_weight: float = 0.5
    atr_period: int = 14


@dataclass(frozen=True)
class Signal:
    """A side and how sure, from one model; ``note`` says why (``ema_cross``, ``against_trend``, ``ai``)."""

    side: Side
    confidence: float
    model: str
    note: str = ""


def atr_pct_of(highs: Sequence[float], lows: Sequence[float], closes: Sequence[float], period: int = 14
               ) -> float | None:
    """ATR(period)/close of the last kline (DESIGN §7), None before ``period`` klines."""
    if not closes:
        return None
    atr = atr_series(highs, lows, closes, period)[-1]
    return None if atr is None or closes[-1] <= 0 else atr / closes[-1]


def market_atr_pct(state: MarketView | None) -> float | None:
    """The ATR fraction the market state gives, when it gives one (> 0); None: the window's own
    (:func:`atr_pct_of`) stands in."""
    return state.atr_pct if state is not None and state.atr_pct > 0 else None


def ai_signal(side: Side, confidence: float, model: str, version: int) -> Signal:
    """ai_engine's prediction as a signal, named ``<model>-v<version>``."""
    return Signal(side, confidence, f"{model}-v{version}", "ai")


def fallback_signal(closes: Sequence[float], atr_pct: float, state: MarketView | None,
                    params: TrendParams = TrendParams()) -> Signal | None:
    """The trend-following signal after the last close, or None (not warm yet, or no spread at all)."""
    if len(closes) < params.ema_slow:
        return None
    return trend_signal(ema_last(closes, params.ema_fast), ema_last(closes, params.ema_slow), closes[-1], atr_pct,
                        state, params)


def trend_signal(fast: float | None, slow: float | None, close: float, atr_pct: float, state: MarketView | None,
                 params: TrendParams = TrendParams()) -> Signal | None:
    """:func:`fallback_signal` from the two EMAs of the window already computed (the backtest computes
    them for every window at once): the signal of their spread at ``close``."""
    if fast is None or slow is None or close <= 0:
        return None
    spread = (fast - slow) / close
    if spread == 0.0 or not math.isfinite(spread):
        return None
    side = Side.BUY if spread > 0 else Side.SELL
    strength = math.tanh(abs(spread) / atr_pct) if atr_pct > 0 else 0.0
    if state is None:
        weight = params.unknown_state_weight
    else:
        trend_sign = (state.mu > 0) - (state.mu < 0)
        aligned = trend_sign == (1 if side is Side.BUY else -1)
        if not aligned and state.regime == TREND and state.p_trend >= params.strong_trend_p:
            return Signal(side, 0.0, FALLBACK_MODEL, AGAINST_TREND)
        weight = state.p_trend if aligned else 0.0
    return Signal(side, 0.5 + 0.5 * strength * weight, FALLBACK_MODEL, "ema_cross")
