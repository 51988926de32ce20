"""The kline builder and Binance interval names (services.marketdata.klines)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from common.klines import BINANCE_INTERVALS, Kline, interval_ms, interval_name, kline_open_time
from services.marketdata.klines import KlineBuilder

D = Decimal
T0 = 1_699_999_980_000  # a minute boundary (2023-11-14 22:13 UTC)


def _kline(open_time: int, o: str, h: str, low: str, c: str, v: str, closed: bool = True) -> Kline:
    return Kline("BTCUSDT", "1m", open_time, D(o), D(h), D(low), D(c), D(v), closed)


@pytest.mark.parametrize(("name", "expected"), [
    ("1s", 1_000), ("1m", 60_000), ("3m", 180_000), ("15m", 900_000), ("1h", 3_600_000),
    ("4h", 14_400_000), ("12h", 43_200_000), ("1d", 86_400_000), ("3d", 259_200_000), ("1w", 604_800_000),
])
def test_interval_ms_parses_binance_intervals(name: str, expected: int) -> None:
    """Binance interval names convert to their length in milliseconds."""
    assert interval_ms(name) == expected


@pytest.mark.parametrize("name", ["1M", "m", "0m", "1x", "1.5h", " 1m", ""])
def test_interval_ms_rejects_malformed_and_monthly(name: str) -> None:
    """A malformed interval, or a calendar month (no fixed length), is a ValueError."""
    with pytest.raises(ValueError):
        interval_ms(name)


def test_interval_name_round_trips_every_fixed_binance_interval() -> None:
    """interval_name(interval_ms(x)) == x for every Binance interval except the month."""
    for name in BINANCE_INTERVALS:
        if name != "1M":
            assert interval_name(interval_ms(name)) == name
    assert interval_name(90_000) == "90s"


def test_weekly_klines_open_on_monday() -> None:
    """Week-long klines are aligned to Monday 00:00 UTC, as Binance's are; shorter ones to the epoch."""
    thursday_noon = int(datetime(2024, 3, 14, 12, tzinfo=UTC).timestamp() * 1000)
    monday = int(datetime(2024, 3, 11, tzinfo=UTC).timestamp() * 1000)
    assert kline_open_time(thursday_noon, interval_ms("1w")) == monday
    assert kline_open_time(T0 + 59_999, 60_000) == T0


def test_ticks_in_one_interval_aggregate_into_ohlcv() -> None:
    """Ticks within one minute give open = first, high/low = extremes, close = last, volume = sum."""
    builder = KlineBuilder("BTCUSDT", 60_000)
    closed = []
    for offset, price, qty in [(5_000, "100.0", "1"), (10_000, "101.5", "2"), (20_000, "99.5", "0.5"),
                               (59_999, "100.5", "1.25")]:
        closed += builder.add(T0 + offset, D(price), D(qty))
    assert closed == []
    assert builder.current() == _kline(T0, "100.0", "101.5", "99.5", "100.5", "4.75", closed=False)


def test_no_kline_before_the_first_tick() -> None:
    """current() is None and advance() closes nothing until a tick arrives."""
    builder = KlineBuilder.for_interval("BTCUSDT", "1m")
    assert builder.current() is None
    assert builder.advance(T0) == []


def test_crossing_the_boundary_closes_the_kline() -> None:
    """The first tick of the next minute returns the previous kline closed and opens a new one."""
    builder = KlineBuilder("BTCUSDT", 60_000)
    builder.add(T0 + 1_000, D("10"), D("1"))
    builder.add(T0 + 30_000, D("12"), D("1"))

    closed = builder.add(T0 + 60_000, D("11"), D("3"))

    assert closed == [_kline(T0, "10", "12", "10", "12", "2")]
    assert builder.current() == _kline(T0 + 60_000, "11", "11", "11", "11", "3", closed=False)


def test_skipped_intervals_become_flat_klines_at_the_last_close() -> None:
    """A tick three minutes later closes the kline plus two flat, zero-volume klines at the last close."""
    builder = KlineBuilder("BTCUSDT", 60_000)
    builder.add(T0, D("10"), D("1"))
    builder.add(T0 + 10_000, D("9"), D("1"))

    closed = builder.add(T0 + 3 * 60_000 + 5, D("15"), D("2"))

    assert closed == [
        _kline(T0, "10", "10", "9", "9", "2"),
        _kline(T0 + 60_000, "9", "9", "9", "9", "0"),
        _kline(T0 + 120_000, "9", "9", "9", "9", "0"),
    ]
    assert builder.current() == _kline(T0 + 180_000, "15", "15", "15", "15", "2", closed=False)


def test_advance_closes_klines_without_a_new_tick() -> None:
    """advance(now) closes the klines that ended; the next tick sets the open of the flat current one."""
    builder = KlineBuilder("BTCUSDT", 60_000)
    builder.add(T0, D("10"), D("1"))

    closed = builder.advance(T0 + 2 * 60_000)

    assert closed == [_kline(T0, "10", "10", "10", "10", "1"), _kline(T0 + 60_000, "10", "10", "10", "10", "0")]
    assert builder.current() == _kline(T0 + 120_000, "10", "10", "10", "10", "0", closed=False)
    assert builder.add(T0 + 130_000, D("11"), D("1")) == []
    assert builder.current() == _kline(T0 + 120_000, "11", "11", "11", "11", "1", closed=False)


def test_late_tick_is_counted_and_ignored() -> None:
    """A tick older than the current kline does not reopen a closed kline; it is counted."""
    builder = KlineBuilder("BTCUSDT", 60_000)
    builder.add(T0 + 60_000, D("10"), D("1"))

    assert builder.add(T0 + 59_000, D("50"), D("9")) == []

    assert builder.late_ticks == 1
    assert builder.current() == _kline(T0 + 60_000, "10", "10", "10", "10", "1", closed=False)


def test_out_of_order_tick_within_the_kline_does_not_become_the_close() -> None:
    """Inside a kline, an older tick counts for high/low/volume but the close stays the latest trade."""
    builder = KlineBuilder("BTCUSDT", 60_000)
    builder.add(T0 + 10_000, D("10"), D("1"))
    builder.add(T0 + 30_000, D("11"), D("1"))
    builder.add(T0 + 20_000, D("13"), D("1"))

    assert builder.current() == _kline(T0, "10", "13", "10", "11", "3", closed=False)


def test_long_gap_is_capped() -> None:
    """A gap longer than max_gap_klines yields only the last max_gap_klines flat klines and counts the rest."""
    builder = KlineBuilder("BTCUSDT", 60_000, max_gap_klines=3)
    builder.add(T0, D("10"), D("1"))

    closed = builder.add(T0 + 10 * 60_000, D("10"), D("1"))

    assert [k.open_time for k in closed] == [T0, T0 + 7 * 60_000, T0 + 8 * 60_000, T0 + 9 * 60_000]
    assert builder.skipped_gap_klines == 6


@pytest.mark.parametrize(("price", "qty"), [("0", "1"), ("-1", "1"), ("1", "-0.1")])
def test_rejects_non_positive_price_and_negative_qty(price: str, qty: str) -> None:
    """A tick with a price <= 0 or a negative quantity is a ValueError, not a corrupt kline."""
    with pytest.raises(ValueError):
        KlineBuilder("BTCUSDT", 60_000).add(T0, D(price), D(qty))
