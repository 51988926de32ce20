"""Publisher: from batches to the writes of one round, and holding closed klines over an outage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aredis

from common import keys, streams
from common.bus import HashSet, Op, Publish
from common.contracts import MarketKline, MarketState, MarketTick, decode
from common.klines import Kline
from common.streams import Service, Stream
from ops.redis_server import free_port
from services.marketdata.publisher import Batch, Publisher, Tick
from tests.helpers import run

D = Decimal
MIN = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


def _kline(i: int, closed: bool = True, symbol: str = "BTCUSDT") -> Kline:
    c = D(100 + (i % 5))
    return Kline(symbol, "1m", i * MIN, c, c + 1, c - 1, c, D("3"), closed)


def _published(ops: list[Op], stream: str) -> list[object]:
    return [op.message for op in ops if isinstance(op, Publish) and op.stream == stream]


def test_ticks_publish_each_and_write_the_latest_price_with_the_wall_clock() -> None:
    """Every tick goes to market.tick; the price hash gets the symbol's last tick, stamped now."""
    clock = Clock()
    pub = Publisher(Service.MARKETDATA, kline_update_ms=0, clock=clock)
    batch = Batch(ticks=[Tick("BTCUSDT", D("100.1"), D("100.2")), Tick("BTCUSDT", D("100.3"), D("100.4")),
                         Tick("币安人生USDT", D("0.1031"), D("0.1032"))])
    durable, latest = pub.ops(batch)
    assert durable == []
    ticks = _published(latest, Stream.MARKET_TICK)
    assert [(t.symbol, t.price) for t in ticks if isinstance(t, MarketTick)] == [
        ("BTCUSDT", D("100.1")), ("BTCUSDT", D("100.3")), ("币安人生USDT", D("0.1031"))]
    hashes = {op.key: dict(op.mapping) for op in latest if isinstance(op, HashSet)}
    assert hashes == {
        keys.market_price("BTCUSDT"): {"price": "100.3", "mark_price": "100.4", "ts": str(clock.now)},
        keys.market_price("币安人生USDT"): {"price": "0.1031", "mark_price": "0.1032", "ts": str(clock.now)},
    }


def test_closed_klines_publish_once_and_state_follows_from_the_fortieth() -> None:
    """Each closed kline once (a repeat is dropped); a market state and its hash from kline 40 on."""
    pub = Publisher(Service.MARKETDATA, kline_update_ms=0, clock=Clock())
    durable, _ = pub.ops(Batch(klines=[_kline(i) for i in range(39)]))
    assert len(_published(durable, Stream.MARKET_KLINES)) == 39 and not _published(durable, Stream.MARKETSTATE)
    durable, _ = pub.ops(Batch(klines=[_kline(38), _kline(39), _kline(40)]))
    klines = _published(durable, Stream.MARKET_KLINES)
    assert [k.open_time for k in klines if isinstance(k, MarketKline)] == [39 * MIN, 40 * MIN]
    states = _published(durable, Stream.MARKETSTATE)
    assert len(states) == 2 and all(isinstance(s, MarketState) and s.symbol == "BTCUSDT" for s in states)
    hashes = [op for op in durable if isinstance(op, HashSet)]
    assert [op.key for op in hashes] == [keys.marketstate("BTCUSDT")] * 2


def test_in_progress_klines_are_throttled_per_symbol() -> None:
    """The latest in-progress kline of a symbol goes out at most every kline_update_ms; one older
    than the last closed kline never does."""
    clock = Clock()
    pub = Publisher(Service.MARKETDATA, kline_update_ms=1_000, clock=clock)
    _, latest = pub.ops(Batch(klines=[_kline(1, closed=False), _kline(1, closed=False)]))
    assert len(_published(latest, Stream.MARKET_KLINES)) == 1
    clock.now += 500
    _, latest = pub.ops(Batch(klines=[_kline(1, closed=False)]))
    assert _published(latest, Stream.MARKET_KLINES) == []
    clock.now += 500
    pub.ops(Batch(klines=[_kline(2)]))
    clock.now += 1_000
    _, latest = pub.ops(Batch(klines=[_kline(2, closed=False), _kline(3, closed=False, symbol="ETHUSDT")]))
    opened = _published(latest, Stream.MARKET_KLINES)
    assert [(k.symbol, k.open_time) for k in opened if isinstance(k, MarketKline)] == [("ETHUSDT", 3 * MIN)]


def test_closed_klines_survive_a_redis_outage_and_go_out_first(redis_url: str) -> None:
    """A round Redis refuses: its closed klines are held (its ticks dropped) and published, in
    order, before the next round's own."""
    pub = Publisher(Service.MARKETDATA, kline_update_ms=0)

    async def scenario() -> tuple[bool, bool, list[int], int]:
        down = aredis.Redis(port=free_port(), socket_connect_timeout=0.5)
        up = aredis.Redis.from_url(redis_url)
        try:
            refused = await pub.publish(down, Batch(ticks=[Tick("BTCUSDT", D("1"), D("1"))],
                                                    klines=[_kline(0), _kline(1)]))
            held = pub.backlog
            written = await pub.publish(up, Batch(klines=[_kline(2)]))
            entries = await up.xrange(streams.get(Stream.MARKET_KLINES).key)
            ticks = await up.xlen(streams.get(Stream.MARKET_TICK).key)
        finally:
            await down.aclose()
            await up.aclose()
        assert held == 2
        return refused, written, [decode(MarketKline, f or {}).open_time for _, f in entries or []], ticks

    refused, written, opens, ticks = run(scenario())
    assert refused is False and written is True
    assert opens == [0, MIN, 2 * MIN] and ticks == 0 and pub.backlog == 0 and pub.failed_rounds == 1


def test_a_backfill_is_committed_in_chunks_in_order(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-up backfill of 580 symbols is 116,000 klines: one transaction of all of them left the Redis
    server at 510 MiB RSS for 8 MiB of data. A large round is built and committed KLINE_CHUNK klines at a
    time, every kline once and in order."""
    from services.marketdata import publisher as module

    sizes: list[int] = []
    real = module.commit

    async def counting(redis: Any, ops: list[Op], **kwargs: Any) -> None:
        sizes.append(sum(1 for op in ops if isinstance(op, Publish) and op.stream == Stream.MARKET_KLINES))
        await real(redis, ops, **kwargs)

    monkeypatch.setattr(module, "commit", counting)
    monkeypatch.setattr(module, "KLINE_CHUNK", 100)

    async def scenario() -> None:
        r = aredis.Redis.from_url(redis_url, decode_responses=True)
        pub = Publisher(Service.MARKETDATA, kline_update_ms=0, clock=Clock())
        klines = [_kline(i, symbol=s) for i in range(50) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")]
        assert await pub.publish(r, Batch(klines=klines))
        assert sizes == [100, 100]
        entries = await r.xrange(streams.get(Stream.MARKET_KLINES).key)
        got = [(m.symbol, m.open_time) for m in (decode(MarketKline, f) for _, f in entries)]
        assert got == [(k.symbol, k.open_time) for k in klines]
        await r.aclose()

    run(scenario())
