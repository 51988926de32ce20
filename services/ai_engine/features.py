"""Features of a kline series for the direction model: returns over several lags, EMA spread, RSI and
volatility, from the closes, through ``common.maths.indicators``.

The feature spec travels with a trained model (its JSON), so a model is always served with the
features it was trained on. Row ``t`` of the feature matrix uses closes ``0..t`` only (nothing from
the future); rows before the warm-up are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.maths.indicators import ema_series, rsi_series

FloatArray = npt.NDArray[np.float64]

#: Binance kline columns: open_time, open, high, low, close, volume
CLOSE_COLUMN = 4


@dataclass(frozen=True)
class FeatureSpec:
    """Which features, with which periods. ``version`` changes when the definitions do."""

    lags: tuple[int, ...] = (1, 3, 6, 12)
    ema_fast: int = 9
    ema_slow: int = 21
    rsi_period: int = 14
    vol_window: int = 20
    version: int = 1

    def __post_init__(self) -> None:
        if not self.lags or min(self.lags) < 1:
            raise ValueError("lags must be positive")
        if not 2 <= self.ema_fast < self.ema_slow:
            raise ValueError("need 2 <= ema_fast < ema_slow")
        if self.rsi_period < 2 or self.vol_window < 2:
            raise ValueError("rsi_period and vol_window must be at least 2")

    @property
    def names(self) -> list[str]:
        return [f"ret_{lag}" for lag in self.lags] + ["ema_spread", "rsi", f"vol_{self.vol_window}"]

    @property
    def min_klines(self) -> int:
        """Closes needed before the last row has every feature."""
        return max(max(self.lags), self.ema_slow - 1, self.rsi_period, self.vol_window) + 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lags"] = list(self.lags)
        data["names"] = self.names
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        fields = {k: v for k, v in data.items() if k != "names"}
        fields["lags"] = tuple(int(x) for x in fields.get("lags", ()))
        return cls(**fields)


def closes_of(klines: Sequence[Sequence[Any]]) -> FloatArray:
    """The closes of Binance kline rows (numbers or numeric strings); ValueError on a bad row."""
    closes = np.empty(len(klines), dtype=np.float64)
    for i, row in enumerate(klines):
        if len(row) <= CLOSE_COLUMN:
            raise ValueError(f"kline {i}: a Binance kline row has at least 5 columns")
        value = float(row[CLOSE_COLUMN])
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"kline {i}: close must be a positive number, got {row[CLOSE_COLUMN]!r}")
        closes[i] = value
    return closes


def _shift_log_return(log_close: FloatArray, lag: int) -> FloatArray:
    out = np.full(log_close.shape, np.nan)
    out[lag:] = log_close[lag:] - log_close[:-lag]
    return out


def _as_array(values: list[float | None]) -> FloatArray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def feature_matrix(closes: FloatArray, spec: FeatureSpec) -> FloatArray:
    """One row of features per close (NaN before the warm-up), columns in ``spec.names`` order."""
    n = len(closes)
    log_close = np.log(closes)
    columns = [_shift_log_return(log_close, lag) for lag in spec.lags]
    values = closes.tolist()
    fast = _as_array(ema_series(values, spec.ema_fast))
    slow = _as_array(ema_series(values, spec.ema_slow))
    columns.append((fast - slow) / closes)
    columns.append((_as_array(rsi_series(values, spec.rsi_period)) - 50.0) / 50.0)
    vol = np.full(n, np.nan)
    returns = np.diff(log_close)  # returns[i] is the return into close i+1
    w = spec.vol_window
    if len(returns) >= w:
        windows = np.lib.stride_tricks.sliding_window_view(returns, w)
        vol[w:] = windows.std(axis=1)
    columns.append(vol)
    return np.column_stack(columns) if n else np.empty((0, len(spec.names)))


def latest_features(closes: FloatArray, spec: FeatureSpec) -> FloatArray:
    """The feature row of the last close; ValueError when there are too few closes. The EMAs and the RSI
    start from the first close given, so give a few times ``ema_slow`` closes for stable values."""
    if len(closes) < spec.min_klines:
        raise ValueError(f"need at least {spec.min_klines} klines, got {len(closes)}")
    row: FloatArray = feature_matrix(closes, spec)[-1]
    if not np.all(np.isfinite(row)):
        raise ValueError("the features of the last kline are not finite")
    return row


def direction_labels(closes: FloatArray, horizon: int) -> FloatArray:
    """1 when the close ``horizon`` klines later is higher, 0 when lower, NaN when equal or unknown."""
    if horizon < 1:
        raise ValueError("horizon must be at least 1")
    labels = np.full(len(closes), np.nan)
    if len(closes) > horizon:
        future, now = closes[horizon:], closes[:-horizon]
        labels[:-horizon] = np.where(future > now, 1.0, np.where(future < now, 0.0, np.nan))
    return labels


def dataset(closes: FloatArray, spec: FeatureSpec, horizon: int) -> tuple[FloatArray, FloatArray]:
    """``(X, y)``: the rows with every feature and a label, in time order."""
    x = feature_matrix(closes, spec)
    y = direction_labels(closes, horizon)
    keep = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
    return x[keep], y[keep]
