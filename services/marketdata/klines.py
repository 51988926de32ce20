"""Klines: Binance interval names, and the builder that aggregates trade ticks into klines.

A kline covers ``[open_time, open_time + interval_ms)``; ``open_time`` is aligned to the interval
on the epoch (``ts - ts % interval_ms``), except week-multiples, which Binance opens on Monday
00:00 UTC (the epoch fell on a Thursday).
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

#: at most this many flat klines are produced for one gap between ticks (older ones are skipped)
DEFAULT_MAX_GAP_KLINES = 10_000


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


class KlineBuilder:
    """Aggregate the trade ticks of one symbol into klines of one interval.

    Ticks come in time order. A tick past the current kline closes it; when ticks skip whole
    intervals, each skipped interval is a flat kline at the last close with zero volume (as the
    exchange publishes them). A tick older than the current kline is late: it is counted in
    ``late_ticks`` and ignored, since the kline it belongs to has already been published closed.
    """

    def __init__(self, symbol: str, interval_ms: int, *, max_gap_klines: int = DEFAULT_MAX_GAP_KLINES
                 ) -> None:
        self.symbol = symbol
        self.interval = interval_name(interval_ms)
        self.interval_ms = interval_ms
        self.max_gap_klines = max_gap_klines
        #: ticks ignored because their kline was already closed
        self.late_ticks = 0
        #: flat gap klines not produced because a gap exceeded ``max_gap_klines``
        self.skipped_gap_klines = 0
        self._open_time: int | None = None
        self._traded = False
        self._last_ts = 0
        self._open = self._high = self._low = self._close = Decimal(0)
        self._volume = Decimal(0)

    @classmethod
    def for_interval(cls, symbol: str, interval: str, *, max_gap_klines: int = DEFAULT_MAX_GAP_KLINES
                     ) -> KlineBuilder:
        """A builder for a Binance interval name such as ``"1m"``."""
        return cls(symbol, interval_ms(interval), max_gap_klines=max_gap_klines)

    def add(self, ts_ms: int, price: Decimal, qty: Decimal) -> list[Kline]:
        """Add one trade; return the klines it closed (oldest first), usually none."""
        if not price > 0:
            raise ValueError(f"{self.symbol}: tick price must be positive, got {price}")
        if qty < 0:
            raise ValueError(f"{self.symbol}: tick quantity must not be negative, got {qty}")
        if self._open_time is None:
            self._start(kline_open_time(ts_ms, self.interval_ms), price)
            closed: list[Kline] = []
        elif ts_ms < self._open_time:
            self.late_ticks += 1
            return []
        else:
            closed = self._roll(ts_ms)
        if not self._traded:
            self._open = self._high = self._low = self._close = price
            self._traded = True
            self._last_ts = ts_ms
        else:
            if price > self._high:
                self._high = price
            elif price < self._low:
                self._low = price
            if ts_ms >= self._last_ts:
                self._close = price
                self._last_ts = ts_ms
        self._volume += qty
        return closed

    def advance(self, now_ms: int) -> list[Kline]:
        """Close the klines that ended by ``now_ms`` although no tick came after them.

        The kline containing ``now_ms`` becomes the current one, flat at the last close until a
        tick arrives. Before the first tick there is nothing to close.
        """
        if self._open_time is None or now_ms < self._open_time:
            return []
        return self._roll(now_ms)

    def current(self) -> Kline | None:
        """The kline being built (``closed=False``), or None before the first tick."""
        if self._open_time is None:
            return None
        return self._kline(self._open_time, closed=False)

    def _start(self, open_time: int, price: Decimal) -> None:
        self._open_time = open_time
        self._open = self._high = self._low = self._close = price
        self._volume = Decimal(0)
        self._traded = False

    def _kline(self, open_time: int, *, closed: bool) -> Kline:
        return Kline(self.symbol, self.interval, open_time, self._open, self._high, self._low,
                     self._close, self._volume, closed)

    def _roll(self, ts_ms: int) -> list[Kline]:
        """Close the current kline and the empty ones after it, up to the kline holding ``ts_ms``."""
        assert self._open_time is not None
        target = kline_open_time(ts_ms, self.interval_ms)
        if target <= self._open_time:
            return []
        closed = [self._kline(self._open_time, closed=True)]
        step = self.interval_ms
        first_gap = self._open_time + step
        gap_count = (target - first_gap) // step
        if gap_count > self.max_gap_klines:
            self.skipped_gap_klines += gap_count - self.max_gap_klines
            first_gap = target - self.max_gap_klines * step
        last = self._close
        for open_time in range(first_gap, target, step):
            closed.append(Kline(self.symbol, self.interval, open_time, last, last, last, last,
                                Decimal(0), True))
        self._start(target, last)
        return closed
