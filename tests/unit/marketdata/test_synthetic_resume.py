"""The synthetic market saved and resumed: a restart goes on from the price, regime and clock it stopped at
instead of replaying the seed's series from its start."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal

import pytest

from common.config import MarketdataSettings
from common.exchange.rules import load_rules_file
from services.marketdata.publisher import Batch
from services.marketdata.sources import SyntheticFeed, resume_origin
from services.marketdata.synthetic import SyntheticMarket, SyntheticParams
from tests.helpers import run
from tests.integration.processes import REPO

D = Decimal
MIN = 60_000
RULES = load_rules_file(REPO / "config" / "paper_symbols.json")
MD = MarketdataSettings(tick_interval_ms=50, time_factor=200, backfill_klines=45, seed=3)
PRICES = {"BTCUSDT": D("60000"), "XRPUSDT": D("0.6")}
TICKS = {"BTCUSDT": D("0.1"), "XRPUSDT": D("0.0001")}


def market(seed: int = 7) -> SyntheticMarket:
    return SyntheticMarket(PRICES, TICKS, SyntheticParams(seed=seed, tick_interval_ms=10_000))


def test_a_resumed_market_goes_on_from_its_saved_state() -> None:
    """After 500 ticks the state (through JSON) resumes a new market: its first tick is one step from the
    last price, not the seed's start again; two resumes of one state give the same continuation."""
    first = market()
    last = [t for t in first.run(0, 500)][-2:]
    saved = json.loads(json.dumps(first.state()))
    assert saved["model_ms"] == 499 * 10_000 and set(saved["symbols"]) == set(PRICES)

    fresh_start = market().next_ticks(0)
    a, b = market(), market()
    assert a.resume(saved) == ["BTCUSDT", "XRPUSDT"] and b.resume(saved) == ["BTCUSDT", "XRPUSDT"]
    next_a, next_b = a.next_ticks(500 * 10_000), b.next_ticks(500 * 10_000)
    assert next_a == next_b
    for before, after, restart in zip(last, next_a, fresh_start, strict=True):
        assert after.symbol == before.symbol == restart.symbol
        assert abs(math.log(float(after.price) / float(before.price))) < 0.02  # one ten-second step
        assert after.regime == first.regime(before.symbol)
        assert after.price != restart.price


def test_a_state_of_another_seed_or_version_is_refused() -> None:
    """A saved state belongs to its seed and format: anything else is a ValueError (a fresh start)."""
    saved = market(7)
    list(saved.run(0, 3))
    state = saved.state()
    with pytest.raises(ValueError, match="seed"):
        market(8).resume(state)
    with pytest.raises(ValueError, match="version"):
        market(7).resume({**state, "version": 99})
    with pytest.raises(ValueError, match="malformed"):
        market(7).resume({**state, "symbols": {"BTCUSDT": {"log_price": 1.0}}})


def test_resume_origin_is_the_next_kline_boundary_after_what_was_published() -> None:
    """The resumed clock starts at the saved one moved up to a kline boundary, and after the last kline
    published (a crash can lose up to a second of saved state)."""
    base = 1_800_000_000_000 - 1_800_000_000_000 % MIN
    assert resume_origin(base, MIN, None) == base
    assert resume_origin(base + 1, MIN, None) == base + MIN
    assert resume_origin(base + 30_000, MIN, base) == base + MIN
    assert resume_origin(base + 30_000, MIN, base + 3 * MIN) == base + 4 * MIN


def test_a_feed_resumes_without_a_second_warm_up_and_saves_at_stop() -> None:
    """A feed built from another feed's snapshot skips the warm-up, ticks on a later clock from the saved
    prices, and its batches() saves a snapshot at least every second and when it stops."""
    origin = 1_800_000_000_000 - 1_800_000_000_000 % MIN
    first = SyntheticFeed(["BTCUSDT", "XRPUSDT"], RULES, MD, origin_ms=origin)
    first.warmup()
    for _ in range(37):
        batch = first.step()
    last_prices = {t.symbol: t.price for t in batch.ticks}
    last_open = max(k.open_time for k in batch.klines)
    snapshot = json.loads(first.snapshot())

    saves: list[str] = []

    async def save(text: str) -> None:
        saves.append(text)

    resumed = SyntheticFeed(["BTCUSDT", "XRPUSDT"], RULES, MD, origin_ms=origin, saved=snapshot,
                            last_open_time=last_open, save=save)
    assert resumed.resumed == ["BTCUSDT", "XRPUSDT"] and resumed.warmup_klines == 0
    assert resumed.now > first.now - MD.tick_interval_ms * MD.time_factor and resumed.now % MIN == 0
    assert resumed.now > last_open

    start = resumed.now

    async def two_rounds() -> list[Batch]:
        stop = asyncio.Event()
        seen = []
        async for b in resumed.batches(stop):
            seen.append(b)
            if len(seen) == 2:
                stop.set()
        return seen

    rounds = run(two_rounds())
    assert all(k.open_time >= start for b in rounds for k in b.klines)  # on the resumed clock
    for symbol, price in {t.symbol: t.price for t in rounds[0].ticks}.items():
        assert abs(math.log(float(price) / float(last_prices[symbol]))) < 0.02
    assert len(saves) >= 2  # one after the first round, one at the stop
    final = json.loads(saves[-1])
    assert final["now"] == resumed.now and final["market"]["symbols"].keys() == {"BTCUSDT", "XRPUSDT"}

    fresh = SyntheticFeed(["BTCUSDT"], RULES, MD, origin_ms=origin, saved={"now": "x"})
    assert fresh.resumed == [] and fresh.warmup_klines == 45  # an unreadable state: a fresh start
