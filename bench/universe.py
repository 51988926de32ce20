"""A market of many symbols for the benchmarks (Binance USD-M lists about 580 perpetuals): symbol rules in
the paper exchange's file shape (``config/paper_symbols.json``: exchangeInfo with ``leverageBracket``
beside it), written to a file that ``QT_PAPER__RULES_FILE`` names, a start price per symbol, the entry
plans that open a position on it, and a policy that lets every one of them trade."""

from __future__ import annotations

import copy
import json
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from common.config import DEFAULT_CONFIG_DIR
from common.contracts import ApplyPlan
from common.exchange.rules import SymbolRules, load_rules_file
from common.policy import Limits, Policy
from tests.plans import entry

#: Binance's whole USD-M perpetual list, roughly
ALL_MARKET = 580
#: synthetic market data starts a symbol without a configured price at this many ticks (as marketdata does)
START_TICKS = 10_000
#: the notional (USDT) of a benchmark position
NOTIONAL = Decimal("200")


def symbol_names(n: int) -> list[str]:
    """``n`` symbol names, ``B000USDT`` … (valid Binance-style names, distinct from the real ones)."""
    return [f"B{i:03d}USDT" for i in range(n)]


def write_rules(path: Path, n: int) -> dict[str, SymbolRules]:
    """The rules of ``n`` symbols, each a copy of one of the repo's paper symbols (their tick and step
    sizes, filters and leverage brackets taken in turn), written to ``path``; returns them as loaded."""
    source = json.loads((DEFAULT_CONFIG_DIR / "paper_symbols.json").read_text(encoding="utf-8"))
    templates = [s for s in source["symbols"] if s.get("status") == "TRADING" and s["symbol"].isascii()]
    brackets = {b["symbol"]: b["brackets"] for b in source.get("leverageBracket", [])}
    symbols: list[dict[str, Any]] = []
    leverage: list[dict[str, Any]] = []
    for i, name in enumerate(symbol_names(n)):
        template = templates[i % len(templates)]
        entry_ = copy.deepcopy(template)
        entry_.update(symbol=name, pair=name, baseAsset=name.removesuffix("USDT"))
        symbols.append(entry_)
        leverage.append({"symbol": name, "brackets": copy.deepcopy(brackets[template["symbol"]])})
    info = {k: v for k, v in source.items() if k not in ("symbols", "leverageBracket", "_comment")}
    info.update(symbols=symbols, leverageBracket=leverage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return load_rules_file(path)


def start_price(rules: SymbolRules) -> Decimal:
    """Where a symbol's benchmark price sits: :data:`START_TICKS` ticks (synthetic marketdata's default)."""
    return rules.tick_size * START_TICKS


def entry_qty(rules: SymbolRules, price: Decimal, notional: Decimal = NOTIONAL) -> Decimal:
    """The quantity of a position of about ``notional`` at ``price``: rounded up to the step, and at least
    the minimum quantity and notional."""
    qty = max(notional, rules.min_notional * 2) / price
    steps = (qty / rules.step_size).to_integral_value(rounding=ROUND_CEILING)
    return max(rules.min_qty, steps * rules.step_size).normalize()


def long_entry(name: str, rules: SymbolRules, price: Decimal, leverage: int = 10) -> ApplyPlan:
    """An ``ENTRY_PROPOSED`` long at ``price`` (stop 3 % below, take-profit 4 % above, on the tick grid),
    as intent_bridge publishes it."""
    return entry(name, symbol=rules.symbol, qty=str(entry_qty(rules, price)), price=str(price),
                 leverage=leverage, stop_loss=rules.round_price(price * Decimal("0.97")),
                 take_profit=rules.round_price(price * Decimal("1.04")))


def open_policy(symbols: list[str], max_open_positions: int, limits: Limits | None = None) -> Policy:
    """A policy that lets every symbol of the benchmark open a position: ``limits`` (default: room for
    ``max_open_positions`` positions of any size the benchmark opens)."""
    if limits is None:
        limits = Limits(max_open_positions=max_open_positions, max_margin_per_trade_usd=Decimal("500"),
                        max_total_notional_usd=Decimal("10000000"), max_leverage=20)
    return Policy(allowlist=tuple(symbols), limits=limits).with_version(0)
