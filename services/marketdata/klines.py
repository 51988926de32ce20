"""The kline builder: marketdata aggregates trade ticks into klines (the vocabulary is
:mod:`common.klines`)."""

from __future__ import annotations

from decimal import Decimal

from common.klines import Kline, interval_ms, interval_name, kline_open_time

#: at most this many flat klines are produced for one gap between ticks (older ones are skipped)
DEFAULT_MAX_GAP_KLINES = 10_000


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
