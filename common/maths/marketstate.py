"""Market state per symbol from closed klines (DESIGN §7).

- ``sigma``: volatility per kline, the square root of an EWMA (λ = 0.94) of squared log returns. Each
  return is first clipped to ``median ± k·1.4826·MAD`` of the raw returns before it (the MAD is a
  robust estimate of their spread), so one wild print cannot blow sigma up; a lasting rise in
  volatility still gets through, clipped at first and in full once the MAD window has seen it.
- ``mu``: the OLS slope of log price over the last N closes, per kline (kept with rolling sums).
- ``ts_strength = |mu|/sigma`` (0 when sigma is 0).
- Regime scores over the same window, turned into probabilities by a softmax. They rest on two
  statistics: ``z = ER·sqrt((N−1)·2/π)``, the efficiency ratio (net move over path length) scaled so
  that a random walk gives about 1 (≈|Z| for a standard normal Z): a trend gives well above 1, a
  series pulled back to a level well below 1; and ``ac1``, the lag-1 autocorrelation of returns,
  about 0 for a trend or a random walk and negative when moves reverse.
  trend = ``w_trend·(min(z, z_cap) − 1)``;
  mean reversion = ``w_mr·max(−ac1, 0) + w_mr_z·max(1 − z, 0)``;
  chop = ``w_chop·(1 − |ac1|/chop_ac_scale) − w_chop_z·|z − 1|`` (moves neither persist nor reverse).
  Over a window of 40 a random walk and a mildly mean-reverting series are not always told apart:
  the probabilities are soft on purpose.
- ``atr_pct = ATR(14)/close``.

``MarketStateEstimator`` is the incremental form (constant work per kline); ``batch_market_state``
recomputes the same thing from the whole list and serves as its reference.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from common.maths.indicators import Atr, atr_series

TREND = "TREND"
MEAN_REVERSION = "MEAN_REVERSION"
CHOP = "CHOP"

#: 1/Φ⁻¹(3/4): scales a MAD to a standard deviation for normal data
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class MarketStateParams:
    """The constants of the market state estimate."""

    ewma_lambda: float = 0.94
    #: N: closes in the trend/regime window; the estimate is warm after N klines
    window: int = 40
    #: W: previous raw returns the MAD clip looks at
    mad_window: int = 30
    #: returns are clipped at median ± mad_clip_k·1.4826·MAD (math.inf disables the clip)
    mad_clip_k: float = 4.0
    #: fewer previous returns than this: no clip yet
    mad_min_returns: int = 10
    atr_period: int = 14
    w_trend: float = 2.0
    z_cap: float = 4.0
    w_mr: float = 6.0
    w_mr_z: float = 1.0
    w_chop: float = 4.0
    w_chop_z: float = 0.5
    chop_ac_scale: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.ewma_lambda < 1.0:
            raise ValueError(f"ewma_lambda must be in (0, 1), got {self.ewma_lambda}")
        if self.window < 4:
            raise ValueError(f"window must be at least 4, got {self.window}")
        if self.mad_window < 3 or self.mad_min_returns < 3 or self.mad_min_returns > self.mad_window:
            raise ValueError("need 3 <= mad_min_returns <= mad_window")
        if self.atr_period < 1 or self.atr_period > self.window:
            raise ValueError("atr_period must be between 1 and window")
        if self.chop_ac_scale <= 0.0:
            raise ValueError("chop_ac_scale must be positive")


class MarketView(Protocol):
    """What the decisions read of a market state: the ``marketstate`` contract the services decode, or the
    estimator's own :class:`MarketStateValue` (the backtest hands that over as it is)."""

    @property
    def sigma(self) -> float: ...
    @property
    def mu(self) -> float: ...
    @property
    def ts_strength(self) -> float: ...
    @property
    def p_trend(self) -> float: ...
    @property
    def p_mr(self) -> float: ...
    @property
    def p_chop(self) -> float: ...
    @property
    def regime(self) -> str: ...
    @property
    def atr_pct(self) -> float: ...


@dataclass(frozen=True, slots=True)
class MarketStateValue:
    """The market state after one closed kline. ``sigma`` and ``mu`` are per kline, in log terms."""

    sigma: float
    mu: float
    ts_strength: float
    p_trend: float
    p_mr: float
    p_chop: float
    regime: str
    atr_pct: float
    trend_sign: int
    efficiency_ratio: float
    autocorr: float


def clip_return(r: float, previous: Sequence[float], params: MarketStateParams) -> float:
    """Clip a log return to ``median ± k·1.4826·MAD`` of the previous raw returns. No clip while fewer
    than ``mad_min_returns`` are known, nor when their MAD is 0 (more than half of them equal, as on an
    illiquid symbol moving by whole ticks: clipping there would hide every move)."""
    if len(previous) < params.mad_min_returns or math.isinf(params.mad_clip_k):
        return r
    med = _median(previous)
    mad = _median([abs(x - med) for x in previous])
    if mad <= 0.0:
        return r
    bound = params.mad_clip_k * MAD_TO_SIGMA * mad
    return min(max(r, med - bound), med + bound)


def _median(values: Sequence[float]) -> float:
    """``statistics.median`` to the last bit (the middle value, or the mean of the two middle ones), without
    its generality: it runs twice on every closed kline of every symbol."""
    ordered = sorted(values)
    n = len(ordered)
    half = n // 2
    return ordered[half] if n % 2 else (ordered[half - 1] + ordered[half]) / 2


def regime_probabilities(
    efficiency_ratio: float, autocorr: float, window: int, params: MarketStateParams
) -> tuple[float, float, float]:
    """``(p_trend, p_mr, p_chop)``: the softmax of the trend, mean-reversion and chop scores of a window
    of ``window`` closes with this efficiency ratio and lag-1 autocorrelation of returns."""
    z = efficiency_ratio * math.sqrt((window - 1) * 2.0 / math.pi)
    s_trend = params.w_trend * (min(z, params.z_cap) - 1.0)
    s_mr = params.w_mr * max(-autocorr, 0.0) + params.w_mr_z * max(1.0 - z, 0.0)
    s_chop = params.w_chop * (1.0 - abs(autocorr) / params.chop_ac_scale) - params.w_chop_z * abs(z - 1.0)
    top = max(s_trend, s_mr, s_chop)
    e_trend, e_mr, e_chop = (math.exp(s - top) for s in (s_trend, s_mr, s_chop))
    total = e_trend + e_mr + e_chop
    return e_trend / total, e_mr / total, e_chop / total


def _state(
    sigma: float,
    mu: float,
    efficiency_ratio: float,
    autocorr: float,
    atr: float,
    close: float,
    params: MarketStateParams,
) -> MarketStateValue:
    ts_strength = abs(mu) / sigma if sigma > 0.0 else 0.0
    p_trend, p_mr, p_chop = regime_probabilities(efficiency_ratio, autocorr, params.window, params)
    # ties go to the first listed: TREND, then MEAN_REVERSION, then CHOP
    regime = TREND if p_trend >= p_mr and p_trend >= p_chop else MEAN_REVERSION if p_mr >= p_chop else CHOP
    return MarketStateValue(
        sigma=sigma,
        mu=mu,
        ts_strength=ts_strength,
        p_trend=p_trend,
        p_mr=p_mr,
        p_chop=p_chop,
        regime=regime,
        atr_pct=atr / close if close > 0.0 else 0.0,
        trend_sign=(mu > 0.0) - (mu < 0.0),
        efficiency_ratio=efficiency_ratio,
        autocorr=autocorr,
    )


def _autocorr(total: float, squares: float, pairs: float, first: float, last: float, n: int) -> float:
    """Lag-1 autocorrelation of n returns from their sums: Σ(r_j − m)(r_{j−1} − m) / Σ(r_j − m)²."""
    m = total / n
    denominator = squares - n * m * m
    if denominator <= 1e-12 * squares or denominator <= 0.0:
        return 0.0
    numerator = pairs - m * (2.0 * total - first - last) + (n - 1) * m * m
    return max(-1.0, min(1.0, numerator / denominator))


class MarketStateEstimator:
    """The market state of one symbol, updated kline by kline with constant work per kline."""

    def __init__(self, params: MarketStateParams = MarketStateParams()) -> None:
        self.params = params
        self._count = 0
        self._atr = Atr(params.atr_period)
        self._prev_log: float | None = None
        self._ref_log = 0.0
        # EWMA of squared clipped returns, normalised by the sum of weights (no seed to wash out)
        self._ew_num = 0.0
        self._ew_den = 0.0
        self._raw_returns: deque[float] = deque(maxlen=params.mad_window)
        # the window: the last N log closes (relative to the first) and the N−1 returns between them
        self._logs: deque[float] = deque()
        self._sum_y = 0.0
        self._sum_xy = 0.0  # Σ j·y_j with j = 0..len−1 the position in the window
        self._rets: deque[float] = deque()
        self._sum_r = 0.0
        self._sum_r2 = 0.0
        self._sum_abs = 0.0
        self._sum_pairs = 0.0  # Σ r_j·r_{j−1} over adjacent returns inside the window

    def update(self, open_: float, high: float, low: float, close: float) -> MarketStateValue | None:
        """Add one closed kline; return the market state, or ``None`` before N klines."""
        if close <= 0.0 or low <= 0.0 or high < low:
            raise ValueError(f"bad kline: high={high} low={low} close={close}")
        p = self.params
        self._count += 1
        atr = self._atr.update(high, low, close)
        log_close = math.log(close)
        if self._prev_log is None:
            self._ref_log = log_close
        else:
            r = log_close - self._prev_log
            clipped = clip_return(r, self._raw_returns, p)
            self._raw_returns.append(r)
            self._ew_num = p.ewma_lambda * self._ew_num + clipped * clipped
            self._ew_den = p.ewma_lambda * self._ew_den + 1.0
            self._push_return(r)
        self._prev_log = log_close
        self._push_log(log_close - self._ref_log)

        if self._count < p.window or atr is None:
            return None
        n = p.window
        sum_x = n * (n - 1) / 2.0
        sum_xx = (n - 1) * n * (2 * n - 1) / 6.0
        mu = (n * self._sum_xy - sum_x * self._sum_y) / (n * sum_xx - sum_x * sum_x)
        net = abs(self._logs[-1] - self._logs[0])
        efficiency = net / self._sum_abs if self._sum_abs > 0.0 else 0.0
        autocorr = _autocorr(self._sum_r, self._sum_r2, self._sum_pairs, self._rets[0], self._rets[-1], len(self._rets))
        sigma = math.sqrt(self._ew_num / self._ew_den)
        return _state(sigma, mu, min(efficiency, 1.0), autocorr, atr, close, p)

    def _push_log(self, y: float) -> None:
        if len(self._logs) == self.params.window:
            oldest = self._logs.popleft()
            # every remaining close moves one place left: Σ j·y_j loses Σ y_j over them
            self._sum_y -= oldest
            self._sum_xy -= self._sum_y
        self._sum_xy += len(self._logs) * y
        self._sum_y += y
        self._logs.append(y)

    def _push_return(self, r: float) -> None:
        if len(self._rets) == self.params.window - 1:
            oldest = self._rets.popleft()
            self._sum_r -= oldest
            self._sum_r2 -= oldest * oldest
            self._sum_abs -= abs(oldest)
            self._sum_pairs -= oldest * self._rets[0]
        if self._rets:
            self._sum_pairs += self._rets[-1] * r
        self._sum_r += r
        self._sum_r2 += r * r
        self._sum_abs += abs(r)
        self._rets.append(r)


def batch_market_state(
    klines: Sequence[tuple[float, float, float, float]], params: MarketStateParams = MarketStateParams()
) -> MarketStateValue | None:
    """The market state after the last of ``klines`` (open, high, low, close), computed from the whole
    list at once; ``None`` with fewer than N klines. The reference for ``MarketStateEstimator``."""
    n = params.window
    if len(klines) < n:
        return None
    highs = [k[1] for k in klines]
    lows = [k[2] for k in klines]
    closes = [k[3] for k in klines]
    atr = atr_series(highs, lows, closes, params.atr_period)[-1]
    if atr is None:
        return None
    logs = [math.log(c) for c in closes]
    returns = [b - a for a, b in itertools.pairwise(logs)]

    num = den = 0.0
    for i, r in enumerate(returns):
        clipped = clip_return(r, returns[max(0, i - params.mad_window) : i], params)
        num = params.ewma_lambda * num + clipped * clipped
        den = params.ewma_lambda * den + 1.0
    sigma = math.sqrt(num / den)

    window = logs[-n:]
    x_mean = (n - 1) / 2.0
    y_mean = sum(window) / n
    mu = sum((j - x_mean) * (y - y_mean) for j, y in enumerate(window)) / sum((j - x_mean) ** 2 for j in range(n))

    rets = returns[-(n - 1) :]
    path = sum(abs(r) for r in rets)
    efficiency = abs(window[-1] - window[0]) / path if path > 0.0 else 0.0
    m = sum(rets) / len(rets)
    var_sum = sum((r - m) ** 2 for r in rets)
    squares = sum(r * r for r in rets)
    if var_sum <= 1e-12 * squares or var_sum <= 0.0:
        autocorr = 0.0
    else:
        cov_sum = sum((rets[j] - m) * (rets[j - 1] - m) for j in range(1, len(rets)))
        autocorr = max(-1.0, min(1.0, cov_sum / var_sum))
    return _state(sigma, mu, min(efficiency, 1.0), autocorr, atr, closes[-1], params)
