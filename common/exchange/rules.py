"""A symbol's trading rules and the rounding they impose: Binance's exchangeInfo filters, and the
leverage brackets of ``GET /fapi/v1/leverageBracket`` (exchangeInfo has no ``maxLeverage``).

Sources:
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Exchange-Information
https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Notional-and-Leverage-Brackets
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Final

from common.contracts.base import plain_decimal

#: the max leverage of a symbol Binance lists without leverage brackets (it should not happen: every
#: listed symbol has brackets). 1x is the conservative choice: whatever is traded there is unlevered.
NO_BRACKET_MAX_LEVERAGE: Final = 1


@dataclass(frozen=True)
class LeverageBracket:
    """One notional bracket: positions up to ``notional_cap`` (USDT) may use up to ``initial_leverage``."""

    notional_cap: Decimal
    initial_leverage: int


@dataclass(frozen=True)
class SymbolRules:
    """What the exchange allows for one symbol."""

    symbol: str
    status: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    #: the first (lowest-notional) bracket's ``initialLeverage``
    max_leverage: int
    #: the leverage brackets, lowest notional first (empty when the exchange gave none)
    leverage_brackets: tuple[LeverageBracket, ...] = field(default=())

    @property
    def tradable(self) -> bool:
        return self.status == "TRADING"

    def round_qty(self, qty: Decimal) -> Decimal:
        """Round a quantity down to the step size (never more than asked)."""
        return _quantize(qty, self.step_size, ROUND_DOWN)

    def round_price(self, price: Decimal, *, up: bool | None = None) -> Decimal:
        """Round a price to the tick: to nearest by default, or up/down when ``up`` says so."""
        if up is None:
            steps = (price / self.tick_size).quantize(Decimal(1))
            return _normalize(steps * self.tick_size, self.tick_size)
        return _quantize(price, self.tick_size, ROUND_CEILING if up else ROUND_FLOOR)

    def notional(self, qty: Decimal, price: Decimal) -> Decimal:
        return qty * price

    def max_leverage_at(self, notional: Decimal) -> int:
        """The highest leverage a position of ``notional`` (USDT, absolute) may use: the
        ``initialLeverage`` of the first bracket whose cap holds it; 0 above the last cap (no leverage
        allows it). Without brackets: :attr:`max_leverage`."""
        if not self.leverage_brackets:
            return self.max_leverage
        for bracket in self.leverage_brackets:
            if abs(notional) <= bracket.notional_cap:
                return bracket.initial_leverage
        return 0

    def to_json(self) -> str:
        """The JSON kept in ``quantum:exchange:symbols`` (decimals as plain strings)."""
        return json.dumps(
            {
                "symbol": self.symbol,
                "status": self.status,
                "tick_size": plain_decimal(self.tick_size),
                "step_size": plain_decimal(self.step_size),
                "min_qty": plain_decimal(self.min_qty),
                "max_qty": plain_decimal(self.max_qty),
                "market_max_qty": plain_decimal(self.market_max_qty),
                "min_notional": plain_decimal(self.min_notional),
                "max_leverage": self.max_leverage,
                "leverage_brackets": [
                    {"notional_cap": plain_decimal(b.notional_cap), "initial_leverage": b.initial_leverage}
                    for b in self.leverage_brackets
                ],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SymbolRules:
        """Reads what :meth:`to_json` wrote, and the older JSON without ``leverage_brackets``."""
        data = json.loads(text)
        return cls(
            symbol=data["symbol"],
            status=data["status"],
            tick_size=Decimal(data["tick_size"]),
            step_size=Decimal(data["step_size"]),
            min_qty=Decimal(data["min_qty"]),
            max_qty=Decimal(data["max_qty"]),
            market_max_qty=Decimal(data["market_max_qty"]),
            min_notional=Decimal(data["min_notional"]),
            max_leverage=int(data["max_leverage"]),
            leverage_brackets=tuple(
                LeverageBracket(Decimal(b["notional_cap"]), int(b["initial_leverage"]))
                for b in data.get("leverage_brackets") or ()
            ),
        )

    @classmethod
    def from_exchange_info(
        cls, entry: Mapping[str, Any], brackets: tuple[LeverageBracket, ...] = ()
    ) -> SymbolRules:
        """From one ``symbols[]`` entry of ``GET /fapi/v1/exchangeInfo`` and the symbol's leverage
        brackets; the max leverage is the first bracket's (:data:`NO_BRACKET_MAX_LEVERAGE` without)."""
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        price = filters["PRICE_FILTER"]
        lot = filters["LOT_SIZE"]
        market = filters.get("MARKET_LOT_SIZE", lot)
        notional = filters.get("MIN_NOTIONAL", {}).get("notional", "0")
        return cls(
            symbol=entry["symbol"],
            status=entry.get("status", "TRADING"),
            tick_size=Decimal(price["tickSize"]).normalize(),
            step_size=Decimal(lot["stepSize"]).normalize(),
            min_qty=Decimal(lot["minQty"]),
            max_qty=Decimal(lot["maxQty"]),
            market_max_qty=Decimal(market["maxQty"]),
            min_notional=Decimal(notional),
            max_leverage=brackets[0].initial_leverage if brackets else NO_BRACKET_MAX_LEVERAGE,
            leverage_brackets=brackets,
        )


def _number(value: Any) -> Decimal:
    """A JSON number of the brackets (python-binance hands them over as int or float) as a Decimal."""
    return Decimal(str(value))


def parse_leverage_brackets(raw: Any) -> dict[str, tuple[LeverageBracket, ...]]:
    """``GET /fapi/v1/leverageBracket``: a list of ``{symbol, brackets}`` (no ``symbol`` sent) or a
    single such object (``symbol`` sent, per the docs); both are accepted. Brackets come out lowest
    notional first (by ``bracket`` number)."""
    entries = [raw] if isinstance(raw, Mapping) else list(raw or [])
    parsed: dict[str, tuple[LeverageBracket, ...]] = {}
    for entry in entries:
        rows = sorted(entry.get("brackets") or [], key=lambda b: (int(b.get("bracket", 0)), _number(b["notionalCap"])))
        parsed[str(entry["symbol"])] = tuple(
            LeverageBracket(_number(b["notionalCap"]), int(b["initialLeverage"])) for b in rows
        )
    return parsed


@dataclass(frozen=True)
class RulesLoad:
    """The rules built from exchangeInfo and the brackets, and what was left out or defaulted."""

    rules: dict[str, SymbolRules]
    #: symbol -> its contractType, for symbols left out because of it
    excluded: dict[str, str]
    #: symbols kept without leverage brackets (max leverage :data:`NO_BRACKET_MAX_LEVERAGE`)
    without_brackets: list[str]


def build_rules(
    info: Mapping[str, Any],
    brackets: Mapping[str, tuple[LeverageBracket, ...]],
    contract_types: Collection[str] | None = None,
) -> RulesLoad:
    """Every symbol of an exchangeInfo answer whose ``contractType`` is in ``contract_types`` (all when
    None), with its brackets."""
    rules: dict[str, SymbolRules] = {}
    excluded: dict[str, str] = {}
    without: list[str] = []
    for entry in info["symbols"]:
        symbol = entry["symbol"]
        contract_type = str(entry.get("contractType", ""))
        if contract_types is not None and contract_type not in contract_types:
            excluded[symbol] = contract_type
            continue
        found = brackets.get(symbol, ())
        if not found:
            without.append(symbol)
        rules[symbol] = SymbolRules.from_exchange_info(entry, found)
    return RulesLoad(rules, excluded, without)


def _normalize(value: Decimal, unit: Decimal) -> Decimal:
    exponent = unit.normalize().as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return value.quantize(Decimal(1).scaleb(-places))


def _quantize(value: Decimal, unit: Decimal, rounding: str) -> Decimal:
    steps = (value / unit).to_integral_value(rounding=rounding)
    return _normalize(steps * unit, unit)


def load_rules_file(path: Path) -> dict[str, SymbolRules]:
    """The rules of every symbol in an exchangeInfo-shaped JSON file (the paper exchange's), with the
    leverage brackets of its sibling ``leverageBracket`` list (Binance's shape of
    ``GET /fapi/v1/leverageBracket``)."""
    return load_rules_file_report(path).rules


def load_rules_file_report(path: Path) -> RulesLoad:
    """:func:`load_rules_file`, saying which symbols had no brackets."""
    info = json.loads(path.read_text(encoding="utf-8"))
    return build_rules(info, parse_leverage_brackets(info.get("leverageBracket", [])))
