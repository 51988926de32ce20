"""The ``binance`` source: Binance USD-M market streams through python-binance.

Websockets (``!markPrice@arr@1s`` and ``<symbol>@kline_<interval>``, one combined stream) give
the live data; REST klines (``GET /fapi/v1/klines``) backfill ``backfill_klines`` at start and the
klines missed after every reconnect or skipped between two closed klines. The websocket is
reconnected with capped, jittered backoff when it fails, reports an error, or stays silent for
``stale_after_s``.

REST goes through the adapter's one client (:class:`~common.exchange.binance.client.BinanceClient`,
its errors translated); python-binance names the stream hosts; the websocket itself is an aiohttp
connection, reconnected here (python-binance's own socket reconnects on its own, behind the
caller's back, and so would hide the gaps that need a backfill). The messages are parsed by
:mod:`common.exchange.binance.market`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import structlog
from binance import BinanceSocketManager

from common.backoff import Backoff, pause
from common.config import Settings
from common.contracts import now_ms
from common.exchange.binance.client import BinanceClient
from common.exchange.binance.market import (
    REST_LIMIT,
    BadMessage,
    MarkPrice,
    StreamError,
    WsEvent,
    parse_rest_klines,
    parse_ws_events,
    stream_names,
)
from common.exchange.errors import ExchangeError
from common.klines import Kline, interval_ms
from services.marketdata.publisher import Batch, Tick

log = structlog.get_logger()

#: messages of one round are gathered for at most this long after the first one
FLUSH_S = 0.1
#: the longest a read waits before the loop beats (and checks staleness) again
IDLE_S = 1.0
#: websocket ping interval (Binance pings every few minutes and drops a silent client)
WS_HEARTBEAT_S = 30.0


class WebsocketDown(ConnectionError):
    """The websocket reported an error or went silent: reconnect (usually resolves itself)."""


def missing_klines(last_open: int | None, open_time: int, kline_ms: int) -> int:
    """How many closed klines lie between the last one published and ``open_time``: 0 when it is the
    next one (or the first), -1 when it is not new (a repeat)."""
    if last_open is None:
        return 0
    if open_time <= last_open:
        return -1
    return (open_time - last_open) // kline_ms - 1


class BinanceFeed:
    """Live market data of ``symbols`` from Binance USD-M (testnet when the exchange is)."""

    name = "binance"

    def __init__(self, settings: Settings, symbols: Sequence[str], *, clock: Callable[[], int] = now_ms) -> None:
        self.md = settings.marketdata
        self.bn = settings.binance
        #: REST (klines) without keys: market data is public
        self.client = BinanceClient.from_settings(settings, keys=False)
        self.testnet = self.client.testnet
        self.symbols = list(symbols)
        self.interval = self.md.kline_interval
        self.kline_ms = interval_ms(self.interval)
        self.clock = clock
        self.backoff = Backoff(self.bn.backoff_initial_ms / 1000, self.bn.backoff_max_ms / 1000)
        self.last_closed: dict[str, int] = {}
        self.last_trade: dict[str, Decimal] = {}
        self.session: aiohttp.ClientSession | None = None
        #: counts for logs and tests
        self.connects = self.bad_messages = self.backfilled = 0

    # --- REST --------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        await self.client.close()

    async def fetch_klines(self, symbol: str, *, limit: int, start_ms: int | None = None) -> list[Kline]:
        """Closed klines of ``symbol`` from REST: the last ``limit`` ones, or ``limit`` from ``start_ms``."""
        params: dict[str, Any] = {"symbol": symbol, "interval": self.interval, "limit": min(limit, REST_LIMIT)}
        if start_ms is not None:
            params["startTime"] = start_ms
        rows = await self.client.call("futures_klines", mutation=False, **params)
        return parse_rest_klines(rows, symbol, self.interval, self.clock())

    async def backfill(self) -> list[Kline]:
        """Every symbol's klines since its last closed one (or its last ``backfill_klines`` at start),
        oldest first. A symbol whose request fails is skipped (the next gap fill tries again)."""
        out: list[Kline] = []
        for symbol in self.symbols:
            last = self.last_closed.get(symbol)
            try:
                if last is None:
                    if not self.md.backfill_klines:
                        continue
                    klines = await self.fetch_klines(symbol, limit=self.md.backfill_klines + 1)
                    klines = klines[-self.md.backfill_klines:]
                else:
                    klines = await self.fetch_klines(symbol, limit=REST_LIMIT, start_ms=last + self.kline_ms)
            except ExchangeError as e:
                log.warning("binance_backfill_failed", symbol=symbol, error=repr(e))
                continue
            klines = [k for k in klines if last is None or k.open_time > last]
            if klines:
                self.last_closed[symbol] = klines[-1].open_time
                self.last_trade[symbol] = klines[-1].close
            out.extend(klines)
        self.backfilled += len(out)
        log.info("binance_backfilled", klines=len(out), symbols=len(self.symbols))
        return sorted(out, key=lambda k: k.open_time)

    # --- websocket ---------------------------------------------------------------------------------

    async def apply(self, event: WsEvent, batch: Batch) -> None:
        """Add one event to the round: a tick per mark price, klines in order with any gap filled."""
        if isinstance(event, StreamError):
            raise WebsocketDown(f"{event.kind}: {event.message}")
        if isinstance(event, MarkPrice):
            if event.symbol in self.last_trade or event.symbol in self.symbols:
                price = self.last_trade.get(event.symbol, event.mark_price)
                batch.ticks.append(Tick(event.symbol, price, event.mark_price))
            return
        kline = event.kline
        if kline.symbol not in self.symbols or kline.interval != self.interval:
            return
        self.last_trade[kline.symbol] = kline.close
        last = self.last_closed.get(kline.symbol)
        if last is not None and kline.open_time <= last:
            return  # a repeat, or an update of a kline REST already gave closed
        if not kline.closed:
            batch.klines.append(kline)
            return
        if missing_klines(last, kline.open_time, self.kline_ms) > 0:
            assert last is not None
            try:
                gap = await self.fetch_klines(kline.symbol, limit=REST_LIMIT, start_ms=last + self.kline_ms)
            except ExchangeError as e:
                log.warning("binance_gap_fill_failed", symbol=kline.symbol, error=repr(e))
                gap = []
            filled = [k for k in gap if last < k.open_time < kline.open_time]
            log.info("binance_gap_filled", symbol=kline.symbol, missing=missing_klines(
                last, kline.open_time, self.kline_ms), filled=len(filled))
            batch.klines.extend(filled)
        self.last_closed[kline.symbol] = kline.open_time
        batch.klines.append(kline)

    def ws_url(self) -> str:
        """The combined market stream of every symbol (``binance_ws_url`` overrides the host)."""
        base = self.md.binance_ws_url or (BinanceSocketManager.FSTREAM_TESTNET_URL if self.testnet
                                          else BinanceSocketManager.FSTREAM_URL.format("com"))
        return f"{base.rstrip('/')}/market/stream?streams={'/'.join(stream_names(self.symbols, self.interval))}"

    async def stream(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        """Rounds from one websocket connection until it fails (raises) or ``stop`` is set."""
        assert self.session is not None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.bn.timeout_s):
            ws = await self.session.ws_connect(self.ws_url(), heartbeat=WS_HEARTBEAT_S)
        async with ws:
            self.connects += 1
            log.info("binance_ws_connected", streams=len(self.symbols) + 1, connects=self.connects)
            last_message = loop.time()
            while not stop.is_set():
                batch = Batch()
                deadline: float | None = None
                while True:
                    wait = IDLE_S if deadline is None else deadline - loop.time()
                    if wait <= 0:
                        break
                    try:
                        message = await ws.receive(timeout=wait)
                    except TimeoutError:
                        break
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        raise WebsocketDown(f"websocket {message.type.name.lower()}")
                    last_message = loop.time()
                    deadline = deadline or last_message + FLUSH_S
                    try:
                        events = parse_ws_events(json.loads(message.data))
                    except (BadMessage, ValueError) as e:
                        self.bad_messages += 1
                        log.warning("binance_ws_bad_message", error=str(e)[:200])
                        continue
                    for event in events:
                        await self.apply(event, batch)
                if loop.time() - last_message > self.md.stale_after_s:
                    raise WebsocketDown(f"no message for {self.md.stale_after_s}s")
                yield batch

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        self.client.open()
        self.session = aiohttp.ClientSession()
        try:
            yield Batch(klines=await self.backfill())
            attempt = 0
            while not stop.is_set():
                try:
                    async for batch in self.stream(stop):
                        if batch:
                            attempt = 0
                        yield batch
                except Exception as e:  # every failure of a connection ends in a reconnect
                    log.warning("binance_ws_down", error=repr(e), attempt=attempt)
                if stop.is_set():
                    return
                delay = self.backoff.delay_s(attempt)
                attempt += 1
                log.info("binance_ws_reconnecting", delay_s=round(delay, 3), attempt=attempt)
                yield Batch()
                if await pause(stop, delay):
                    return
                yield Batch(klines=await self.backfill())
        finally:
            await self.close()
