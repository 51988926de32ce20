"""Market state per symbol, kline by kline (DESIGN §7): the incremental estimator of
:mod:`common.maths.marketstate`, one per symbol, fed only closed klines in order."""

from __future__ import annotations

from common.contracts import MarketState, new_trace_id
from common.klines import Kline
from common.maths.marketstate import MarketStateEstimator, MarketStateParams, MarketStateValue


class MarketStates:
    """One :class:`MarketStateEstimator` per symbol (constant work per closed kline).

    A closed kline that does not come after the last one seen for its symbol (a repeat after a
    reconnect, or out of order) is ignored, so the estimate never counts a kline twice.
    """

    def __init__(self, params: MarketStateParams | None = None) -> None:
        self.params = params or MarketStateParams()
        self._estimators: dict[str, MarketStateEstimator] = {}
        self._last_open: dict[str, int] = {}
        #: closed klines ignored as repeats
        self.repeats = 0

    def update(self, kline: Kline) -> MarketStateValue | None:
        """Add a closed kline; the symbol's state, or None while it warms up (or for a repeat)."""
        if not kline.closed:
            raise ValueError("market state is estimated from closed klines only")
        last = self._last_open.get(kline.symbol)
        if last is not None and kline.open_time <= last:
            self.repeats += 1
            return None
        self._last_open[kline.symbol] = kline.open_time
        estimator = self._estimators.get(kline.symbol)
        if estimator is None:
            estimator = self._estimators[kline.symbol] = MarketStateEstimator(self.params)
        return estimator.update(float(kline.open), float(kline.high), float(kline.low), float(kline.close))


def state_message(symbol: str, value: MarketStateValue, source: str) -> MarketState:
    """The ``marketstate`` contract of one estimate (a fresh trace id: market data starts no chain)."""
    return MarketState(
        source=source, trace_id=new_trace_id(), symbol=symbol, sigma=value.sigma, mu=value.mu,
        ts_strength=value.ts_strength, p_trend=value.p_trend, p_mr=value.p_mr, p_chop=value.p_chop,
        regime=value.regime, atr_pct=value.atr_pct,
    )
