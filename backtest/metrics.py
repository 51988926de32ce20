"""The summary of a backtest: trades, win rate, net PnL after fees, return, maximum drawdown, Sharpe and
Sortino on daily returns, profit factor, average hold, exposure — overall, by exit reason, by symbol.

Definitions (every figure is computed here, once):

- a trade is a ``trade.closed`` (a position from its first fill to flat); a win has ``pnl_net > 0``;
- net PnL is the sum of the trades' ``pnl_net`` (realized PnL less every fee paid);
- return, drawdown and the daily returns use the equity curve marked to market at every step (the
  ledger's equity plus the open positions' unrealized PnL), from the starting equity;
- daily returns: the equity at the last step of each UTC day over the one before (the first over the
  starting equity); Sharpe = mean / standard deviation (sample), Sortino = mean / downside deviation
  (the root mean square of the returns below 0, over all days), both × √365 (crypto trades every day);
  None with fewer than two days or no dispersion;
- profit factor = gross profit / gross loss of the trades (None without a losing trade);
- exposure = the share of steps that ended with at least one position open.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from backtest.engine import EquityPoint, RunResult
from common.contracts import TradeClosed
from common.maths.ledger import utc_day

DAYS_PER_YEAR = 365
ZERO = Decimal(0)


@dataclass(frozen=True)
class TradeStats:
    """The figures of a set of trades."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None
    net_pnl: Decimal
    realized_pnl: Decimal
    fees: Decimal
    gross_profit: Decimal
    gross_loss: Decimal
    profit_factor: float | None
    average_pnl: Decimal | None
    average_hold_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


@dataclass(frozen=True)
class Summary:
    """Everything the report says about one run."""

    symbols: list[str]
    interval: str
    start_ms: int
    end_ms: int
    klines: int
    starting_equity: Decimal
    final_equity: Decimal
    total_return: float
    max_drawdown: float
    max_drawdown_usd: Decimal
    sharpe: float | None
    sortino: float | None
    days: int
    exposure: float
    overall: TradeStats
    by_exit_reason: dict[str, TradeStats]
    by_symbol: dict[str, TradeStats]
    open_at_end: int
    unrealized_at_end: Decimal
    kill_switch_trips: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _plain({k: v for k, v in asdict(self).items()
                                       if k not in ("overall", "by_exit_reason", "by_symbol")})
        data["overall"] = self.overall.to_dict()
        data["by_exit_reason"] = {k: v.to_dict() for k, v in self.by_exit_reason.items()}
        data["by_symbol"] = {k: v.to_dict() for k, v in self.by_symbol.items()}
        return data


def _plain(data: Any) -> Any:
    """Decimals as strings (exact), the rest as JSON has it."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    if isinstance(data, Decimal):
        return format(data, "f")
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def trade_stats(trades: Sequence[TradeClosed]) -> TradeStats:
    wins = [t for t in trades if t.pnl_net > 0]
    losing = [t for t in trades if t.pnl_net <= 0]
    gross_profit = sum((t.pnl_net for t in wins), ZERO)
    gross_loss = -sum((t.pnl_net for t in losing), ZERO)
    net = sum((t.pnl_net for t in trades), ZERO)
    return TradeStats(
        trades=len(trades), wins=len(wins), losses=len(losing),
        win_rate=len(wins) / len(trades) if trades else None,
        net_pnl=net, realized_pnl=sum((t.realized_pnl for t in trades), ZERO), fees=sum((t.fees for t in trades), ZERO),
        gross_profit=gross_profit, gross_loss=gross_loss,
        profit_factor=float(gross_profit / gross_loss) if gross_loss > 0 else None,
        average_pnl=net / len(trades) if trades else None,
        average_hold_ms=sum(t.closed_at - t.opened_at for t in trades) / len(trades) if trades else None,
    )


def drawdowns(equity: Iterable[float], start: float) -> list[float]:
    """The drawdown (a fraction of the peak so far) after each point."""
    peak = start
    out = []
    for e in equity:
        peak = max(peak, e)
        out.append((peak - e) / peak if peak > 0 else 0.0)
    return out


def daily_returns(equity: Sequence[EquityPoint], start: float) -> list[float]:
    """Each UTC day's return, from the last equity of the day before (the starting equity first)."""
    closes: dict[str, float] = {}
    for point in equity:
        closes[utc_day(point.ts - 1)] = point.equity  # a step ending at midnight belongs to the day it ends
    returns = []
    previous = start
    for day in sorted(closes):
        value = closes[day]
        returns.append(value / previous - 1.0 if previous > 0 else 0.0)
        previous = value
    return returns


def sharpe(returns: Sequence[float]) -> float | None:
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    var = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    return mean / math.sqrt(var) * math.sqrt(DAYS_PER_YEAR) if var > 0 else None


def sortino(returns: Sequence[float]) -> float | None:
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    return mean / downside * math.sqrt(DAYS_PER_YEAR) if downside > 0 else None


def summarize(result: RunResult) -> Summary:
    start = float(result.starting_equity)
    values = [p.equity for p in result.equity]
    dd = drawdowns(values, start)
    worst = max(range(len(dd)), key=dd.__getitem__) if dd else None
    peak_before = max([start, *values[: worst + 1]]) if worst is not None else start
    returns = daily_returns(result.equity, start)
    trades = result.trades
    reasons = sorted({t.exit_reason for t in trades})
    symbols = sorted({t.symbol for t in trades} | set(result.symbols))
    return Summary(
        symbols=list(result.symbols), interval=result.interval, start_ms=result.start_ms, end_ms=result.end_ms,
        klines=result.stats.klines, starting_equity=result.starting_equity, final_equity=result.final_equity,
        total_return=float(result.final_equity / result.starting_equity - 1) if result.starting_equity else 0.0,
        max_drawdown=dd[worst] if worst is not None else 0.0,
        max_drawdown_usd=Decimal(repr(peak_before - values[worst])).quantize(Decimal("0.01"))
        if worst is not None else ZERO,
        sharpe=sharpe(returns), sortino=sortino(returns), days=len(returns),
        exposure=sum(1 for p in result.equity if p.open_positions) / len(result.equity) if result.equity else 0.0,
        overall=trade_stats(trades),
        by_exit_reason={r: trade_stats([t for t in trades if t.exit_reason == r]) for r in reasons},
        by_symbol={s: trade_stats([t for t in trades if t.symbol == s]) for s in symbols},
        open_at_end=len(result.open_at_end),
        unrealized_at_end=sum((p.unrealized_pnl for p in result.open_at_end), ZERO),
        kill_switch_trips=[{"at": t.at, "reason": t.reason} for t in result.trips],
    )
