"""Latest-only reading of ``market.tick`` (common/bus/latest.py): the marks a reader acts on are the newest."""

from __future__ import annotations

from decimal import Decimal

from redis.asyncio import Redis

from common import keys
from common.bus.latest import TickFollower
from common.contracts import MarketTick, encode
from common.ids import hex16
from common.streams import Service, Stream
from tests.helpers import run

SYMBOLS = [f"S{i}USDT" for i in range(5)]


def tick(symbol: str, price: int) -> dict[str, str]:
    return encode(MarketTick(source=Service.MARKETDATA, trace_id=hex16("tick"), symbol=symbol,
                             price=Decimal(price), mark_price=Decimal(price)))


def test_a_reader_far_behind_acts_on_the_newest_marks_not_on_a_stale_round(redis_url: str) -> None:
    """Found by the 580-symbol benchmark: 500 rounds of ticks wait unread and a read takes 1,000 entries,
    oldest first — its "newest mark per symbol" was round 199's, and exitbrain closed fresh positions at a
    price long gone. A full read now jumps to the newest ticks: round 499's marks, and nothing after."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        follower = TickFollower(redis, batch=1000)
        follower.last_id = "0-0"  # it has been away since before the first tick
        async with redis.pipeline(transaction=False) as pipe:
            for rnd in range(500):
                for symbol in SYMBOLS:
                    pipe.xadd(keys.stream(Stream.MARKET_TICK), tick(symbol, 1000 + rnd))
            await pipe.execute()
        assert await follower.marks(block_ms=10) == {s: Decimal(1499) for s in SYMBOLS}
        assert await follower.marks(block_ms=10) == {}
        await redis.xadd(keys.stream(Stream.MARKET_TICK), tick("S0USDT", 2000))
        assert await follower.marks(block_ms=10) == {"S0USDT": Decimal(2000)}
        await redis.aclose()

    run(scenario())
