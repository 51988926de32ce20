"""The backtest end to end on klines built by hand: the bot's entry fills at the closing price (slipped), a
stop fills where the path meets it (a rising candle dips first, a falling one spikes first), the books hold
every fee, the governor's kill switch stops entries and exits go on."""

from __future__ import annotations

from decimal import Decimal

from backtest import synthetic
from backtest.engine import Engine, RunResult, run
from common.contracts import PositionSide, Side
from common.exchange.paper.book import fee_of, fill_price
from common.klines import Kline
from common.maths.ledger import usdt
from common.policy import Limits
from services.marketdata.replay import path_times
from tests.unit.backtest.support import config, kline, settings

D = Decimal
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
L = 300_000  # 5m
SYMBOL = "GEN00USDT"
RULES = synthetic.rules_for([SYMBOL])[SYMBOL]
SLIPPAGE, FEE = D("2"), D("0.0005")
#: one entry per trend (no repeat of the same side), no kill score: only the stop decides
QUIET = {"signal": {"repeat_after_klines": 10_000}, "exit": {"kill_threshold": 1.0}}


def trend(count: int, start: str, factor: str, first_open: int = T0) -> list[Kline]:
    """``count`` klines each closing ``factor`` times its open, with a small wick either side."""
    out, price = [], D(start)
    for i in range(count):
        close = (price * D(factor)).quantize(D("0.01"))
        high, low = max(price, close) + D("0.02"), min(price, close) - D("0.02")
        out.append(kline(SYMBOL, first_open + i * L, str(price), str(high), str(low), str(close)))
        price = close
    return out


def backtest(klines: list[Kline], **kwargs: object) -> RunResult:
    data = {SYMBOL: klines}
    return run(data, config(data, settings=settings([SYMBOL], **QUIET), **kwargs))  # type: ignore[arg-type]


def first_entry(klines: list[Kline]) -> tuple[int, RunResult]:
    """The index of the kline whose close the first entry filled at, and the run cut there (its position
    open at the end)."""
    whole = backtest(klines)
    opened = min([t.opened_at for t in whole.trades] + [p.opened_at for p in whole.open_at_end])
    k = next(i for i, kline in enumerate(klines) if kline.open_time + L == opened)
    cut = backtest(klines[: k + 1])
    assert cut.open_at_end and cut.open_at_end[0].opened_at == opened
    return k, cut


def test_a_long_opens_at_the_close_and_its_stop_fills_at_the_low_of_a_rising_candle() -> None:
    """A rising trend opens a long at a kline's close (the close slipped up by 2 bps, on the tick); the next
    kline opens flat, dips below the stop and closes higher: rising, so its low comes first — the stop
    fills there (slipped down), at the first third of the kline, and the trade books both fees."""
    klines = trend(80, "100", "1.002")
    k, opened = first_entry(klines)
    entry_close = klines[k].close
    stop = opened.open_at_end[0]
    entry = fill_price(RULES, entry_close, Side.BUY, SLIPPAGE)
    assert stop.entry_price == entry and stop.side == "LONG"
    low = (entry_close * D("0.95")).quantize(D("0.01"))
    dip = kline(SYMBOL, klines[k].open_time + L, str(entry_close), str(entry_close + D("1")), str(low),
                str(entry_close + D("0.5")))
    result = backtest([*klines[: k + 1], dip])
    assert len(result.trades) == 1
    trade = result.trades[0]
    exit_price = fill_price(RULES, low, Side.SELL, SLIPPAGE)
    assert (trade.side, trade.exit_reason) == (PositionSide.LONG, "stop_loss")
    assert (trade.entry_price, trade.exit_price) == (entry, exit_price)
    assert trade.opened_at == klines[k].open_time + L
    assert trade.closed_at == path_times(dip.open_time, L)[1], "the low is the rising candle's first extreme"
    assert trade.realized_pnl == usdt((exit_price - entry) * trade.qty)
    assert trade.fees == fee_of(trade.qty, entry, FEE) + fee_of(trade.qty, exit_price, FEE)
    assert trade.pnl_net == trade.realized_pnl - trade.fees
    assert result.ledger_equity == D("10000") + trade.pnl_net


def test_a_short_is_stopped_by_the_high_of_a_falling_candle_that_closes_in_its_favour() -> None:
    """A falling trend opens a short; a falling candle goes up first (O→H→L→C): its high crosses the stop
    although the candle closes lower — the short is stopped at the high (slipped up), a third into it."""
    klines = trend(80, "100", "0.998")
    k, opened = first_entry(klines)
    assert opened.open_at_end[0].side == "SHORT"
    entry_close = klines[k].close
    high = (entry_close * D("1.05")).quantize(D("0.01"))
    spike = kline(SYMBOL, klines[k].open_time + L, str(entry_close), str(high), str(entry_close - D("1")),
                  str(entry_close - D("0.5")))
    result = backtest([*klines[: k + 1], spike])
    trade = result.trades[0]
    assert (trade.side, trade.exit_reason) == (PositionSide.SHORT, "stop_loss")
    assert trade.exit_price == fill_price(RULES, high, Side.BUY, SLIPPAGE)
    assert trade.closed_at == path_times(spike.open_time, L)[1], "the high is the falling candle's first extreme"
    assert trade.realized_pnl < 0


def test_the_kill_switch_stops_entries_until_rearmed() -> None:
    """A daily loss limit of 0.01 % trips on the first losing trade: every later entry of that day is SKIP
    ess_tripped (the exits went on); re-armed each UTC day, entries resume the next day."""
    data = synthetic.market(2, 2 * 288 * 3, seed=5)  # three days of two symbols
    limits = Limits(daily_loss_limit_pct=D("0.01"), max_drawdown_pct=D("100"))
    stopped = run(data, config(data, limits=limits))
    assert stopped.trips and stopped.trips[0].reason.startswith("daily_loss")
    assert stopped.stats.results.get("ENTRY_PROPOSED/SKIP/ess_tripped", 0) > 0
    tripped_at = stopped.trips[0].at
    assert all(t.opened_at <= tripped_at for t in stopped.trades), "no position opened after the trip"
    rearmed = run(data, config(data, limits=limits, rearm_next_day=True))
    assert len(rearmed.trips) > 1
    assert any(t.opened_at > tripped_at for t in rearmed.trades), "entries resumed on a later day"


def test_equity_is_marked_to_market_and_books_add_up() -> None:
    """One equity point per step, the last the ledger's equity plus the open positions' unrealized PnL; the
    ledger's equity is the start plus every closed trade's net PnL less the fees the open trades paid so far,
    to the 1e-8."""
    data = synthetic.market(2, 3000, seed=2)
    engine = Engine(data, config(data, limits=Limits(daily_loss_limit_pct=D(100), max_drawdown_pct=D(100))))
    result = engine.run()
    assert len(result.trades) > 10
    assert len(result.equity) == 3000
    assert result.equity[-1].equity == float(result.final_equity)
    assert result.final_equity == result.ledger_equity + sum((p.unrealized_pnl for p in result.open_at_end), D(0))
    open_fees = sum((t.position.fees for t in engine.books.trades.values()), D(0))
    assert result.ledger_equity == D("10000") + sum((t.pnl_net for t in result.trades), D(0)) - open_fees
