"""A seeded, reproducible synthetic market: trade ticks per symbol with switching regimes.

Each symbol's log price follows its regime — trending up, trending down, ranging (mean-reverting
to the price the range started at) or volatile — and the regime switches by a Markov chain: a
regime lasts an exponentially distributed time with the regime's mean duration, then hands over
to one of the other regimes, chosen uniformly. Now and then the price jumps.

Every symbol draws from its own random stream, seeded from ``sha256(seed|symbol)``, so a series
depends only on the seed, the symbol and its parameters: it is the same on every run and on every
Python (no ``hash()``), and adding or removing a symbol leaves the others unchanged. The model
steps by ``tick_interval_ms`` on each call; the timestamps passed in only stamp the ticks.

Prices are floats inside the model (it is a model, not money) and leave it as Decimal on the
symbol's tick grid, never below one tick.

A market can be saved and resumed (:meth:`SyntheticMarket.state`, :meth:`SyntheticMarket.resume`): each
symbol's log price, its regime with the ticks it has left, the anchor it reverts to and the ticks to its
next jump, and the model time of the last tick. A resumed symbol continues from there, drawing from a
stream seeded by ``sha256(seed|symbol|model time)`` (:func:`resume_seed`): the continuation is
reproducible from the saved state, and a restart does not replay the series from its start.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from common.klines import HOUR_MS, MINUTE_MS


class Regime(StrEnum):
    """The regimes the generator switches between (the label carried by each tick)."""

    TRENDING_UP = "trending_up"
    TRENDING_DOWN = "trending_down"
    RANGING = "ranging"
    VOLATILE = "volatile"


@dataclass(frozen=True)
class RegimeParams:
    """How the log price moves in one regime.

    ``drift_per_min`` and ``vol_per_min`` are the mean and standard deviation of the one-minute
    log return; ``reversion_per_min`` pulls the log price back to where the regime started (a
    fraction of the distance per minute; 0 = none); ``mean_duration_ms`` is how long the regime
    lasts on average.
    """

    drift_per_min: float
    vol_per_min: float
    mean_duration_ms: int
    reversion_per_min: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.drift_per_min):
            raise ValueError("drift_per_min must be finite")
        if not (math.isfinite(self.vol_per_min) and self.vol_per_min >= 0):
            raise ValueError("vol_per_min must be >= 0")
        if self.mean_duration_ms <= 0:
            raise ValueError("mean_duration_ms must be > 0")
        if not 0.0 <= self.reversion_per_min <= 1.0:
            raise ValueError("reversion_per_min must be within [0, 1]")


DEFAULT_REGIMES: Mapping[Regime, RegimeParams] = MappingProxyType({
    Regime.TRENDING_UP: RegimeParams(drift_per_min=0.0003, vol_per_min=0.0012, mean_duration_ms=90 * MINUTE_MS),
    Regime.TRENDING_DOWN: RegimeParams(drift_per_min=-0.0003, vol_per_min=0.0012,
                                       mean_duration_ms=90 * MINUTE_MS),
    Regime.RANGING: RegimeParams(drift_per_min=0.0, vol_per_min=0.0008, mean_duration_ms=3 * HOUR_MS,
                                 reversion_per_min=0.05),
    Regime.VOLATILE: RegimeParams(drift_per_min=0.0, vol_per_min=0.0035, mean_duration_ms=30 * MINUTE_MS),
})


@dataclass(frozen=True)
class SyntheticParams:
    """Settings of the synthetic market (defaults: one tick a second, a few regimes a day).

    ``jump_prob`` is the chance of a jump on any one tick; a jump's log size is exponentially
    distributed with mean ``jump_size``, up or down with equal chance. The mark price is the
    trade price times ``1 + basis``, ``basis`` a sine of amplitude ``mark_basis_bp`` basis points
    over ``mark_basis_period_ms``. Each tick trades about ``mean_notional_usd`` (exponentially
    distributed), in quantities of ``qty_decimals`` decimals.
    """

    seed: int = 0
    tick_interval_ms: int = 1_000
    regimes: Mapping[Regime, RegimeParams] = field(default_factory=lambda: DEFAULT_REGIMES)
    jump_prob: float = 1e-4
    jump_size: float = 0.01
    mark_basis_bp: float = 2.0
    mark_basis_period_ms: int = 8 * HOUR_MS
    mean_notional_usd: float = 2_000.0
    qty_decimals: int = 3
    #: the regime every symbol starts in; None draws it from the symbol's stream
    initial_regime: Regime | None = None

    def __post_init__(self) -> None:
        if self.tick_interval_ms <= 0:
            raise ValueError("tick_interval_ms must be > 0")
        missing = [r.value for r in Regime if r not in self.regimes]
        if missing:
            raise ValueError(f"regimes lacks parameters for {', '.join(missing)}")
        if not 0.0 <= self.jump_prob < 1.0:
            raise ValueError("jump_prob must be within [0, 1)")
        if not (math.isfinite(self.jump_size) and self.jump_size >= 0):
            raise ValueError("jump_size must be >= 0")
        if not (math.isfinite(self.mark_basis_bp) and 0 <= self.mark_basis_bp < 100):
            raise ValueError("mark_basis_bp must be within [0, 100)")
        if self.mark_basis_period_ms <= 0:
            raise ValueError("mark_basis_period_ms must be > 0")
        if not (math.isfinite(self.mean_notional_usd) and self.mean_notional_usd > 0):
            raise ValueError("mean_notional_usd must be > 0")
        if not 0 <= self.qty_decimals <= 12:
            raise ValueError("qty_decimals must be within [0, 12]")


class SyntheticTick(NamedTuple):
    """One synthetic trade. ``regime`` is the regime it was generated in; ``jump`` marks a jump."""

    symbol: str
    ts: int
    price: Decimal
    mark_price: Decimal
    qty: Decimal
    regime: Regime
    jump: bool = False


_REGIMES = tuple(Regime)


def symbol_seed(seed: int, symbol: str) -> int:
    """The seed of one symbol's random stream: stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"{seed}|{symbol}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def resume_seed(seed: int, symbol: str, model_ms: int) -> int:
    """The seed of a symbol's stream resumed after model time ``model_ms``."""
    digest = hashlib.sha256(f"{seed}|{symbol}|{model_ms}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


#: the version of :meth:`SyntheticMarket.state`
STATE_VERSION = 1


class _Step(NamedTuple):
    """One regime's per-tick coefficients."""

    drift: float
    vol: float
    reversion: float
    mean_ticks: float


class _SymbolState:
    """The generator of one symbol: its random stream and where its price and regime stand."""

    __slots__ = ("anchor", "jump_in", "log_price", "qty_scale", "regime", "regime_left", "rng", "step",
                 "symbol", "tick", "tick_f")

    def __init__(self, symbol: str, start_price: Decimal, tick: Decimal, params: SyntheticParams,
                 steps: Mapping[Regime, _Step]) -> None:
        if not start_price > 0:
            raise ValueError(f"{symbol}: start price must be positive, got {start_price}")
        if not tick > 0:
            raise ValueError(f"{symbol}: tick size must be positive, got {tick}")
        self.symbol = symbol
        self.tick = tick
        self.tick_f = float(tick)
        self.qty_scale = params.mean_notional_usd * 10 ** params.qty_decimals
        self.rng = random.Random(symbol_seed(params.seed, symbol))
        self.log_price = math.log(float(start_price))
        self.anchor = self.log_price
        regime = params.initial_regime or self.rng.choice(_REGIMES)
        self.regime = regime
        self.step = steps[regime]
        self.regime_left = self.duration(self.step)
        self.jump_in = self.next_jump(params.jump_prob)

    def duration(self, step: _Step) -> int:
        """Ticks the regime lasts: exponential with the regime's mean, at least one."""
        return 1 + int(self.rng.expovariate(1.0 / step.mean_ticks))

    def next_jump(self, prob: float) -> int:
        """Ticks to the next jump: geometric with success ``prob`` per tick (0 = never)."""
        if prob <= 0.0:
            return -1
        return 1 + int(math.log(1.0 - self.rng.random()) / math.log1p(-prob))

    def state(self) -> dict[str, Any]:
        return {"log_price": self.log_price, "anchor": self.anchor, "regime": self.regime.value,
                "regime_left": self.regime_left, "jump_in": self.jump_in}

    def resume(self, saved: Mapping[str, Any], seed: int, model_ms: int, steps: Mapping[Regime, _Step]) -> None:
        """Continue from ``saved`` (what :meth:`state` gave), on a stream seeded for ``model_ms``."""
        log_price, anchor = float(saved["log_price"]), float(saved["anchor"])
        if not (math.isfinite(log_price) and math.isfinite(anchor)):
            raise ValueError(f"{self.symbol}: saved prices must be finite")
        self.rng = random.Random(resume_seed(seed, self.symbol, model_ms))
        self.log_price, self.anchor = log_price, anchor
        self.regime = Regime(saved["regime"])
        self.step = steps[self.regime]
        self.regime_left = int(saved["regime_left"])
        self.jump_in = int(saved["jump_in"])

    def switch(self, steps: Mapping[Regime, _Step]) -> None:
        """Hand over to one of the other regimes, chosen uniformly."""
        others = [r for r in _REGIMES if r is not self.regime]
        self.regime = others[int(self.rng.random() * len(others))]
        self.step = steps[self.regime]
        self.anchor = self.log_price
        self.regime_left = self.duration(self.step)


class SyntheticMarket:
    """Synthetic trade ticks for a set of symbols; see the module docstring for the model."""

    def __init__(self, symbols: Mapping[str, Decimal], tick_sizes: Mapping[str, Decimal],
                 params: SyntheticParams | None = None) -> None:
        self.params = params or SyntheticParams()
        minutes = self.params.tick_interval_ms / MINUTE_MS
        self._steps = {
            regime: _Step(drift=rp.drift_per_min * minutes, vol=rp.vol_per_min * math.sqrt(minutes),
                          reversion=min(1.0, rp.reversion_per_min * minutes),
                          mean_ticks=max(1.0, rp.mean_duration_ms / self.params.tick_interval_ms))
            for regime, rp in self.params.regimes.items()
        }
        missing = [s for s in symbols if s not in tick_sizes]
        if missing:
            raise ValueError(f"no tick size for {', '.join(missing)}")
        self._states = [_SymbolState(s, Decimal(p), Decimal(tick_sizes[s]), self.params, self._steps)
                        for s, p in symbols.items()]
        self._by_symbol = {st.symbol: st for st in self._states}
        self._last_ts: int | None = None

    @property
    def symbols(self) -> list[str]:
        """The symbols generated, in the order given."""
        return [st.symbol for st in self._states]

    def regime(self, symbol: str) -> Regime:
        """The regime ``symbol`` is in now (the one its last tick was generated in)."""
        return self._by_symbol[symbol].regime

    def state(self) -> dict[str, Any]:
        """Where the market stands, as plain JSON values: the seed, the model time of the last tick and
        each symbol's model state (see the module docstring)."""
        return {"version": STATE_VERSION, "seed": self.params.seed, "model_ms": self._last_ts,
                "symbols": {st.symbol: st.state() for st in self._states}}

    def resume(self, saved: Mapping[str, Any]) -> list[str]:
        """Continue from a saved :meth:`state`: the symbols it holds go on from their saved state (a
        symbol it lacks starts afresh); the next tick must be later than the saved model time. The
        symbols resumed; ValueError when ``saved`` is of another version or seed, or malformed."""
        if saved.get("version") != STATE_VERSION:
            raise ValueError(f"saved state of version {saved.get('version')!r}, not {STATE_VERSION}")
        if saved.get("seed") != self.params.seed:
            raise ValueError(f"saved state of seed {saved.get('seed')!r}, not {self.params.seed}")
        model_ms = saved.get("model_ms")
        if not isinstance(model_ms, int):
            raise ValueError("saved state without a model time")
        symbols = saved.get("symbols")
        if not isinstance(symbols, Mapping):
            raise ValueError("saved state without symbols")
        resumed = []
        try:
            for st in self._states:
                if st.symbol in symbols:
                    st.resume(symbols[st.symbol], self.params.seed, model_ms, self._steps)
                    resumed.append(st.symbol)
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed saved state: {e!r}") from None
        self._last_ts = model_ms
        return resumed

    def next_ticks(self, ts_ms: int) -> list[SyntheticTick]:
        """Advance every symbol by one tick and return the ticks, stamped ``ts_ms``."""
        if self._last_ts is not None and ts_ms < self._last_ts:
            raise ValueError(f"ticks must go forward in time: {ts_ms} < {self._last_ts}")
        self._last_ts = ts_ms
        params = self.params
        # the mark basis depends on time only, so it is the same for every run
        basis = 1.0 + params.mark_basis_bp * 1e-4 * math.sin(
            2.0 * math.pi * (ts_ms % params.mark_basis_period_ms) / params.mark_basis_period_ms)
        scale = Decimal(1).scaleb(-params.qty_decimals)
        ticks = []
        for st in self._states:
            rng = st.rng
            if st.regime_left <= 0:
                st.switch(self._steps)
            st.regime_left -= 1
            step = st.step
            x = st.log_price
            x += step.drift + step.vol * rng.gauss(0.0, 1.0) - step.reversion * (x - st.anchor)
            jump = False
            if st.jump_in > 0:
                st.jump_in -= 1
                if st.jump_in == 0:
                    size = rng.expovariate(1.0 / params.jump_size) if params.jump_size > 0 else 0.0
                    x += size if rng.random() < 0.5 else -size
                    st.jump_in = st.next_jump(params.jump_prob)
                    jump = True
            st.log_price = x
            price_f = math.exp(x)
            n = round(price_f / st.tick_f)
            if n < 1:
                n = 1
            mark_n = round(n * basis)
            if mark_n < 1:
                mark_n = 1
            qty_n = round(st.qty_scale * rng.expovariate(1.0) / price_f)
            if qty_n < 1:
                qty_n = 1
            ticks.append(SyntheticTick(st.symbol, ts_ms, n * st.tick, mark_n * st.tick, qty_n * scale,
                                       st.regime, jump))
        return ticks

    def run(self, start_ms: int, steps: int) -> Iterator[SyntheticTick]:
        """``steps`` calls of :meth:`next_ticks`, ``tick_interval_ms`` apart from ``start_ms``, flattened."""
        interval = self.params.tick_interval_ms
        for i in range(steps):
            yield from self.next_ticks(start_ms + i * interval)
