"""Which klines of a read are decisions: a backfill burst must not become a burst of intents."""

from __future__ import annotations

from decimal import Decimal

from common.contracts import MarketKline, encode
from services.trading_bot.window import DecisionPoints


def kline(symbol: str, minute: int, closed: bool = True) -> dict[str, str]:
    return encode(MarketKline(source="marketdata", trace_id="0" * 16, symbol=symbol, interval="1m",
                              open_time=minute * 60_000, open=Decimal(100), high=Decimal(101), low=Decimal(99),
                              close=Decimal(100), volume=Decimal(1), closed=closed))


def test_only_the_newest_closed_kline_per_symbol_is_a_decision() -> None:
    """Of 200 historical klines per symbol in one read, only each symbol's newest closed one decides;
    an in-progress update after it does not count."""
    entries = [(f"{m}-{i}", kline(s, m)) for m in range(200) for i, s in enumerate(("BTCUSDT", "ETHUSDT"))]
    entries.append(("999-0", kline("BTCUSDT", 200, closed=False)))
    assert DecisionPoints().of(entries, full=False) == ({"199-0", "199-1"}, [])


def test_a_full_read_is_catching_up_and_decides_nothing_yet() -> None:
    """A read that came back full has more behind it: no decision until the reader has caught up."""
    entries = [(f"{m}-0", kline("BTCUSDT", m)) for m in range(10)]
    assert DecisionPoints().of(entries, full=True) == (set(), [])


def test_symbols_of_a_full_read_are_decided_once_the_reads_catch_up() -> None:
    """580 symbols close at once and a read takes 500: the first read is full, the second is not. Every
    symbol is decided once — the 80 of the second read as they come, the 500 of the first held until then
    — and a symbol that got a newer kline in the second read is decided on that one only."""
    symbols = [f"S{i:03d}USDT" for i in range(580)]
    first = [(f"{i}-0", kline(s, 1)) for i, s in enumerate(symbols[:500])]
    second = [(f"{600 + i}-0", kline(s, 1)) for i, s in enumerate(symbols[500:])]
    second.append(("1200-0", kline("S007USDT", 2)))
    points = DecisionPoints()
    assert points.of(first, full=True) == (set(), [])
    decide, held = points.of(second, full=False)
    assert decide == {e for e, _ in second}
    assert {e for e, _ in held} == {e for e, _ in first} - {"7-0"}
    assert points.of([], full=False) == (set(), [])  # decided once
