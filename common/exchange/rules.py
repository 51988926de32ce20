"""A symbol's trading rules and the rounding they impose (Binance exchangeInfo filters)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from common.contracts.base import plain_decimal


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
    max_leverage: int

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
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SymbolRules:
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
        )

    @classmethod
    def from_exchange_info(cls, entry: dict[str, Any], max_leverage: int | None = None) -> SymbolRules:
        """From one ``symbols[]`` entry of ``GET /fapi/v1/exchangeInfo``."""
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
            max_leverage=int(max_leverage if max_leverage is not None else entry.get("maxLeverage", 20)),
        )


def _normalize(value: Decimal, unit: Decimal) -> Decimal:
    exponent = unit.normalize().as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return value.quantize(Decimal(1).scaleb(-places))


def _quantize(value: Decimal, unit: Decimal, rounding: str) -> Decimal:
    steps = (value / unit).to_integral_value(rounding=rounding)
    return _normalize(steps * unit, unit)


def load_rules_file(path: Path) -> dict[str, SymbolRules]:
    """The rules of every symbol in an exchangeInfo-shaped JSON file (the paper exchange's)."""
    info = json.loads(path.read_text(encoding="utf-8"))
    return {entry["symbol"]: SymbolRules.from_exchange_info(entry) for entry in info["symbols"]}
