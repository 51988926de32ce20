"""The seeded regime-switching tick generator (services.marketdata.synthetic)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from services.marketdata.klines import KlineBuilder
from services.marketdata.synthetic import (
    DEFAULT_REGIMES,
    Regime,
    RegimeParams,
    SyntheticMarket,
    SyntheticParams,
    SyntheticTick,
    symbol_seed,
)

D = Decimal
PRICES = {"BTCUSDT": D("60000"), "ANKRUSDT": D("0.02"), "币安人生USDT": D("0.15")}
TICKS = {"BTCUSDT": D("0.10"), "ANKRUSDT": D("0.000010"), "币安人生USDT": D("0.00010")}
REPO = Path(__file__).resolve().parents[3]


def _series(market: SyntheticMarket, steps: int, symbol: str | None = None) -> list[SyntheticTick]:
    return [t for t in market.run(0, steps) if symbol is None or t.symbol == symbol]


def test_same_seed_gives_the_same_ticks() -> None:
    """Two markets with the same seed produce identical ticks; a different seed produces others."""
    a = _series(SyntheticMarket(PRICES, TICKS, SyntheticParams(seed=7)), 3_000)
    b = _series(SyntheticMarket(PRICES, TICKS, SyntheticParams(seed=7)), 3_000)
    c = _series(SyntheticMarket(PRICES, TICKS, SyntheticParams(seed=8)), 3_000)

    assert a == b
    assert len(a) == 9_000
    assert [t.price for t in a] != [t.price for t in c]


def test_series_is_stable_across_interpreters() -> None:
    """The series does not depend on the interpreter's hash seed (no hash()): a fresh Python agrees."""
    code = ("import json; from decimal import Decimal as D;"
            "from services.marketdata.synthetic import SyntheticMarket, SyntheticParams;"
            "m = SyntheticMarket({'ETHUSDT': D('3000')}, {'ETHUSDT': D('0.01')}, SyntheticParams(seed=3));"
            "print(json.dumps([str(t.price) for t in m.run(0, 200)]))")
    here = [str(t.price) for t in SyntheticMarket({"ETHUSDT": D("3000")}, {"ETHUSDT": D("0.01")},
                                                  SyntheticParams(seed=3)).run(0, 200)]
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                             text=True, check=True, timeout=60)
        assert json.loads(out.stdout) == here
    digest = hashlib.sha256(b"3|ETHUSDT").digest()
    assert symbol_seed(3, "ETHUSDT") == int.from_bytes(digest[:16], "big")


def test_adding_a_symbol_leaves_the_others_unchanged() -> None:
    """BTCUSDT's series is the same whether it is generated alone or beside other symbols."""
    alone = SyntheticMarket({"BTCUSDT": PRICES["BTCUSDT"]}, TICKS, SyntheticParams(seed=11))
    together = SyntheticMarket({"ANKRUSDT": PRICES["ANKRUSDT"], **PRICES}, TICKS, SyntheticParams(seed=11))

    assert _series(alone, 2_000) == _series(together, 2_000, "BTCUSDT")


def test_prices_are_on_the_tick_grid_and_positive() -> None:
    """Trade and mark prices are positive multiples of each symbol's tick size, even near one tick."""
    prices = {**PRICES, "DUSTUSDT": D("0.0003")}
    ticks = {**TICKS, "DUSTUSDT": D("0.0001")}
    wild = {r: RegimeParams(drift_per_min=-0.01, vol_per_min=0.05, mean_duration_ms=600_000) for r in Regime}
    for params in (SyntheticParams(seed=1), SyntheticParams(seed=2, regimes=wild, jump_prob=0.01)):
        for tick in SyntheticMarket(prices, ticks, params).run(0, 3_000):
            size = ticks[tick.symbol]
            assert tick.price > 0 and tick.mark_price > 0 and tick.qty > 0
            assert tick.price % size == 0
            assert tick.mark_price % size == 0


def test_mark_price_has_a_tiny_deterministic_basis() -> None:
    """The mark price stays within the configured basis of the trade price and is not always equal to it."""
    params = SyntheticParams(seed=5, mark_basis_bp=2.0)
    ticks = _series(SyntheticMarket({"BTCUSDT": D("60000")}, TICKS, params), 20_000)

    ratios = [abs(t.mark_price / t.price - 1) for t in ticks]
    assert max(ratios) <= D("0.00021")
    assert sum(1 for t in ticks if t.mark_price != t.price) > 10_000


def test_ticks_carry_their_time_and_regime() -> None:
    """Each tick is stamped with the ts it was asked for, and regime() is the label of the last tick."""
    market = SyntheticMarket(PRICES, TICKS, SyntheticParams(seed=4, initial_regime=Regime.VOLATILE))

    first = market.next_ticks(1_000)

    assert [t.ts for t in first] == [1_000] * 3
    assert {t.regime for t in first} == {Regime.VOLATILE}
    assert market.regime("BTCUSDT") is Regime.VOLATILE
    with pytest.raises(ValueError):
        market.next_ticks(999)


def _regime_klines() -> dict[Regime, list[float]]:
    """One-minute log returns (close/open) of the klines whose ticks all share one regime, 3 days at 5 s."""
    market = SyntheticMarket({"BTCUSDT": D("60000")}, TICKS, SyntheticParams(seed=21, tick_interval_ms=5_000))
    builder = KlineBuilder("BTCUSDT", 60_000)
    labels: dict[int, set[Regime]] = defaultdict(set)
    returns: dict[Regime, list[float]] = defaultdict(list)
    for tick in market.run(0, 3 * 24 * 720):
        for kline in builder.add(tick.ts, tick.price, tick.qty):
            regimes = labels.pop(kline.open_time)
            if len(regimes) == 1:
                returns[regimes.pop()].append(math.log(kline.close / kline.open))
        labels[tick.ts - tick.ts % 60_000].add(tick.regime)
    return returns


@pytest.fixture(scope="module")
def regime_returns() -> dict[Regime, list[float]]:
    return _regime_klines()


def test_every_regime_appears_over_a_long_run(regime_returns: dict[Regime, list[float]]) -> None:
    """Over three days every regime shows up for at least a hundred one-minute klines."""
    assert {r: len(regime_returns[r]) >= 100 for r in Regime} == {r: True for r in Regime}


def test_trending_regimes_have_the_sign_of_their_trend(regime_returns: dict[Regime, list[float]]) -> None:
    """Klines made while trending up have a positive mean return, trending down a negative one."""
    up = statistics.fmean(regime_returns[Regime.TRENDING_UP])
    down = statistics.fmean(regime_returns[Regime.TRENDING_DOWN])

    assert up > 0.0001  # 1 bp per minute; the default drift is 3 bp
    assert down < -0.0001


def test_volatile_regime_is_more_volatile_than_ranging(regime_returns: dict[Regime, list[float]]) -> None:
    """The realized volatility of volatile klines is well above that of ranging klines."""
    volatile = statistics.pstdev(regime_returns[Regime.VOLATILE])
    ranging = statistics.pstdev(regime_returns[Regime.RANGING])

    assert volatile > 2.5 * ranging


def _max_excursion(reversion_per_min: float) -> float:
    """The largest |log(price / start)| over six hours spent ranging (seed 0, no jumps)."""
    regimes = {**DEFAULT_REGIMES,
               Regime.RANGING: RegimeParams(0.0, 0.0008, 1_000 * 3_600_000, reversion_per_min)}
    params = SyntheticParams(seed=0, initial_regime=Regime.RANGING, jump_prob=0.0, regimes=regimes)
    ticks = _series(SyntheticMarket({"BTCUSDT": D("60000")}, TICKS, params), 6 * 3_600)
    assert {t.regime for t in ticks} == {Regime.RANGING}
    return max(abs(math.log(t.price / D("60000"))) for t in ticks)


def test_ranging_regime_reverts_to_where_it_started() -> None:
    """While ranging, the price stays near where the range began; the same noise without reversion wanders."""
    reverting = _max_excursion(0.05)
    wandering = _max_excursion(0.0)

    # sigma / sqrt(2 * kappa) = 0.0008 / sqrt(0.1) = 0.25 % is the stationary spread
    assert reverting < 0.012
    assert wandering > 2 * reverting


def test_jumps_occur_at_the_configured_rate_and_size() -> None:
    """With jump_prob 0.002 per tick about 0.2 % of ticks jump, by about jump_size on average."""
    params = SyntheticParams(seed=13, jump_prob=0.002, jump_size=0.02)
    ticks = _series(SyntheticMarket({"BTCUSDT": D("60000")}, TICKS, params), 50_000)

    jumps = [i for i, t in enumerate(ticks) if t.jump]
    sizes = [abs(math.log(ticks[i].price / ticks[i - 1].price)) for i in jumps if i > 0]
    assert 70 <= len(jumps) <= 130  # expected 100; the Poisson sd is 10
    assert 0.014 <= statistics.fmean(sizes) <= 0.026


def test_no_jumps_when_the_probability_is_zero() -> None:
    """jump_prob = 0 turns jumps off."""
    ticks = _series(SyntheticMarket(PRICES, TICKS, SyntheticParams(seed=1, jump_prob=0.0)), 20_000)

    assert not any(t.jump for t in ticks)


@pytest.mark.parametrize("bad", [
    {"tick_interval_ms": 0}, {"jump_prob": 1.0}, {"jump_size": -0.1}, {"mark_basis_bp": -1.0},
    {"regimes": {Regime.RANGING: RegimeParams(0.0, 0.001, 60_000)}},
])
def test_invalid_params_are_rejected(bad: dict[str, object]) -> None:
    """Settings outside their range raise ValueError when the params are made."""
    with pytest.raises(ValueError):
        SyntheticParams(**bad)  # type: ignore[arg-type]  # deliberately loose for the table


def test_symbol_without_tick_size_is_rejected() -> None:
    """Every generated symbol needs a tick size; a missing one is named in the error."""
    with pytest.raises(ValueError, match="SOLUSDT"):
        SyntheticMarket({"SOLUSDT": D("150")}, TICKS)
