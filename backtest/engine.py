"""The backtest's clock and the order of events (see :mod:`backtest` for the whole picture).

The klines of every symbol are merged on one timeline of open times. At each open time ``t`` the
symbols with a kline there take their four path points in turn — every symbol's open, then every
symbol's first extreme, its second, its close — and at ``t + L`` their closed klines: the market state
first (marketdata publishes it with the kline), then the bot, in the order the symbols were given. After
each step the equity is sampled: the ledger's (realized PnL less fees) plus the open positions'
unrealized PnL at their marks. With ``trade_from_ms`` the klines before it only warm the indicators (no
entry, no equity sample).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from backtest.apply import SimApply
from backtest.books import SimBooks, Trip
from backtest.config import BacktestConfig
from backtest.exchange import SimExchange
from backtest.exits import SimExits
from backtest.quiet import QuietBands
from backtest.signals import SimSignals
from common.config import ConfigurationError
from common.contracts import TradeClosed
from common.klines import Kline, interval_ms
from common.maths.marketstate import MarketStateEstimator, MarketStateValue
from services.marketdata.replay import path_prices, path_times

#: told (klines done, klines in all) as the run goes
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class EquityPoint:
    """The account after one step of the timeline (at the close of its klines)."""

    ts: int
    equity: float
    realized: float
    open_positions: int


@dataclass
class RunStats:
    """What happened besides the trades: every decision's outcome, counted."""

    klines: int = 0
    path_points: int = 0
    #: path points whose decisions ran (the rest were inside a quiet band)
    evaluated: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)
    proposals: int = 0
    proposals_ignored: dict[str, int] = field(default_factory=dict)
    fills: int = 0
    orphan_fills: int = 0
    protection_failures: int = 0
    protection_ended: int = 0
    model_fallbacks: int = 0


@dataclass(frozen=True)
class OpenAtEnd:
    """A position still open when the data ends, at its last mark."""

    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal
    mark: Decimal
    unrealized_pnl: Decimal
    opened_at: int


@dataclass
class RunResult:
    """Everything one backtest produced (the report reads it)."""

    symbols: list[str]
    interval: str
    start_ms: int
    end_ms: int
    starting_equity: Decimal
    trades: list[TradeClosed]
    equity: list[EquityPoint]
    stats: RunStats
    trips: list[Trip]
    open_at_end: list[OpenAtEnd]
    final_equity: Decimal
    ledger_equity: Decimal


class Engine:
    """One backtest over ``klines`` (per symbol, in time order, one interval)."""

    def __init__(self, klines: Mapping[str, Sequence[Kline]], config: BacktestConfig) -> None:
        if not klines or not any(klines.values()):
            raise ValueError("no klines to backtest")
        intervals = {k[0].interval for k in klines.values() if k}
        if len(intervals) != 1:
            raise ValueError(f"one interval at a time, not {sorted(intervals)}")
        self.interval = intervals.pop()
        self.length_ms = interval_ms(self.interval)
        self.symbols = [s for s, k in klines.items() if k]
        self.klines = {s: list(klines[s]) for s in self.symbols}
        self.config = config
        settings = config.settings
        if settings.governor.flatten_on_trip:
            raise ConfigurationError("governor.flatten_on_trip", "the backtest does not simulate the flatten of "
                                                                 "every position on a trip; run it with false")
        self.exchange = SimExchange(dict(config.rules), settings.paper)
        self.books = SimBooks(settings.paper.starting_balance, config.policy.limits,
                              rearm_next_day=config.rearm_next_day)
        self.apply = SimApply(self.exchange, self.books, settings, config.policy)
        self.exits = SimExits(self.apply, config.exit_params, config.ladder)
        self.signals = SimSignals(config, self.apply, self.length_ms)
        #: marketdata's estimator per symbol (:class:`services.marketdata.state.MarketStates` holds the same)
        self.estimators = {s: MarketStateEstimator() for s in self.symbols}
        self.market: dict[str, MarketStateValue] = {}
        self.quiet = QuietBands(self.exchange, self.apply, self.exits, config.exit_params) if config.fast else None
        if self.quiet is not None:
            self.apply.on_change = self.quiet.forget
        self.stats = RunStats()
        self.equity: list[EquityPoint] = []

    def run(self, progress: ProgressFn | None = None) -> RunResult:
        # the klines (a million objects and their Decimals) live through the run and hold no cycle: kept out
        # of the cyclic collector's full passes, which would otherwise rescan them all again and again
        gc.freeze()
        try:
            return self._run(progress)
        finally:
            gc.unfreeze()

    def _run(self, progress: ProgressFn | None) -> RunResult:
        total = sum(len(k) for k in self.klines.values())
        steps = sorted({k.open_time for series in self.klines.values() for k in series})
        cursors = dict.fromkeys(self.symbols, 0)
        self.signals.prepare(self.klines)
        trade_from = self.config.trade_from_ms
        done = 0
        for step in steps:
            active: list[Kline] = []
            indexes: list[int] = []
            for symbol in self.symbols:
                series = self.klines[symbol]
                i = cursors[symbol]
                if i < len(series) and series[i].open_time == step:
                    active.append(series[i])
                    indexes.append(i)
                    cursors[symbol] = i + 1
            self._path(step, active)
            close_time = step + self.length_ms
            trade = trade_from is None or close_time >= trade_from
            for kline, index in zip(active, indexes, strict=True):
                prices = self.signals.series[kline.symbol]
                value = self.estimators[kline.symbol].update(prices.opens[index], prices.highs[index],
                                                             prices.lows[index], prices.closes[index])
                if value is not None:
                    self.market[kline.symbol] = value
                if self.quiet is not None:
                    self.quiet.on_market(kline.symbol, self.market.get(kline.symbol), close_time + self.length_ms - 1)
                self.signals.on_close(kline, index, self.market.get(kline.symbol), close_time, trade=trade)
            if trade:
                self._sample(close_time)
            done += len(active)
            if progress is not None:
                progress(done, total)
        return self._result(steps)

    def _path(self, step: int, active: list[Kline]) -> None:
        """The four path points of every active symbol, point by point."""
        exchange, exits, quiet = self.exchange, self.exits, self.quiet
        watched = [k for k in active if exchange.watched(k.symbol) or k.symbol in exits.states]
        self.stats.path_points += 4 * len(active)
        for kline in active:
            # a symbol without a position still moves its mark: the last point is what entries fill at
            exchange.marks[kline.symbol] = kline.close
        if not watched:
            return
        times = path_times(step, self.length_ms)
        paths = [(k.symbol, path_prices(k)) for k in watched]
        for j in range(4):
            now = times[j]
            for symbol, prices in paths:
                price = prices[j]
                exchange.marks[symbol] = price
                if quiet is not None and quiet.quiet(symbol, price, now):
                    continue
                self.stats.evaluated += 1
                events = exchange.check_triggers(symbol, now) if exchange.watched(symbol) else []
                if events:
                    self.apply.on_exchange(events)
                market = self.market.get(symbol)
                eventful = exits.on_mark(symbol, price, market, now) or bool(events)
                if quiet is not None:
                    quiet.learn(symbol, eventful, market, now, times[3])

    def _sample(self, ts: int) -> None:
        ledger = self.books.equity
        self.equity.append(EquityPoint(ts, float(ledger + self.exchange.unrealized()), float(ledger),
                                       len(self.exchange.positions)))

    def _result(self, steps: list[int]) -> RunResult:
        stats = self.stats
        stats.klines = sum(len(k) for k in self.klines.values())
        stats.outcomes = dict(self.signals.outcomes)
        stats.refused = dict(self.signals.refused)
        stats.results = {"/".join(p for p in key if p): n for key, n in sorted(self.apply.results.items())}
        stats.proposals = self.exits.proposals
        stats.proposals_ignored = dict(self.exits.ignored)
        stats.fills = self.books.fills
        stats.orphan_fills = self.books.orphans
        stats.protection_failures = self.apply.protection_failures
        stats.protection_ended = self.apply.protection_ended
        stats.model_fallbacks = self.signals.model_fallbacks
        open_at_end = []
        for symbol, p in sorted(self.exchange.positions.items()):
            mark = self.exchange.marks.get(symbol, p.entry_price)
            record = self.apply.positions.get(symbol)
            open_at_end.append(OpenAtEnd(symbol, "LONG" if p.qty > 0 else "SHORT", abs(p.qty), p.entry_price, mark,
                                         p.unrealized_pnl(mark), record.created_at if record else p.opened_ms))
        ledger = self.books.equity
        start = steps[0] if self.config.trade_from_ms is None else max(steps[0], self.config.trade_from_ms)
        return RunResult(
            symbols=self.symbols, interval=self.interval, start_ms=start, end_ms=steps[-1] + self.length_ms,
            starting_equity=self.books.starting_equity, trades=list(self.books.closed), equity=self.equity,
            stats=stats, trips=list(self.books.trips), open_at_end=open_at_end,
            final_equity=ledger + self.exchange.unrealized(), ledger_equity=ledger)


def run(klines: Mapping[str, Sequence[Kline]], config: BacktestConfig,
        progress: ProgressFn | None = None) -> RunResult:
    """Backtest ``klines`` (per symbol) with ``config``."""
    return Engine(klines, config).run(progress)
