"""What the backtest's tests share: settings built in code (no environment, no files), generated klines."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from backtest import synthetic
from backtest.config import BacktestConfig
from backtest.engine import RunResult
from common.config import Settings, load_settings
from common.contracts import TradeClosed
from common.klines import Kline
from common.policy import Limits, Policy

D = Decimal


def settings(symbols: list[str], **sections: dict[str, Any]) -> Settings:
    """The defaults of config/default.toml with ``sections`` over them (``exit={"max_hold_s": 3600}``)."""
    base = load_settings(symbols=tuple(symbols))
    return base.model_copy(update={name: getattr(base, name).model_copy(update=values)
                                   for name, values in sections.items()})


def config(klines: dict[str, list[Kline]], *, limits: Limits | None = None, rules: Any = None,
           **kwargs: Any) -> BacktestConfig:
    """A backtest of generated symbols, every one allowed, with the default settings unless told."""
    names = list(klines)
    conf = kwargs.pop("settings", None) or settings(names)
    return BacktestConfig(settings=conf, policy=Policy(allowlist=tuple(names), limits=limits or Limits()),
                          rules=rules if rules is not None else synthetic.rules_for(names), **kwargs)


def trades_of(result: RunResult) -> list[tuple[Any, ...]]:
    """The trades as the parity and equivalence tests compare them."""
    return [facts(t) for t in result.trades]


def facts(t: TradeClosed) -> tuple[Any, ...]:
    return (t.symbol, t.position_plan_id, t.side.value, t.qty, t.opened_at, t.closed_at, t.entry_price,
            t.exit_price, t.realized_pnl, t.fees, t.pnl_net, t.exit_reason)


def kline(symbol: str, open_time: int, o: str, h: str, lo: str, c: str, interval: str = "5m") -> Kline:
    return Kline(symbol, interval, open_time, D(o), D(h), D(lo), D(c), D("100"), True)
