"""Replay klines from a file (:mod:`common.kline_files`), at real time, faster, or as fast as possible.

Replay runs on a timeline that starts at the first kline's open time. A kline is emitted when it
closes (``open_time + interval``); the ticks derived from it (open, the two extremes in the order
the candle implies, close) are spread inside its interval. Offsets are that timeline divided by
``speed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import NamedTuple

from common.kline_files import KlineFileError, load_klines
from common.klines import Kline, interval_ms


class ReplayTick(NamedTuple):
    """A trade tick derived from a replayed kline."""

    symbol: str
    ts: int
    price: Decimal
    qty: Decimal


# --- replaying -----------------------------------------------------------------------------------


def _parse_speed(speed: float | str) -> float:
    """The speed factor; 0 stands for "as fast as possible"."""
    if isinstance(speed, str):
        if speed.strip().lower() == "max":
            return 0.0
        try:
            speed = float(speed)
        except ValueError as e:
            raise ValueError(f"replay speed must be a number or 'max', got {speed!r}") from e
    if math.isnan(speed) or speed < 0:
        raise ValueError(f"replay speed must be >= 0, got {speed}")
    return 0.0 if math.isinf(speed) else float(speed)


def split_volume(volume: Decimal, parts: int) -> list[Decimal]:
    """``volume`` in ``parts`` near-equal pieces that add up to it exactly."""
    exponent = volume.as_tuple().exponent
    assert isinstance(exponent, int)  # a finite Decimal
    piece = (volume / parts).quantize(Decimal(1).scaleb(exponent - 2), rounding=ROUND_DOWN)
    return [piece] * (parts - 1) + [volume - piece * (parts - 1)]


def path_prices(kline: Kline) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """The price path a kline is taken to have followed: open, its two extremes in candle order, close.

    A rising candle (close >= open) is taken to have dipped to its low before making its high; a
    falling one to have made its high first. The replay publishes these four prices as ticks, and the
    backtest triggers stops, take-profits and liquidations on them: both see the same path.
    """
    first, second = (kline.low, kline.high) if kline.close >= kline.open else (kline.high, kline.low)
    return kline.open, first, second, kline.close


def path_times(open_time: int, length_ms: int) -> tuple[int, int, int, int]:
    """When the four prices of :func:`path_prices` happen: at the open, a third and two thirds into the
    kline, and its last millisecond."""
    return open_time, open_time + length_ms // 3, open_time + 2 * length_ms // 3, open_time + length_ms - 1


def kline_ticks(kline: Kline, length_ms: int) -> list[ReplayTick]:
    """The four ticks a kline implies (:func:`path_prices` at :func:`path_times`).

    Their quantities add up to the kline's volume, so a
    :class:`~services.marketdata.klines.KlineBuilder` fed these ticks rebuilds the kline.
    """
    qtys = split_volume(kline.volume, 4)
    return [ReplayTick(kline.symbol, t, p, q)
            for t, p, q in zip(path_times(kline.open_time, length_ms), path_prices(kline), qtys, strict=True)]


class ReplaySource:
    """Klines of one symbol from a file, with the offsets (ms from the start) to emit them at.

    ``speed`` 1.0 replays in real time, 60.0 sixty times faster, and 0 or ``"max"`` as fast as
    possible (every offset 0). The file is read and validated when the source is made.
    """

    def __init__(self, path: str | Path, symbol: str, interval: str, speed: float | str = 1.0) -> None:
        self.path = Path(path)
        self.symbol = symbol
        self.interval = interval
        self.interval_ms = interval_ms(interval)
        self.speed = _parse_speed(speed)
        self.klines = load_klines(path, symbol, interval)
        if not self.klines:
            raise KlineFileError(str(path), 0, "no klines to replay")

    def _offset(self, ts_ms: int) -> int:
        if self.speed == 0.0:
            return 0
        return round((ts_ms - self.klines[0].open_time) / self.speed)

    def __iter__(self) -> Iterator[tuple[int, Kline]]:
        """``(offset_ms, kline)`` for every kline, offset at the kline's close."""
        for kline in self.klines:
            yield self._offset(kline.open_time + self.interval_ms), kline

    def ticks(self) -> Iterator[tuple[int, ReplayTick]]:
        """``(offset_ms, tick)`` for the four ticks derived from each kline, in time order."""
        for kline in self.klines:
            for tick in kline_ticks(kline, self.interval_ms):
                yield self._offset(tick.ts), tick

    def events(self) -> Iterator[tuple[int, Kline | ReplayTick]]:
        """Ticks and closed klines merged in time order: a kline's ticks, then the kline itself."""
        for kline in self.klines:
            for tick in kline_ticks(kline, self.interval_ms):
                yield self._offset(tick.ts), tick
            yield self._offset(kline.open_time + self.interval_ms), kline
