"""The latest market values kept in hashes: ``quantum:market:price:{s}`` (price, mark_price, ts)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from common.contracts.base import encode, plain_decimal
from common.contracts.messages import MarketState
from common.exchange.rules import SymbolRules


@dataclass(frozen=True)
class LatestPrice:
    symbol: str
    price: Decimal
    mark_price: Decimal
    ts: int


def price_mapping(price: Decimal, mark_price: Decimal, ts: int) -> dict[str, str]:
    """The fields of ``quantum:market:price:{s}``."""
    return {"price": plain_decimal(price), "mark_price": plain_decimal(mark_price), "ts": str(ts)}


def parse_price(symbol: str, fields: dict[Any, Any]) -> LatestPrice | None:
    """A price hash as read by ``HGETALL`` (bytes or str), or None when absent or malformed."""
    if not fields:
        return None
    data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()}
    try:
        return LatestPrice(symbol, Decimal(data["price"]), Decimal(data["mark_price"]), int(data["ts"]))
    except (KeyError, ValueError, InvalidOperation):
        return None


def marketstate_mapping(state: MarketState) -> dict[str, str]:
    """The fields of ``quantum:marketstate:{s}``: the contract's own encoding (envelope included)."""
    return encode(state)


def rules_mapping(rules: dict[str, SymbolRules]) -> dict[str, str]:
    """The fields of ``quantum:exchange:symbols``: symbol -> JSON rules."""
    return {symbol: r.to_json() for symbol, r in rules.items()}
