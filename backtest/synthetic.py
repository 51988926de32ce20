"""Generated klines for tests, the benchmark and demonstrations: a seeded market per symbol that trends,
reverts and chops in turn, on a tick grid, with the symbol rules and policy to trade it.

Each kline is built from ``substeps`` log-normal moves (its open is the previous close, its high and
low the extremes of the moves); the drift and the volatility change with a regime drawn every
``regime_klines`` klines on average. Nothing here is used by the fleet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from common.contracts.base import plain_decimal
from common.exchange.rules import LeverageBracket, SymbolRules
from common.klines import Kline, interval_ms

#: 2024-01-01T00:00:00Z
DEFAULT_START_MS = 1_704_067_200_000


@dataclass(frozen=True)
class MarketParams:
    """The generator's constants (per kline, in log terms)."""

    start_price: float = 100.0
    #: volatility of a kline in the calm regime
    sigma: float = 0.003
    #: drift of a kline in a trend (either way)
    trend_drift: float = 0.0004
    #: pull back toward the regime's level in mean reversion (fraction of the gap per kline)
    reversion: float = 0.08
    regime_klines: int = 120
    substeps: int = 6
    tick: str = "0.01"
    volume: float = 1000.0


def symbols(count: int) -> list[str]:
    """``GEN00USDT``, ``GEN01USDT``, ... (names no exchange lists: nobody mistakes them for a market)."""
    return [f"GEN{i:02d}USDT" for i in range(count)]


def generate(symbol: str, count: int, *, interval: str = "5m", seed: int = 0, start_ms: int = DEFAULT_START_MS,
             params: MarketParams = MarketParams()) -> list[Kline]:
    """``count`` closed klines of ``symbol`` from ``start_ms`` (aligned to the interval)."""
    length = interval_ms(interval)
    start = start_ms - start_ms % length
    rng = np.random.default_rng([seed, sum(symbol.encode())])
    steps = params.substeps
    n = count * steps
    # regimes: 0 calm, 1 trend up, 2 trend down, 3 reversion, 4 chop (wide, driftless)
    changes = rng.random(count) < 1.0 / params.regime_klines
    regime_ids = np.cumsum(changes)
    draws = rng.integers(0, 5, size=int(regime_ids[-1]) + 1)
    regime = np.repeat(draws[regime_ids], steps)
    sub_sigma = params.sigma / np.sqrt(steps)
    vol = np.where(regime == 4, 2.0 * sub_sigma, np.where(regime == 0, sub_sigma, 1.3 * sub_sigma))
    drift = np.where(regime == 1, params.trend_drift / steps, np.where(regime == 2, -params.trend_drift / steps, 0.0))
    shocks = rng.standard_normal(n) * vol + drift
    log_price = np.empty(n)
    level = current = float(np.log(params.start_price))
    last_regime = -1
    for i in range(n):
        if regime[i] != last_regime:
            last_regime, level = int(regime[i]), current
        pull = params.reversion / steps * (level - current) if regime[i] == 3 else 0.0
        current += shocks[i] + pull
        log_price[i] = current
    prices = np.exp(log_price).reshape(count, steps)
    closes = prices[:, -1]
    opens = np.concatenate(([params.start_price], closes[:-1]))
    highs = np.maximum(prices.max(axis=1), opens)
    lows = np.minimum(prices.min(axis=1), opens)
    volumes = params.volume * (1.0 + rng.random(count))
    tick = Decimal(params.tick)
    places = -tick.as_tuple().exponent  # type: ignore[operator]

    def price(x: float) -> Decimal:
        return max(tick, Decimal(f"{x:.{places}f}"))

    klines = []
    for i in range(count):
        o, c = price(opens[i]), price(closes[i])
        h, lo = max(price(highs[i]), o, c), min(price(lows[i]), o, c)
        klines.append(Kline(symbol, interval, start + i * length, o, h, lo, c, Decimal(f"{volumes[i]:.3f}"), True))
    return klines


def market(count: int, klines_each: int, *, interval: str = "5m", seed: int = 0,
           start_ms: int = DEFAULT_START_MS) -> dict[str, list[Kline]]:
    """``count`` symbols of ``klines_each`` klines each, every one its own market."""
    return {s: generate(s, klines_each, interval=interval, seed=seed, start_ms=start_ms) for s in symbols(count)}


def rules_for(names: Sequence[str], tick: str = "0.01") -> dict[str, SymbolRules]:
    """Binance-like rules for generated symbols: the tick of the generator, a 0.001 step, a 5 USDT
    minimum notional and 20x at most."""
    return {s: SymbolRules(symbol=s, status="TRADING", tick_size=Decimal(tick), step_size=Decimal("0.001"),
                           min_qty=Decimal("0.001"), max_qty=Decimal("100000"), market_max_qty=Decimal("10000"),
                           min_notional=Decimal("5"), max_leverage=20,
                           leverage_brackets=(LeverageBracket(Decimal("1000000"), 20),)) for s in names}


def write_klines(directory: Path, klines: dict[str, list[Kline]]) -> list[Path]:
    """One JSON kline file per symbol, named as freqtrade names futures data (``GEN00_USDT_USDT-5m-futures.json``
    for ``GEN00USDT``, so the name gives the symbol and interval): the 6-column rows."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for symbol, series in klines.items():
        path = directory / f"{symbol.removesuffix('USDT')}_USDT_USDT-{series[0].interval}-futures.json"
        rows = ",\n".join(
            f"[{k.open_time},{k.open},{k.high},{k.low},{k.close},{k.volume}]" for k in series)
        path.write_text(f"[\n{rows}\n]\n", encoding="utf-8")
        paths.append(path)
    return paths


def write_config(directory: Path, names: Sequence[str]) -> Path:
    """A settings file for ``--config`` whose config directory holds the generated symbols' rules (an
    exchangeInfo-shaped ``paper_symbols.json``) and a ``policy.toml`` that allows them; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    brackets = []
    for s, r in rules_for(names).items():
        entries.append({
            "symbol": s, "pair": s, "contractType": "PERPETUAL", "status": r.status, "baseAsset": s[:-4],
            "quoteAsset": "USDT", "marginAsset": "USDT",
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000",
                 "tickSize": plain_decimal(r.tick_size)},
                {"filterType": "LOT_SIZE", "minQty": plain_decimal(r.min_qty), "maxQty": plain_decimal(r.max_qty),
                 "stepSize": plain_decimal(r.step_size)},
                {"filterType": "MARKET_LOT_SIZE", "minQty": plain_decimal(r.min_qty),
                 "maxQty": plain_decimal(r.market_max_qty), "stepSize": plain_decimal(r.step_size)},
                {"filterType": "MIN_NOTIONAL", "notional": plain_decimal(r.min_notional)},
            ]})
        brackets.append({"symbol": s, "brackets": [
            {"bracket": 1, "initialLeverage": r.max_leverage, "notionalCap": 1000000, "notionalFloor": 0,
             "maintMarginRatio": 0.004, "cum": 0.0}]})
    (directory / "paper_symbols.json").write_text(
        json.dumps({"_comment": "generated symbols (backtest.synthetic)", "symbols": entries,
                    "leverageBracket": brackets}, indent=1), encoding="utf-8")
    allow = ", ".join(json.dumps(s) for s in names)
    (directory / "policy.toml").write_text(
        f"# generated symbols (backtest.synthetic)\nallowlist = [{allow}]\n\n[limits]\n"
        'max_open_positions = 5\nmax_margin_per_trade_usd = "500"\nmax_total_notional_usd = "25000"\n'
        'max_leverage = 20\ndaily_loss_limit_pct = "5"\nmax_drawdown_pct = "15"\n', encoding="utf-8")
    settings = directory / "backtest.toml"
    settings.write_text(f'# qt backtest --config {settings}\nconfig_dir = {json.dumps(str(directory))}\n'
                        f'symbols = [{allow}]\n', encoding="utf-8")
    return settings
