"""Generated klines on the market.klines stream, and the exchange rules trading_bot sizes with."""

from __future__ import annotations

from decimal import Decimal

from redis.asyncio import Redis

from common import keys
from common.bus import publish
from common.config import REPO_ROOT
from common.contracts import MarketKline
from common.exchange.rules import load_rules_file
from common.market import rules_mapping
from common.streams import Service, Stream
from tests.helpers import TRACE

START_MS = 1_700_000_040_000
MINUTE_MS = 60_000


def trend(n: int, start: float = 50_000.0, step: float = 100.0, first: int = 0, symbol: str = "BTCUSDT",
          closed: bool = True) -> list[MarketKline]:
    """``n`` one-minute klines of a steady move of ``step`` per kline (kline ``first`` onwards)."""
    out = []
    for i in range(first, first + n):
        o, c = Decimal(str(start + step * i)), Decimal(str(start + step * (i + 1)))
        out.append(MarketKline(source=Service.MARKETDATA, trace_id=TRACE, symbol=symbol, interval="1m",
                               open_time=START_MS + i * MINUTE_MS, open=o, high=max(o, c) + 10,
                               low=min(o, c) - 10, close=c, volume=Decimal("3.5"), closed=closed))
    return out


async def send(redis: Redis, klines: list[MarketKline]) -> None:
    for kline in klines:
        await publish(redis, Service.MARKETDATA, (Stream.MARKET_KLINES, kline))


async def set_rules(redis: Redis) -> None:
    rules = load_rules_file(REPO_ROOT / "config" / "paper_symbols.json")
    await redis.hset(keys.exchange_symbols(), mapping=rules_mapping(rules))  # type: ignore[arg-type]
