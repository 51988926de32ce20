"""Klines, the fleet's one vocabulary of candles: Binance interval names and lengths, open-time
alignment, and the ``Kline`` value.

A kline covers ``[open_time, open_time + interval_ms)``; ``open_time`` is aligned to the interval
on the epoch (``ts - ts % interval_ms``), except week-multiples, which Binance opens on Monday
00:00 UTC (the epoch fell on a Thursday). Months (``1M``) have no fixed length: ``interval_ms`` refuses
them rather than guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
#: Monday 1970-01-05 00:00 UTC: where Binance's weekly klines are aligned
_WEEK_ORIGIN_MS = 4 * DAY_MS

_UNIT_MS = {"s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
_INTERVAL_RE = re.compile(r"^([1-9][0-9]*)([smhdwM])$")

#: the intervals Binance USD-M serves klines for
BINANCE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                     "1d", "3d", "1w", "1M")

def interval_ms(interval: str) -> int:
    """The length of a Binance interval (``"1m"``, ``"4h"``, ``"1w"``...) in milliseconds.

    Raises ValueError for a malformed interval, and for months (``"1M"``), whose length varies.
    """
    match = _INTERVAL_RE.match(interval)
    if match is None:
        raise ValueError(f"not a kline interval: {interval!r} (expected e.g. '1m', '4h', '1d')")
    count, unit = int(match.group(1)), match.group(2)
    if unit == "M":
        raise ValueError(f"calendar-month interval {interval!r} has no fixed length")
    return count * _UNIT_MS[unit]


def interval_name(length_ms: int) -> str:
    """The interval name of a length in ms, in the largest unit dividing it (60000 → ``"1m"``)."""
    if length_ms <= 0 or length_ms % SECOND_MS:
        raise ValueError(f"a kline interval is a positive whole number of seconds, not {length_ms} ms")
    for unit in ("w", "d", "h", "m", "s"):
        if length_ms % _UNIT_MS[unit] == 0:
            return f"{length_ms // _UNIT_MS[unit]}{unit}"
    raise AssertionError("unreachable: every whole second divides by 's'")


def kline_open_time(ts_ms: int, length_ms: int) -> int:
    """The open time of the kline of length ``length_ms`` that contains ``ts_ms``."""
    origin = _WEEK_ORIGIN_MS if length_ms % WEEK_MS == 0 else 0
    return ts_ms - (ts_ms - origin) % length_ms


@dataclass(frozen=True)
class Kline:
    """One kline (candle) of a symbol: open while it is being built, closed once its interval ended."""

    symbol: str
    interval: str
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool
