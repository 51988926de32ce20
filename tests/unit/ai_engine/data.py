"""Generated price series with a learnable pattern: AR(1) returns (momentum), so the sign of the last
return predicts the next one with probability 0.5 + asin(phi)/pi (2/3 for phi = 0.5)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np

from common.klines import Kline, interval_ms
from services.ai_engine.features import FloatArray


def momentum_closes(n: int = 6000, phi: float = 0.5, vol: float = 0.001, seed: int = 1) -> FloatArray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n)
    noise = rng.normal(0.0, vol, n)
    for i in range(1, n):
        r[i] = phi * r[i - 1] + noise[i]
    closes: FloatArray = 100.0 * np.exp(np.cumsum(r))
    return closes


def write_kline_file(path: Path, closes: FloatArray, start_ms: int = 1_700_000_000_000,
                     interval_ms: int = 60_000) -> Path:
    """A Binance 12-column kline JSON file of these closes (open = previous close)."""
    rows = []
    prev = float(closes[0])
    for i, close in enumerate(closes.tolist()):
        o, c = round(prev, 4), round(close, 4)
        rows.append([start_ms + i * interval_ms, f"{o:.4f}", f"{max(o, c) + 0.01:.4f}", f"{min(o, c) - 0.01:.4f}",
                     f"{c:.4f}", "12.5", start_ms + (i + 1) * interval_ms - 1, "1000", 10, "6", "600", "0"])
        prev = close
    path.write_text(json.dumps(rows))
    return path


def drift_closes(n: int = 4000, drift: float = 0.0006, vol: float = 0.001, seed: int = 1) -> FloatArray:
    """Independent returns with an upward drift: about 70% of the moves are up and nothing else is
    learnable, so the best a model can do is the majority class."""
    rng = np.random.default_rng(seed)
    closes: FloatArray = 100.0 * np.exp(np.cumsum(rng.normal(drift, vol, n)))
    return closes


def klines_of(closes: FloatArray, symbol: str = "BTCUSDT", interval: str = "1m",
              start_ms: int = 1_700_000_000_000) -> list[Kline]:
    """Closed klines of these closes (open = previous close), ``interval`` apart."""
    step = interval_ms(interval)
    klines, prev = [], Decimal(f"{closes[0]:.4f}")
    for i, value in enumerate(closes.tolist()):
        close = Decimal(f"{value:.4f}")
        klines.append(Kline(symbol, interval, start_ms + i * step, prev, max(prev, close), min(prev, close), close,
                            Decimal(1), True))
        prev = close
    return klines
