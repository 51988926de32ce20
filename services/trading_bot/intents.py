"""From a signal to a ``trade.intent``: the deterministic id, the trading mathematician's sizing, levels
rounded to the symbol's tick, and when an unchanged signal is worth publishing again."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from common.config import SignalSettings
from common.contracts import Side, TradeIntent
from common.exchange.rules import SymbolRules
from common.ids import intent_id
from common.maths.sizing import SizingParams, size_entry
from services.trading_bot.signals import AGAINST_TREND, Signal

CENT = Decimal("0.01")

#: why a closed kline's signal gave no intent (``SignalRecord.reason``, the ``outcome`` of the metric)
WARMING_UP = "warming_up"
NO_SIGNAL = "no_signal"
BELOW_MIN_CONFIDENCE = "below_min_confidence"
REPEAT = "repeat"
NO_SYMBOL_RULES = "no_symbol_rules"
INVALID_INTENT = "invalid_intent"


def sizing_params(signal: SignalSettings) -> SizingParams:
    return SizingParams(sl_atr_mult=signal.sl_atr_mult, min_sl_frac=signal.min_sl_frac,
                        reward_risk=signal.reward_risk, leverage_cap=signal.leverage_cap,
                        margin_fraction=signal.margin_fraction)


def build_intent(*, symbol: str, open_time: int, signal: Signal, entry_price: Decimal, atr_pct: float,
                 regime: str, balance: Decimal, rules: SymbolRules, params: SizingParams, source: str,
                 trace_id: str, ts: int | None = None) -> TradeIntent:
    """The intent of ``signal`` on the kline opened at ``open_time``, sized by :func:`size_entry`.

    The entry is rounded to the nearest tick; the stop-loss and take-profit away from the entry (a BUY's
    stop down, its target up; mirrored for a SELL), so they stay on their side of it. ``ts``: the intent's
    time (default now; the backtest's simulated clock). Raises
    ValueError (a ContractError or a pydantic ValidationError among them) when no valid intent exists.
    """
    entry = rules.round_price(entry_price)
    sizing = size_entry(signal.side, entry, atr_pct, balance, rules.max_leverage, params)
    buy = signal.side is Side.BUY
    stop_loss = rules.round_price(sizing.stop_loss, up=not buy)
    take_profit = rules.round_price(sizing.take_profit, up=buy)
    return TradeIntent(
        source=source, trace_id=trace_id, intent_id=intent_id(symbol, open_time, signal.model), symbol=symbol,
        side=signal.side, confidence=round(min(max(signal.confidence, 0.0), 1.0), 6), entry_price=entry,
        stop_loss=stop_loss, take_profit=take_profit,
        position_size_usd=sizing.margin_usd.quantize(CENT, rounding=ROUND_DOWN), leverage=sizing.leverage,
        model=signal.model, atr_pct=round(atr_pct, 8), regime=regime, **({} if ts is None else {"ts": ts}),
    )


def due(last: tuple[Side, int] | None, side: Side, open_time: int, interval_ms: int, repeat_after_klines: int
        ) -> bool:
    """Whether a signal is worth an intent: the first one, a change of side, or the same side again only
    ``repeat_after_klines`` klines after the last one published (the cooldown would refuse it sooner)."""
    if last is None:
        return True
    last_side, last_open_time = last
    return side is not last_side or open_time - last_open_time >= repeat_after_klines * interval_ms


def refusal(signal: Signal | None, atr_pct: float | None, window_len: int, *, ema_slow: int, min_confidence: float,
            last: tuple[Side, int] | None, open_time: int, interval_ms: int, repeat_after_klines: int) -> str | None:
    """Why the signal of the kline opened at ``open_time`` is not worth sizing, in the bot's order: no
    signal yet (``warming_up`` while the ATR or the slow EMA lacks klines, else ``no_signal``), not sure
    enough (``against_trend`` for a vetoed one, else ``below_min_confidence``), not new enough
    (``repeat``, :func:`due`). None: size it."""
    if signal is None or atr_pct is None:
        return WARMING_UP if atr_pct is None or window_len < ema_slow else NO_SIGNAL
    if signal.confidence < min_confidence:
        return AGAINST_TREND if signal.note == AGAINST_TREND else BELOW_MIN_CONFIDENCE
    if not due(last, signal.side, open_time, interval_ms, repeat_after_klines):
        return REPEAT
    return None


def sizing_balance(equity: Decimal | None, default: Decimal) -> Decimal:
    """The balance entries are sized on: the account's equity as the ledger books it, else (no fill booked
    yet, or none left) ``signal.default_balance_usd``."""
    return equity if equity is not None and equity > 0 else default
