"""trading_bot and intent_bridge on the backtest's clock: one decision per closed kline of a symbol.

The bot's steps (:mod:`services.trading_bot.bot`) over its pure functions: the symbol's window of the
last ``signal.window_klines`` closed klines; the ATR fraction of the market state (else the window's
own); the model's signal when a model is given (:func:`services.ai_engine.predictor.predict` on the
window, as ai_engine answers trading_bot; a window it cannot answer falls back, like an HTTP 422), else
the fallback trend-following signal (:func:`services.trading_bot.signals.trend_signal` of the window's
EMAs, computed for every window at once and bit for bit: :mod:`backtest.series`);
:func:`services.trading_bot.intents.refusal` (warming up, not sure enough, a repeat); the intent sized
on the ledger's equity (:func:`~services.trading_bot.intents.build_intent`). Then intent_bridge
(:func:`services.intent_bridge.bridge.bridge`) makes it an entry plan or refuses it, and the plan goes
to apply_layer at once. Every kline's decision is counted by its outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backtest.apply import SimApply
from backtest.config import BacktestConfig
from backtest.series import window_ema_last
from common.contracts import ApplyPlan, Side
from common.ids import hex16
from common.klines import Kline
from common.maths.marketstate import MarketView
from common.streams import Service
from services.ai_engine.model import TrainedModel
from services.ai_engine.predictor import predict
from services.intent_bridge.bridge import bridge
from services.trading_bot.intents import INVALID_INTENT, NO_SYMBOL_RULES, build_intent, refusal, sizing_balance
from services.trading_bot.signals import (
    UNKNOWN_REGIME,
    Signal,
    TrendParams,
    ai_signal,
    atr_pct_of,
    market_atr_pct,
    trend_signal,
)

#: the outcome of a kline whose signal became an intent
INTENT = "intent"


@dataclass(frozen=True)
class Series:
    """One symbol's prices as floats (as marketdata's estimator and the bot read them), and the EMAs of the
    bot's window at every kline (:func:`backtest.series.window_ema_last`: the window of kline ``n`` is klines
    ``n − size + 1 .. n``)."""

    size: int
    opens: list[float]
    closes: list[float]
    highs: list[float]
    lows: list[float]
    fast: list[float | None]
    slow: list[float | None]
    #: the Binance rows of the klines, for the model (empty without one)
    rows: list[tuple[int, float, float, float, float, float]]

    @classmethod
    def of(cls, klines: Sequence[Kline], size: int, trend: TrendParams, rows: bool) -> Series:
        closes = [float(k.close) for k in klines]
        return cls(size, [float(k.open) for k in klines], closes, [float(k.high) for k in klines],
                   [float(k.low) for k in klines],
                   window_ema_last(closes, trend.ema_fast, size), window_ema_last(closes, trend.ema_slow, size),
                   [(k.open_time, float(k.open), float(k.high), float(k.low), float(k.close), float(k.volume))
                    for k in klines] if rows else [])

    def start(self, index: int) -> int:
        """The first kline of the window that ends at ``index``."""
        return max(0, index - self.size + 1)


class SimSignals:
    """trading_bot's windows and last intents, and intent_bridge after it."""

    def __init__(self, config: BacktestConfig, apply: SimApply, interval_ms: int) -> None:
        self.config = config
        self.apply = apply
        self.interval_ms = interval_ms
        self.settings = config.settings
        self.model: TrainedModel | None = config.model
        self.series: dict[str, Series] = {}
        self.last_published: dict[str, tuple[Side, int]] = {}
        #: every closed kline's outcome: ``intent`` or the bot's reason (``below_min_confidence``...)
        self.outcomes: Counter[str] = Counter()
        #: intents intent_bridge refused, by reason
        self.refused: Counter[str] = Counter()
        self.model_fallbacks = 0

    def prepare(self, klines: Mapping[str, Sequence[Kline]]) -> None:
        """The windows of every symbol, computed ahead (they depend on the klines alone)."""
        size = self.settings.signal.window_klines
        for symbol, series in klines.items():
            self.series[symbol] = Series.of(series, size, self.config.trend, self.model is not None)

    def on_close(self, kline: Kline, index: int, state: MarketView | None, now: int, *, trade: bool = True) -> None:
        """The ``index``-th closed kline of its symbol: the decision (when ``trade``) and what follows."""
        if trade:
            self.outcomes[self._decide(kline, index, state, now)] += 1

    def _decide(self, kline: Kline, index: int, state: MarketView | None, now: int) -> str:
        conf = self.settings.signal
        series = self.series[kline.symbol]
        start = series.start(index)
        window_len = index + 1 - start
        atr_pct = market_atr_pct(state)
        if atr_pct is None:
            atr_pct = atr_pct_of(series.highs[start:index + 1], series.lows[start:index + 1],
                                 series.closes[start:index + 1])
        signal = self._signal(series, index, start, window_len, atr_pct, state)
        symbol = kline.symbol
        reason = refusal(signal, atr_pct, window_len, ema_slow=self.config.trend.ema_slow,
                         min_confidence=conf.min_confidence, last=self.last_published.get(symbol),
                         open_time=kline.open_time, interval_ms=self.interval_ms,
                         repeat_after_klines=conf.repeat_after_klines)
        if reason is not None:
            return reason
        assert signal is not None and atr_pct is not None
        rules = self.config.rules.get(symbol)
        if rules is None:
            return NO_SYMBOL_RULES
        books = self.apply.books
        balance = sizing_balance(books.account.equity if books.account is not None else None,
                                 conf.default_balance_usd)
        try:
            intent = build_intent(symbol=symbol, open_time=kline.open_time, signal=signal, entry_price=kline.close,
                                  atr_pct=atr_pct, regime=state.regime if state is not None else UNKNOWN_REGIME,
                                  balance=balance, rules=rules, params=self.config.sizing,
                                  source=Service.TRADING_BOT, trace_id=hex16("backtest", symbol, kline.open_time),
                                  ts=now)
        except ValueError:
            return INVALID_INTENT
        self.last_published[symbol] = (signal.side, kline.open_time)
        outcome = bridge(intent, self.config.policy, rules, now_ms=now,
                         max_age_ms=self.settings.apply.entry_max_age_s * 1000, source=Service.INTENT_BRIDGE)
        if isinstance(outcome, ApplyPlan):
            self.apply.execute(outcome, now)
        else:
            self.refused[outcome.reason] += 1
        return INTENT

    def _signal(self, series: Series, index: int, start: int, window_len: int, atr_pct: float | None,
                state: MarketView | None) -> Signal | None:
        if self.model is not None:
            try:
                p = predict(self.model, series.rows[start:index + 1])
            except ValueError:
                self.model_fallbacks += 1  # ai_engine answers 422: the bot falls back
            else:
                return ai_signal(p.side, p.confidence, p.model, p.version)
        if atr_pct is None or window_len < self.config.trend.ema_slow:
            return None  # fallback_signal's own "not warm yet"
        trend = self.config.trend
        return trend_signal(series.fast[index], series.slow[index], series.closes[index], atr_pct, state, trend)
