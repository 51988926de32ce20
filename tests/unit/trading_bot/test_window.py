"""Which klines of a read are decisions: a backfill burst must not become a burst of intents."""

from __future__ import annotations

from decimal import Decimal

from common.contracts import MarketKline, encode
from services.trading_bot.window import decision_points


def kline(symbol: str, minute: int, closed: bool = True) -> dict[str, str]:
    return encode(MarketKline(source="marketdata", trace_id="0" * 16, symbol=symbol, interval="1m",
                              open_time=minute * 60_000, open=Decimal(100), high=Decimal(101), low=Decimal(99),
                              close=Decimal(100), volume=Decimal(1), closed=closed))


def test_only_the_newest_closed_kline_per_symbol_is_a_decision() -> None:
    """Of 200 historical klines per symbol in one read, only each symbol's newest closed one decides;
    an in-progress update after it does not count."""
    entries = [(f"{m}-{i}", kline(s, m)) for m in range(200) for i, s in enumerate(("BTCUSDT", "ETHUSDT"))]
    entries.append(("999-0", kline("BTCUSDT", 200, closed=False)))
    assert decision_points(entries, batch_full=False) == {"199-0", "199-1"}


def test_a_full_read_is_catching_up_and_decides_nothing() -> None:
    """A read that came back full has more behind it: no decision until the reader has caught up."""
    entries = [(f"{m}-0", kline("BTCUSDT", m)) for m in range(10)]
    assert decision_points(entries, batch_full=True) == set()
