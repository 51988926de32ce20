"""The Binance source's pure parts: counting the klines missing between two closed ones."""

from __future__ import annotations

from services.marketdata.binance_source import missing_klines


def test_missing_klines_counts_the_gap_and_flags_repeats() -> None:
    """The next kline: no gap; three intervals on: two missing; the same or an older one: a repeat."""
    assert missing_klines(None, 120_000, 60_000) == 0
    assert missing_klines(60_000, 120_000, 60_000) == 0
    assert missing_klines(60_000, 240_000, 60_000) == 2
    assert missing_klines(120_000, 120_000, 60_000) == -1
    assert missing_klines(120_000, 60_000, 60_000) == -1
