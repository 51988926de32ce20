"""The synthetic feed's clock, warm-up and start prices, and the replay feed's pacing."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

from common.config import MarketdataSettings
from common.exchange.rules import load_rules_file
from services.marketdata.publisher import Batch
from services.marketdata.replay import ReplaySource
from services.marketdata.sources import ReplayFeed, SyntheticFeed, start_prices, synthetic_origin
from tests.helpers import run
from tests.integration.processes import REPO

D = Decimal
MIN = 60_000
RULES = load_rules_file(REPO / "config" / "paper_symbols.json")
MD = MarketdataSettings(tick_interval_ms=50, time_factor=200, backfill_klines=45, seed=3)


def test_synthetic_origin_is_aligned_before_now_and_after_what_was_published() -> None:
    """The clock starts ``warmup`` klines before now on a kline boundary, and after the last kline
    already published when that is later (a restart of a clock that ran ahead)."""
    now = 1_800_000_012_345
    aligned = now - now % MIN
    assert synthetic_origin(now, MIN, 10, None) == aligned - 10 * MIN
    assert synthetic_origin(now, MIN, 10, aligned - 20 * MIN) == aligned - 10 * MIN
    assert synthetic_origin(now, MIN, 10, aligned + 7 * MIN) == aligned + 8 * MIN


def test_start_prices_come_from_settings_on_the_tick_grid_or_ten_thousand_ticks() -> None:
    """Configured prices are rounded to the tick; a symbol without one starts at 10,000 ticks."""
    prices = start_prices(["BTCUSDT", "ANKRUSDT"], RULES, {"BTCUSDT": D("60000.04")})
    assert prices == {"BTCUSDT": D("60000.0"), "ANKRUSDT": D("0.1")}


def test_warmup_publishes_the_history_then_live_rounds_tick_every_symbol() -> None:
    """Warm-up: exactly ``backfill_klines`` closed klines per symbol, contiguous and ending where live
    data starts; then each round has one tick per symbol and each symbol's current kline."""
    origin = 1_800_000_000_000 - 1_800_000_000_000 % MIN
    feed = SyntheticFeed(["BTCUSDT", "币安人生USDT", "NOPEUSDT"], RULES, MD, origin_ms=origin)
    assert feed.symbols == ["BTCUSDT", "币安人生USDT"]  # a symbol without rules is left out
    warm = feed.warmup()
    assert not warm.ticks
    for symbol in feed.symbols:
        opens = [k.open_time for k in warm.klines if k.symbol == symbol]
        assert opens == [origin + i * MIN for i in range(45)]
    live = feed.step()
    assert [t.symbol for t in live.ticks] == feed.symbols
    assert [(k.symbol, k.open_time, k.closed) for k in live.klines] == [
        ("BTCUSDT", origin + 45 * MIN, False), ("币安人生USDT", origin + 45 * MIN, False)]
    assert feed.step_ms == 10_000


def test_the_series_depends_on_the_seed_not_on_the_clock() -> None:
    """Two feeds of one seed at different origins tick the same prices and marks."""
    a = SyntheticFeed(["BTCUSDT"], RULES, MD, origin_ms=0)
    b = SyntheticFeed(["BTCUSDT"], RULES, MD, origin_ms=3_600_000 * 5)
    ticks_a = [t for _ in range(30) for t in a.step().ticks]
    ticks_b = [t for _ in range(30) for t in b.step().ticks]
    assert ticks_a == ticks_b and len({t.price for t in ticks_a}) > 3


def test_replay_at_a_speed_paces_the_klines(tmp_path: Path) -> None:
    """At 600x, three 1m klines take about 0.3 s: the third closes ~0.2 s after the first."""
    t0 = 1_700_000_040_000
    rows = [[t0 + i * MIN, "1.0", "1.2", "0.9", "1.1", "5"] for i in range(3)]
    (tmp_path / "k.json").write_text(json.dumps(rows))
    feed = ReplayFeed(ReplaySource(tmp_path / "k.json", "XRPUSDT", "1m", 600))

    async def collect() -> list[tuple[float, Batch]]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        out: list[tuple[float, Batch]] = []
        start = loop.time()
        async for batch in feed.batches(stop):
            out.append((loop.time() - start, batch))
            if feed.finished:
                stop.set()
        return out

    out = run(collect())
    closes = [at for at, b in out if b.klines]
    assert len(closes) == 3
    assert 0.08 < closes[0] < 0.2 and 0.28 < closes[2] < 0.45
    assert sum(len(b.ticks) for _, b in out) == 12
