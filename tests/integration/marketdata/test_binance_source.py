"""The Binance source against the fake Binance server (REST klines) and a local websocket server
that plays recorded-shape market stream messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from common.config import BinanceSettings, MarketdataSettings, load_settings
from services.marketdata.binance_source import BinanceFeed
from services.marketdata.publisher import Batch
from tests.fakes.fake_binance import FakeBinance, FakeBinanceServer
from tests.helpers import run

D = Decimal
MIN = 60_000
O0 = 1_731_576_000_000  # a minute boundary


def _open(i: int) -> int:
    return O0 + i * MIN


def _row(i: int) -> list[Any]:
    close = D("90000") + 10 * i
    return [_open(i), str(close - 5), str(close + 7), str(close - 9), str(close), "12.5", _open(i) + MIN - 1,
            "1125000", 900, "6", "540000", "0"]


def _kline_msg(i: int, closed: bool) -> str:
    r = _row(i)
    return json.dumps({"stream": "btcusdt@kline_1m", "data": {
        "e": "kline", "E": _open(i) + (MIN if closed else 1_000), "s": "BTCUSDT", "k": {
            "t": r[0], "T": r[6], "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": r[1], "c": r[4], "h": r[2],
            "l": r[3], "v": r[5], "n": 2, "x": closed, "q": "1", "V": "1", "Q": "1", "B": "0"}}})


def _mark_msg(price: str) -> str:
    """The all-market mark price stream's message: every symbol's ``markPriceUpdate`` in one array (a
    symbol the feed does not watch among them)."""
    return json.dumps({"stream": "!markPrice@arr@1s", "data": [
        {"e": "markPriceUpdate", "E": O0, "s": symbol, "p": price, "P": price, "i": price, "r": "0.0001", "T": O0}
        for symbol in ("ETHUSDT", "BTCUSDT")]})


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _feed(fake_url: str, clock: Callable[[], int], ws_url: str = "", backfill: int = 5) -> BinanceFeed:
    settings = load_settings(
        marketdata=MarketdataSettings(backfill_klines=backfill, binance_ws_url=ws_url, stale_after_s=5),
        binance=BinanceSettings(base_url=fake_url, backoff_initial_ms=20, backoff_max_ms=100, timeout_s=5))
    return BinanceFeed(settings, ["BTCUSDT"], clock=clock)


def test_rest_backfill_at_start_then_only_the_klines_after_the_last(
        fake_binance: FakeBinance, fake_binance_server: FakeBinanceServer) -> None:
    """Start: the last ``backfill_klines`` closed klines (the one in progress left out), asking for
    one more than needed; after a gap: only the klines after the last one, asked from its successor."""
    fake_binance.set_klines("BTCUSDT", "1m", [_row(i) for i in range(10)])
    clock = Clock(_open(9) + 30_000)  # kline 9 is in progress
    feed = _feed(fake_binance_server.base_url, clock)

    async def scenario() -> tuple[list[Any], list[Any]]:
        feed.client.open()
        try:
            first = await feed.backfill()
            fake_binance.set_klines("BTCUSDT", "1m", [_row(i) for i in range(14)])
            clock.now = _open(13) + 1_000
            second = await feed.backfill()
        finally:
            await feed.close()
        return first, second

    first, second = run(scenario())
    assert [k.open_time for k in first] == [_open(i) for i in range(4, 9)]
    assert all(k.closed and k.symbol == "BTCUSDT" and k.interval == "1m" for k in first)
    assert first[-1].close == D("90080") and first[-1].high == D("90087") and first[-1].volume == D("12.5")
    assert [k.open_time for k in second] == [_open(i) for i in range(9, 13)]
    calls = fake_binance.requests("/fapi/v1/klines")
    assert [c.params.get("limit") for c in calls] == ["6", "1500"]
    assert calls[0].params["symbol"] == "BTCUSDT" and calls[0].params["interval"] == "1m"
    assert "startTime" not in calls[0].params and calls[1].params["startTime"] == str(_open(9))


def test_websocket_feed_reconnects_and_fills_every_gap_from_rest(
        fake_binance: FakeBinance, fake_binance_server: FakeBinanceServer) -> None:
    """Live: mark prices become ticks (price = last trade), klines arrive in order; a dropped
    connection is reconnected and the klines missed meanwhile come from REST, as does a gap between
    two closed klines; every closed kline comes out exactly once, in order."""
    fake_binance.set_klines("BTCUSDT", "1m", [_row(i) for i in range(10)])
    clock = Clock(_open(9) + 30_000)
    paths: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        paths.append(ws.request.path)
        if len(paths) == 1:
            await ws.send(_mark_msg("90081.5"))
            await ws.send(_kline_msg(9, closed=False))
            await ws.send(_kline_msg(9, closed=True))
            await asyncio.sleep(0.3)
            # while the client is away, klines 10 and 11 close
            fake_binance.set_klines("BTCUSDT", "1m", [_row(i) for i in range(13)])
            clock.now = _open(12) + 1_000
            return  # closes the connection
        fake_binance.set_klines("BTCUSDT", "1m", [_row(i) for i in range(16)])
        clock.now = _open(15) + 1_000
        await ws.send(_kline_msg(11, closed=True))  # a repeat of what REST gave
        await ws.send(_kline_msg(14, closed=True))  # 12 and 13 skipped: a gap
        await ws.send(_mark_msg("90140.2"))
        await ws.wait_closed()

    async def scenario() -> tuple[list[Batch], BinanceFeed]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            feed = _feed(fake_binance_server.base_url, clock, ws_url=f"ws://127.0.0.1:{port}/")
            stop = asyncio.Event()
            batches: list[Batch] = []
            async for batch in feed.batches(stop):
                batches.append(batch)
                if any(k.closed and k.open_time == _open(14) for k in batch.klines):
                    stop.set()
            return batches, feed

    batches, feed = run(scenario(), timeout_s=20)
    closed = [k.open_time for b in batches for k in b.klines if k.closed]
    assert closed == [_open(i) for i in range(4, 15)]
    in_progress = [k for b in batches for k in b.klines if not k.closed]
    assert [k.open_time for k in in_progress] == [_open(9)]
    ticks = [t for b in batches for t in b.ticks]
    assert [(t.price, t.mark_price) for t in ticks] == [(D("90080"), D("90081.5")), (D("90140"), D("90140.2"))]
    assert feed.connects == 2 and feed.bad_messages == 0
    assert paths[0] == "/market/stream?streams=!markPrice@arr@1s/btcusdt@kline_1m"
    starts = [c.params.get("startTime") for c in fake_binance.requests("/fapi/v1/klines")]
    assert starts == [None, str(_open(10)), str(_open(12))]
