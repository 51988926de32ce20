"""Intent building: deterministic ids, sizing by the mathematician, SL/TP rounded to the tick away from
the entry, and when an unchanged signal is published again."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from common.config import REPO_ROOT, SignalSettings
from common.contracts import Side, TradeIntent, decode, encode
from common.exchange.rules import SymbolRules, load_rules_file
from common.ids import intent_id
from services.trading_bot.intents import build_intent, due, sizing_params
from services.trading_bot.signals import FALLBACK_MODEL, Signal
from tests.helpers import TRACE, hex16

D = Decimal
RULES = load_rules_file(Path(REPO_ROOT / "config" / "paper_symbols.json"))
OPEN_TIME = 1_700_000_040_000


def make(side: Side, symbol: str = "BTCUSDT", entry: str = "43210.37", atr_pct: float = 0.2,
         balance: str = "12345.678", rules: SymbolRules | None = None, model: str = FALLBACK_MODEL,
         trace_id: str = TRACE, confidence: float = 0.8) -> TradeIntent:
    return build_intent(symbol=symbol, open_time=OPEN_TIME, signal=Signal(side, confidence, model),
                        entry_price=D(entry), atr_pct=atr_pct, regime="TREND", balance=D(balance),
                        rules=rules or RULES[symbol], params=sizing_params(SignalSettings()),
                        source="trading_bot", trace_id=trace_id)


def test_buy_levels_rounded_to_tick_away_from_entry() -> None:
    """BUY at 43210.37 (tick 0.1), ATR 20 %: SL 6 % below rounded down, TP 7.98 % above rounded up,
    margin 2 % of the balance in cents, leverage min(125, 10)."""
    intent = make(Side.BUY)
    assert intent.entry_price == D("43210.4")
    assert intent.stop_loss == D("40617.7")  # 43210.4 * 0.94 = 40617.776
    assert intent.take_profit == D("46658.6")  # 43210.4 * 1.0798 = 46658.58992
    assert intent.position_size_usd == D("246.91")  # 12345.678 * 0.02 = 246.91356
    assert intent.leverage == 10
    assert intent.atr_pct == 0.2 and intent.regime == "TREND" and intent.model == FALLBACK_MODEL


def test_sell_levels_are_mirrored() -> None:
    """SELL: the stop above the entry rounded up, the target below rounded down."""
    intent = make(Side.SELL)
    assert intent.stop_loss == D("45803.1")  # 43210.4 * 1.06 = 45803.024
    assert intent.take_profit == D("39762.2")  # 43210.4 * 0.9202 = 39762.21008
    assert intent.take_profit < intent.entry_price < intent.stop_loss


def test_small_atr_uses_the_three_percent_floor_on_a_fine_tick() -> None:
    """ATR 1 % gives the 3 % floor; XRPUSDT's 0.0001 tick: entry 0.5235, SL 0.5077, TP 0.5444."""
    intent = make(Side.BUY, symbol="XRPUSDT", entry="0.52347", atr_pct=0.01, balance="10000")
    assert (intent.entry_price, intent.stop_loss, intent.take_profit) == (D("0.5235"), D("0.5077"), D("0.5444"))
    assert intent.position_size_usd == D("200.00")


def test_leverage_is_capped_by_the_symbol() -> None:
    """A symbol allowing only 5x gets 5x (min(max_leverage, 10))."""
    rules = dataclasses.replace(RULES["BTCUSDT"], max_leverage=5)
    assert make(Side.BUY, rules=rules).leverage == 5


def test_intent_id_is_deterministic_per_kline_and_model() -> None:
    """intent_id = first 16 hex of sha256(symbol|open_time|model): the same kline gives the same id
    whatever the trace or confidence; another kline or model gives another."""
    first = make(Side.BUY, trace_id="aaaaaaaaaaaaaaaa", confidence=0.6)
    again = make(Side.BUY, trace_id="bbbbbbbbbbbbbbbb", confidence=0.9)
    assert first.intent_id == again.intent_id == hex16(f"BTCUSDT|{OPEN_TIME}|{FALLBACK_MODEL}")
    assert make(Side.BUY, model="ai-logreg-v1").intent_id != first.intent_id
    assert intent_id("BTCUSDT", OPEN_TIME + 60_000, FALLBACK_MODEL) != first.intent_id
    assert intent_id("币安人生USDT", OPEN_TIME, FALLBACK_MODEL) == hex16(f"币安人生USDT|{OPEN_TIME}|{FALLBACK_MODEL}")


def test_intent_round_trips_through_the_contract() -> None:
    """What the bot builds is a valid trade.intent on the wire (encode, then decode, equal)."""
    intent = make(Side.SELL, symbol="币安人生USDT", entry="0.12433", atr_pct=0.05)
    assert decode(TradeIntent, encode(intent)) == intent
    assert encode(intent)["stop_loss"] == "0.1281"  # 0.1243 * 1.03 = 0.128029 -> up to the tick


def test_level_at_zero_is_refused() -> None:
    """An entry of one tick with a 3 % stop would put the BUY's stop at 0: no intent (ValueError)."""
    with pytest.raises(ValueError):
        make(Side.BUY, symbol="XRPUSDT", entry="0.0001", atr_pct=0.01)


@pytest.mark.parametrize(
    ("last", "side", "open_time", "expected"),
    [
        (None, Side.BUY, 0, True),
        ((Side.BUY, 0), Side.BUY, 14 * 60_000, False),
        ((Side.BUY, 0), Side.BUY, 15 * 60_000, True),
        ((Side.BUY, 0), Side.SELL, 60_000, True),
    ],
)
def test_due_first_side_change_or_after_repeat(last: tuple[Side, int] | None, side: Side, open_time: int,
                                               expected: bool) -> None:
    """A first signal and a change of side are published; the same side again only 15 klines later."""
    assert due(last, side, open_time, 60_000, 15) is expected
