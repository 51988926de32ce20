"""The latest market values kept in hashes: ``quantum:market:price:{s}`` (price, mark_price, ts)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from common import keys
from common.contracts.base import plain_decimal


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


async def read_price(redis: Any, symbol: str) -> LatestPrice | None:
    """The latest price of ``symbol`` from its hash (``redis`` is a redis.asyncio client)."""
    return parse_price(symbol, await redis.hgetall(keys.market_price(symbol)))
