"""Hypothesis strategies: one valid message of every contract."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from common import contracts as c
from common.contracts.base import Message

hex16 = st.text("0123456789abcdef", min_size=16, max_size=16)
symbols = st.sampled_from(["BTCUSDT", "ETHUSDT", "币安人生USDT", "1000PEPEUSDT", "XRPUSDT"])
prices = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("10000000"), allow_nan=False,
                     allow_infinity=False, places=8)
quantities = st.decimals(min_value=Decimal(0), max_value=Decimal("100000000"), places=6)
positive_qty = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000000"), places=6)
money = st.decimals(min_value=Decimal("-10000000"), max_value=Decimal("10000000"), places=8)
fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
small = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)
ms = st.integers(min_value=0, max_value=4_102_444_800_000)
codes = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=40)
texts = st.text(max_size=100)


def envelope(source: str = "qt") -> dict[str, Any]:
    return {"ts": ms, "source": st.just(source), "trace_id": hex16}


def _intent(draw: Any) -> c.TradeIntent:
    side = draw(st.sampled_from(list(c.Side)))
    entry = draw(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=4))
    lo = entry * Decimal("0.97")
    hi = entry * Decimal("1.04")
    sl, tp = (lo, hi) if side is c.Side.BUY else (hi, lo)
    return c.TradeIntent(
        ts=draw(ms), source="trading_bot", trace_id=draw(hex16), intent_id=draw(hex16), symbol=draw(symbols),
        side=side, confidence=draw(fractions), entry_price=entry, stop_loss=sl, take_profit=tp,
        position_size_usd=draw(positive_qty), leverage=draw(st.integers(1, 125)), model=draw(codes),
        atr_pct=draw(small), regime=draw(codes),
    )


def _plan(draw: Any) -> c.ApplyPlan:
    action = draw(st.sampled_from(list(c.Action)))
    base: dict[str, Any] = {"ts": draw(ms), "source": "exitbrain", "trace_id": draw(hex16), "plan_id": draw(hex16),
                            "symbol": draw(symbols), "action": action}
    if action is c.Action.ENTRY_PROPOSED:
        base.update(side=draw(st.sampled_from(list(c.Side))), qty=draw(positive_qty), order_type="MARKET",
                    reduce_only=False, leverage=draw(st.integers(1, 125)), entry_price=draw(prices),
                    stop_loss=draw(prices), take_profit=draw(prices), intent_id=draw(hex16))
    elif action is c.Action.ADOPT_EXCHANGE:
        base.update(reason=c.ExitReason.RECONCILE)
    elif action is c.Action.UPDATE_STOP:
        base.update(position_plan_id=draw(hex16), new_stop_loss=draw(prices),
                    reason=draw(st.sampled_from(list(c.ExitReason))))
    else:
        pct = 100.0 if action is c.Action.FULL_CLOSE_PROPOSED else draw(st.floats(0.01, 100.0))
        reason = draw(st.sampled_from(list(c.ExitReason)))
        base.update(position_plan_id=draw(hex16), reason=reason,
                    steps=[c.PlanStep(step="CLOSE_FULL" if pct == 100.0 else "CLOSE_PARTIAL", pct=pct)])
        if reason is c.ExitReason.KILL_SCORE:
            base.update(kill_score=draw(fractions), k_regime_flip=draw(fractions), k_sigma_spike=draw(small),
                        k_ts_drop=draw(fractions), k_age_penalty=draw(fractions))
    return c.ApplyPlan(**base)


def _kline(draw: Any) -> c.MarketKline:
    o, cl = draw(prices), draw(prices)
    return c.MarketKline(ts=draw(ms), source="marketdata", trace_id=draw(hex16), symbol=draw(symbols),
                         interval=draw(st.sampled_from(["1m", "5m", "1h"])), open_time=draw(ms), open=o,
                         high=max(o, cl) + draw(quantities), low=min(o, cl), close=cl, volume=draw(quantities),
                         closed=draw(st.booleans()))


def _event(cls: type[Any]) -> st.SearchStrategy[Message]:
    details = st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(st.text(max_size=20), st.integers(),
                                                                         st.booleans()), max_size=4)
    return st.builds(cls, ts=ms, source=st.just("governor"), trace_id=hex16, kind=codes, reason=texts,
                     details=details)


STRATEGIES: dict[type[Message], st.SearchStrategy[Any]] = {
    c.TradeIntent: st.composite(lambda draw: _intent(draw))(),
    c.ApplyPlan: st.composite(lambda draw: _plan(draw))(),
    c.ApplyResult: st.builds(
        c.ApplyResult, ts=ms, source=st.just("apply_layer"), trace_id=hex16, plan_id=hex16, symbol=symbols,
        action=st.sampled_from(list(c.Action)), decision=st.sampled_from(list(c.Decision)), executed=st.booleans(),
        error=texts, client_order_id=texts, order_id=texts, filled_qty=quantities, avg_price=quantities, fee=money,
        reduce_only=st.booleans(), latency_ms=st.integers(0, 10**7)),
    c.ExecutionResult: st.builds(
        c.ExecutionResult, ts=ms, source=st.just("apply_layer"), trace_id=hex16, fill_id=codes, plan_id=codes,
        symbol=symbols, side=st.sampled_from(list(c.Side)), qty=positive_qty, price=prices, fee=money,
        fee_asset=st.just("USDT"), reduce_only=st.booleans(), kind=st.sampled_from(list(c.FillKind)),
        position_after=money, realized_pnl=st.none() | money, position_plan_id=st.none() | hex16,
        reason=st.none() | st.sampled_from(list(c.ExitReason))),
    c.HarvestProposal: st.builds(
        c.HarvestProposal, ts=ms, source=st.just("harvest_proposal"), trace_id=hex16, symbol=symbols,
        position_plan_id=hex16, stage=st.sampled_from(list(c.HarvestStage)), trigger_price=prices,
        close_pct=st.floats(0.0, 100.0), new_stop_loss=st.none() | prices, r_multiple=scores),
    c.TradeClosed: st.builds(
        c.TradeClosed, ts=ms, source=st.just("harvest_brain"), trace_id=hex16, position_plan_id=hex16,
        symbol=symbols, side=st.sampled_from(list(c.PositionSide)), qty=quantities, entry_price=prices,
        exit_price=prices, realized_pnl=money, fees=money, pnl_net=money, opened_at=ms, closed_at=ms,
        exit_reason=codes),
    c.MarketTick: st.builds(c.MarketTick, ts=ms, source=st.just("marketdata"), trace_id=hex16, symbol=symbols,
                            price=prices, mark_price=prices),
    c.MarketKline: st.composite(lambda draw: _kline(draw))(),
    c.MarketState: st.builds(
        c.MarketState, ts=ms, source=st.just("marketdata"), trace_id=hex16, symbol=symbols, sigma=small, mu=scores,
        ts_strength=small, p_trend=fractions, p_mr=fractions, p_chop=fractions, regime=codes, atr_pct=small),
    c.ExitbrainPnl: st.builds(
        c.ExitbrainPnl, ts=ms, source=st.just("exitbrain"), trace_id=hex16, symbol=symbols, position_plan_id=hex16,
        mark_price=prices, unrealized_pnl=money, r_multiple=scores, kill_score=fractions),
    c.PositionSnapshot: st.builds(
        c.PositionSnapshot, ts=ms, source=st.just("position_monitor"), trace_id=hex16, symbol=symbols,
        position_amt=money, entry_price=quantities, mark_price=quantities, unrealized_pnl=money,
        leverage=st.integers(1, 125), liquidation_price=quantities),
    c.ReconcileEvent: st.builds(
        c.ReconcileEvent, ts=ms, source=st.just("position_monitor"), trace_id=hex16, symbol=symbols,
        kind=st.sampled_from(list(c.ReconcileKind)), redis_qty=money, exchange_qty=money, action_taken=texts),
    c.GovernorEvent: _event(c.GovernorEvent),
    c.PolicyAudit: _event(c.PolicyAudit),
    c.AlertEvent: _event(c.AlertEvent),
    c.DeadLetter: st.builds(
        c.DeadLetter, ts=ms, source=st.just("intent_bridge"), trace_id=hex16, origin_stream=codes,
        origin_id=st.builds(lambda a, b: f"{a}-{b}", ms, st.integers(0, 99)), group=codes, error=texts,
        deliveries=st.integers(0, 100), payload=st.dictionaries(st.text(max_size=10), st.text(max_size=30),
                                                                max_size=5)),
}
