"""The bot: on each closed kline, a signal (ai_engine, else the fallback), and an intent when it is sure
enough, new enough and sizeable. It remembers its recent signals for ``GET /signals``."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis

from common.backoff import Backoff
from common.bus import publish
from common.config import Settings
from common.contracts import MarketKline, MarketState, Side, TradeIntent, new_trace_id, now_ms
from common.klines import DAY_MS, interval_ms
from common.logging import bound
from common.redis_client import REDIS_DOWN
from common.store import read_account, read_marketstate, read_symbol_rule
from common.streams import Service, Stream
from services.trading_bot.ai_client import AiClient
from services.trading_bot.intents import (
    INVALID_INTENT,
    NO_SYMBOL_RULES,
    build_intent,
    refusal,
    sizing_balance,
    sizing_params,
)
from services.trading_bot.signals import (
    UNKNOWN_REGIME,
    Signal,
    TrendParams,
    ai_signal,
    atr_pct_of,
    fallback_signal,
    market_atr_pct,
)
from services.trading_bot.window import KlineWindows, kline_row, parse

log = structlog.get_logger()

SIGNALS = Counter("qt_trading_bot_signals_total", "Signals on closed klines, by model kind and outcome",
                  ["kind", "outcome"])
AI_FALLBACKS = Counter("qt_trading_bot_ai_fallbacks_total", "Signals that fell back from ai_engine, by reason",
                       ["reason"])
INTENTS = Counter("qt_trading_bot_intents_total", "trade.intent entries published, by origin", ["origin"])


@dataclass(frozen=True)
class SignalRecord:
    """One decision, as ``GET /signals`` shows it."""

    ts: int
    symbol: str
    interval: str
    open_time: int
    side: str | None
    confidence: float
    model: str
    published: bool
    #: why no intent (empty when one was published)
    reason: str = ""
    #: how ai_engine answered: ``answered`` or why not (``down``, ``timeout``, ``not_ready``...)
    ai: str = ""
    intent_id: str = ""
    trace_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bot:
    def __init__(self, redis: Redis, settings: Settings, ai: AiClient | None, stop: asyncio.Event | None = None
                 ) -> None:
        self.redis = redis
        self.settings = settings
        self.ai = ai
        self.stop = stop or asyncio.Event()
        conf = settings.signal
        self.windows = KlineWindows(conf.window_klines, settings.symbols)
        self.recent: deque[SignalRecord] = deque(maxlen=conf.recent_signals)
        self.trend = TrendParams(ema_fast=conf.ema_fast, ema_slow=conf.ema_slow)
        self.sizing = sizing_params(conf)
        self.last_published: dict[tuple[str, str], tuple[Side, int]] = {}
        self.ai_status = ""
        self.intents_published = 0
        self.last_kline_at = 0

    # --- klines ----------------------------------------------------------------------------------

    async def on_entry(self, entry_id: str, fields: dict[Any, Any], *, decide: bool = True,
                       held: bool = False) -> SignalRecord | None:
        """One ``market.klines`` entry: a decision when it is a new closed kline of a watched symbol (and
        ``decide``: a kline that is not the newest of its read only feeds the window). ``held``: a kline
        already in its window whose decision waited for the reads to catch up; decided while it is still
        its window's newest."""
        kline = parse(entry_id, fields)
        if kline is None:
            return None
        if held:
            window = self.windows.get(kline.symbol, kline.interval)
            if not window or window[-1].open_time != kline.open_time:
                return None
        elif not self.windows.add(kline) or not decide:
            return None
        self.last_kline_at = now_ms()
        return await self.on_closed_kline(kline)

    async def on_closed_kline(self, kline: MarketKline) -> SignalRecord:
        window = self.windows.get(kline.symbol, kline.interval)
        closes = [float(k.close) for k in window]
        state = await read_marketstate(self.redis, kline.symbol)
        atr_pct = market_atr_pct(state)
        if atr_pct is None:
            atr_pct = atr_pct_of([float(k.high) for k in window], [float(k.low) for k in window], closes)
        signal, ai = await self._signal(kline, window, closes, atr_pct, state)
        record = await self._act(kline, signal, ai, atr_pct, state)
        self.recent.append(record)
        SIGNALS.labels("ai" if ai == "answered" else "fallback",
                       "intent" if record.published else (record.reason or "none")).inc()
        return record

    async def _signal(self, kline: MarketKline, window: list[MarketKline], closes: list[float],
                      atr_pct: float | None, state: MarketState | None) -> tuple[Signal | None, str]:
        if self.ai is not None:
            answer = await self.ai.predict(kline.symbol, kline.interval, [kline_row(k) for k in window])
            self._note_ai(answer.reason or "answered", answer.latency_ms)
            if answer.prediction is not None:
                p = answer.prediction
                return ai_signal(p.side, p.confidence, p.model, p.version), "answered"
            AI_FALLBACKS.labels(answer.reason).inc()
            ai = answer.reason
        else:
            ai = "disabled"
        if atr_pct is None:
            return None, ai
        return fallback_signal(closes, atr_pct, state, self.trend), ai

    def _note_ai(self, status: str, latency_ms: int) -> None:
        """Log ai_engine's availability when it changes, not on every kline."""
        if status != self.ai_status:
            if status == "answered":
                log.info("ai_engine_available", latency_ms=latency_ms)
            else:
                log.warning("ai_engine_unavailable", reason=status, latency_ms=latency_ms,
                            fallback="fallback-trend-following")
            self.ai_status = status

    async def _act(self, kline: MarketKline, signal: Signal | None, ai: str, atr_pct: float | None,
                   state: MarketState | None) -> SignalRecord:
        def record(reason: str = "", intent: TradeIntent | None = None) -> SignalRecord:
            return SignalRecord(
                ts=now_ms(), symbol=kline.symbol, interval=kline.interval, open_time=kline.open_time,
                side=signal.side.value if signal else None, confidence=signal.confidence if signal else 0.0,
                model=signal.model if signal else "", published=intent is not None, reason=reason, ai=ai,
                intent_id=intent.intent_id if intent else "", trace_id=intent.trace_id if intent else "")

        conf = self.settings.signal
        window = self.windows.get(kline.symbol, kline.interval)
        key = (kline.symbol, kline.interval)
        reason = refusal(signal, atr_pct, len(window), ema_slow=self.trend.ema_slow,
                         min_confidence=conf.min_confidence, last=self.last_published.get(key),
                         open_time=kline.open_time, interval_ms=_interval_ms(window),
                         repeat_after_klines=conf.repeat_after_klines)
        if reason is not None:
            return record(reason)
        assert signal is not None and atr_pct is not None
        rules = await read_symbol_rule(self.redis, kline.symbol)
        if rules is None:
            return record(NO_SYMBOL_RULES)
        account = await read_account(self.redis)
        balance = sizing_balance(account.equity if account is not None else None, conf.default_balance_usd)
        trace_id = new_trace_id()
        try:
            intent = build_intent(symbol=kline.symbol, open_time=kline.open_time, signal=signal,
                                  entry_price=kline.close, atr_pct=atr_pct,
                                  regime=state.regime if state is not None else UNKNOWN_REGIME, balance=balance,
                                  rules=rules, params=self.sizing, source=Service.TRADING_BOT, trace_id=trace_id)
        except ValueError as e:
            log.warning("intent_invalid", symbol=kline.symbol, error=str(e).splitlines()[0])
            return record(INVALID_INTENT)
        await self.publish(intent, origin="signal")
        self.last_published[key] = (signal.side, kline.open_time)
        return record(intent=intent)

    # --- publishing ------------------------------------------------------------------------------

    async def publish(self, intent: TradeIntent, origin: str) -> None:
        """XADD the intent to trade.intent; a Redis outage is retried (capped backoff) until it works or
        the service stops."""
        backoff = Backoff(self.settings.bus.reconnect_initial_ms / 1000, self.settings.bus.reconnect_max_ms / 1000)
        attempt = 0
        with bound(trace_id=intent.trace_id, symbol=intent.symbol):
            while True:
                try:
                    await publish(self.redis, Service.TRADING_BOT, (Stream.TRADE_INTENT, intent))
                    break
                except REDIS_DOWN as e:
                    if self.stop.is_set():
                        raise
                    delay = backoff.delay_s(attempt)
                    attempt += 1
                    log.warning("intent_publish_retry", error=str(e) or type(e).__name__, retry_in_s=delay)
                    await asyncio.sleep(delay)
            self.intents_published += 1
            INTENTS.labels(origin).inc()
            log.info("intent_published", intent_id=intent.intent_id, side=intent.side.value,
                     confidence=intent.confidence, model=intent.model, entry_price=str(intent.entry_price),
                     stop_loss=str(intent.stop_loss), take_profit=str(intent.take_profit),
                     leverage=intent.leverage, margin_usd=str(intent.position_size_usd), origin=origin)

    async def manual(self, intent: TradeIntent) -> SignalRecord:
        """An operator's intent (``POST /intents``), already validated."""
        await self.publish(intent, origin="manual")
        record = SignalRecord(ts=now_ms(), symbol=intent.symbol, interval="", open_time=0, side=intent.side.value,
                              confidence=intent.confidence, model=intent.model, published=True, reason="", ai="manual",
                              intent_id=intent.intent_id, trace_id=intent.trace_id)
        self.recent.append(record)
        return record

    def recent_signals(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` decisions, newest first."""
        return [r.to_dict() for r in list(self.recent)[::-1][:limit]]


def _interval_ms(window: list[MarketKline]) -> int:
    """The window's kline length (a calendar month, which has none, counts 30 days here: it only spaces
    repeated intents)."""
    if not window:
        return 60_000
    try:
        return interval_ms(window[-1].interval)
    except ValueError:
        return 30 * DAY_MS
