"""The user data stream behind :meth:`BinanceExchange.events`: a listen key kept alive, the websocket
reconnected with backoff, and polling of ``userTrades`` and ``openAlgoOrders`` as the fallback while the
websocket is down (and once on every connect, to catch up).

Events: fills of our protective orders and of Binance's own orders (liquidation, ADL, settlement) from
ORDER_TRADE_UPDATE, and our conditionals the exchange ended without a fill from ALGO_UPDATE; each is
emitted once (a fill by its fill id), whichever of the stream and the poll saw it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import aiohttp
import structlog

from common.backoff import Backoff
from common.config import BinanceSettings
from common.contracts.base import plain_decimal
from common.contracts.enums import FillKind
from common.exchange.base import ConditionalEnded, ConditionalStatus, Exchange, ExchangeEvent, OrderEvent, is_ours
from common.exchange.binance.client import BinanceClient, futures_root
from common.exchange.binance.fills import FillReader
from common.exchange.binance.tracking import OrderTracking, remember
from common.exchange.binance.wire import (
    ENDED_BY_EXCHANGE,
    classify_fill,
    conditional_ended,
    fill_from_order_update,
    is_fill_update,
    is_forced_close,
)
from common.exchange.errors import ExchangeError, OrderNotFound, OrderRejected

log = structlog.get_logger()

MAINNET_WS_URL: Final = "wss://fstream.binance.com/private/ws/"
TESTNET_WS_URL: Final = "wss://fstream.binancefuture.com/private/ws/"
#: how far back polling looks when events() starts, and how much each poll overlaps the last one
POLL_LOOKBACK_MS: Final = 60_000
POLL_OVERLAP_MS: Final = 2_000
EVENT_QUEUE_MAX: Final = 1_000
#: algo order history of a symbol is re-read at most this often when meeting an unknown child order
ALGO_HISTORY_MIN_INTERVAL_S: Final = 1.0

Queue = asyncio.Queue[OrderEvent | None]


def user_stream_url(base_url: str, *, testnet: bool) -> str:
    """Where the user data stream lives: derived from ``base_url`` (the fake server) when it is set."""
    if base_url:
        root = futures_root(base_url)
        if root.startswith("https://"):
            root = "wss://" + root[len("https://") :]
        elif root.startswith("http://"):
            root = "ws://" + root[len("http://") :]
        return root + "/private/ws/"
    return TESTNET_WS_URL if testnet else MAINNET_WS_URL


class UserStream:
    """The events of one adapter. ``exchange`` answers the polls (positions, open conditionals)."""

    def __init__(self, client: BinanceClient, settings: BinanceSettings, tracking: OrderTracking,
                 fills: FillReader, exchange: Exchange) -> None:
        self.client = client
        self.settings = settings
        self.tracking = tracking
        self.fills = fills
        self.exchange = exchange
        self._backoff = Backoff(settings.backoff_initial_ms / 1000, settings.backoff_max_ms / 1000)
        self._session: aiohttp.ClientSession | None = None
        self._listen_key: str | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._running = False
        self._queue: Queue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._cursor_ms = 0
        self._open_algos_listed = False

    @property
    def connected(self) -> bool:
        """Whether the websocket is up (else :meth:`events` is polling)."""
        return self._connected.is_set()

    def open(self) -> None:
        """The websocket's HTTP session (inside the running loop)."""
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        """Stop the stream and the polls, end :meth:`events`, give the listen key back."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
        if self._listen_key and self.client.is_open:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.client.call("futures_stream_close", mutation=False, listenKey=self._listen_key),
                    self.settings.timeout_s,
                )
            self._listen_key = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def events(self) -> AsyncIterator[OrderEvent]:
        """What :meth:`common.exchange.base.Exchange.events` promises, until :meth:`close`."""
        if self._running:
            raise RuntimeError("events() is already being consumed")
        self._running = True
        queue: Queue = asyncio.Queue(EVENT_QUEUE_MAX)
        self._queue = queue
        self._cursor_ms = self.client.server_now_ms() - POLL_LOOKBACK_MS
        self._tasks = [
            asyncio.create_task(self._stream_loop(queue), name="binance_user_stream"),
            asyncio.create_task(self._poll_loop(queue), name="binance_fill_poller"),
            asyncio.create_task(self._keepalive_loop(), name="binance_listen_key_keepalive"),
        ]
        for task in self._tasks:
            task.add_done_callback(_log_task_end)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            self._running = False
            self._queue = None

    async def _emit(self, queue: Queue, event: OrderEvent) -> None:
        """Queue an event once: a fill by its fill id, an ended conditional by its id and status."""
        if isinstance(event, ExchangeEvent):
            key = event.fill.fill_id
        else:
            key = f"ended:{event.client_algo_id}:{event.status.value}"
        if key in self._seen:
            return
        remember(self._seen, key, None)
        if isinstance(event, ExchangeEvent):
            self._cursor_ms = max(self._cursor_ms, event.fill.ts_ms)
            log.info(
                "binance_fill_event",
                kind=event.kind.value,
                symbol=event.fill.symbol,
                origin_id=event.origin_id,
                fill_id=key,
                qty=plain_decimal(event.fill.qty),
                price=plain_decimal(event.fill.price),
            )
        else:
            self.tracking.forget_open(event.symbol, event.client_algo_id)
            log.warning(
                "binance_conditional_ended",
                symbol=event.symbol,
                client_algo_id=event.client_algo_id,
                status=event.status.value,
                reason=event.reason,
            )
        await queue.put(event)

    # --- the websocket -----------------------------------------------------------------------------

    async def _ensure_listen_key(self) -> str:
        if self._listen_key is None:
            self._listen_key = str(await self.client.call("futures_stream_get_listen_key", mutation=False))
            log.info("binance_listen_key_created")
        return self._listen_key

    async def _stream_loop(self, queue: Queue) -> None:
        url = user_stream_url(self.settings.base_url, testnet=self.client.testnet)
        attempt = 0
        while True:
            try:
                key = await self._ensure_listen_key()
                assert self._session is not None
                async with asyncio.timeout(self.settings.timeout_s):
                    ws = await self._session.ws_connect(url + key, heartbeat=30.0)
                async with ws:
                    self._ws = ws
                    self._connected.set()
                    attempt = 0
                    log.info("binance_user_stream_connected")
                    await self._catch_up(queue)
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            await self._on_message(json.loads(message.data), queue)
                        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the stream must survive anything; polling covers the gap
                log.warning("binance_user_stream_failed", error=type(e).__name__, detail=str(e)[:200])
                if isinstance(e, aiohttp.WSServerHandshakeError):
                    self._listen_key = None  # refused: perhaps the key is gone; ask for one again
            finally:
                if self._connected.is_set():
                    log.warning("binance_user_stream_disconnected")
                self._connected.clear()
                self._ws = None
            await asyncio.sleep(self._backoff.delay_s(attempt))
            attempt += 1

    async def _on_message(self, message: dict[str, Any], queue: Queue) -> None:
        handler = self._handlers.get(str(message.get("e")))
        if handler is not None:
            await handler(self, message, queue)

    async def _on_order_update(self, message: dict[str, Any], queue: Queue) -> None:
        event = await self._event_from_order_update(message["o"])
        if event is not None:
            await self._emit(queue, event)

    async def _on_algo_update(self, message: dict[str, Any], queue: Queue) -> None:
        o = message["o"]
        if o.get("ai"):
            remember(self.tracking.algo_children, str(o["ai"]), (o["caid"], o["o"]))
        if o.get("X") != "NEW":
            self.tracking.forget_open(o["s"], o["caid"])
        ended = conditional_ended(message)
        if ended is not None:
            await self._emit(queue, ended)

    async def _on_listen_key_expired(self, message: dict[str, Any], queue: Queue) -> None:
        log.warning("binance_listen_key_expired")
        self._listen_key = None
        if self._ws is not None:
            await self._ws.close()

    _handlers: Final[dict[str, Callable[[UserStream, dict[str, Any], Queue], Awaitable[None]]]] = {
        "ORDER_TRADE_UPDATE": _on_order_update,
        "ALGO_UPDATE": _on_algo_update,
        "listenKeyExpired": _on_listen_key_expired,
    }

    async def _event_from_order_update(self, o: dict[str, Any]) -> ExchangeEvent | None:
        if not is_fill_update(o):
            return None
        order_id = str(o["i"])
        symbol = o["s"]
        children = self.tracking.algo_children
        if order_id not in children and not is_ours(o["c"]) and not is_forced_close(o["c"]):
            # the child of a triggered algo order may fill before its ALGO_UPDATE names it (``ai``):
            # ask the algo history, at most once a second per symbol
            read_at = self.tracking.algo_history_read.get(symbol, 0.0)
            if time.monotonic() - read_at >= ALGO_HISTORY_MIN_INTERVAL_S:
                try:
                    await self.fills.algo_history(symbol)
                except ExchangeError as e:
                    log.warning("binance_algo_history_failed", symbol=symbol, error=type(e).__name__)
        child = children.get(order_id)
        client_id, order_type = child if child is not None else (o["c"], o.get("ot") or o.get("o", ""))
        kind = classify_fill(client_id, order_type)
        if kind is None:
            return None
        try:
            fill = await self.fills.in_usdt(fill_from_order_update(o, client_id))
        except ExchangeError as e:  # the fee's mark could not be read: the poll will book it later
            log.warning("binance_fill_event_deferred", order_id=order_id, error=type(e).__name__)
            return None
        origin = order_id if kind is FillKind.LIQUIDATION else client_id
        return ExchangeEvent(kind=kind, fill=fill, origin_id=origin)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.listen_key_keepalive_s)
            key = self._listen_key
            if key is None:
                continue
            try:
                await self.client.call("futures_stream_keepalive", mutation=False, listenKey=key)
                log.info("binance_listen_key_kept_alive")
            except OrderRejected as e:  # -1125: the key is gone; reconnect with a new one
                log.warning("binance_listen_key_lost", code=e.code)
                self._listen_key = None
                if self._ws is not None:
                    await self._ws.close()
            except ExchangeError as e:
                log.warning("binance_listen_key_keepalive_failed", error=type(e).__name__)

    # --- polling, the fallback ---------------------------------------------------------------------

    async def _catch_up(self, queue: Queue) -> None:
        """Poll once for what happened while the stream was down; a failure here must not drop the
        stream that just came up."""
        try:
            await self._poll_once(queue)
        except ExchangeError as e:
            log.warning("binance_fill_poll_failed", error=type(e).__name__, detail=str(e)[:200])

    async def _poll_loop(self, queue: Queue) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            if self._connected.is_set():
                continue
            try:
                await self._poll_once(queue)
            except ExchangeError as e:
                log.warning("binance_fill_poll_failed", error=type(e).__name__, detail=str(e)[:200])

    async def _poll_once(self, queue: Queue) -> None:
        """Emit the conditional-order and liquidation fills since the cursor, for every symbol with a
        position, an open conditional, or one we have traded, protected or asked :meth:`fills_since`
        about; then the conditionals that ended meanwhile."""
        since = self._cursor_ms - POLL_OVERLAP_MS
        if not self._open_algos_listed:
            await self.exchange.open_conditionals()  # once: what a fresh adapter must watch for ends (weight 40)
            self._open_algos_listed = True
        symbols = set(self.tracking.watched) | set(await self.exchange.positions())
        for symbol in sorted(symbols):
            for fill in await self.fills.fills_since(symbol, since):
                _, order_type, _ = await self.fills.fill_facts(symbol, fill.order_id)
                kind = classify_fill(fill.client_order_id, order_type)
                if kind is None:
                    continue
                origin = fill.order_id if kind is FillKind.LIQUIDATION else fill.client_order_id
                await self._emit(queue, ExchangeEvent(kind=kind, fill=fill, origin_id=origin))
        await self._poll_conditionals(queue)
        if self._connected.is_set():
            self._cursor_ms = max(self._cursor_ms, self.client.server_now_ms() - POLL_OVERLAP_MS)

    async def _poll_conditionals(self, queue: Queue) -> None:
        """Our conditionals that left openAlgoOrders since last seen: those the exchange rejected or
        expired become :class:`ConditionalEnded`. (A CANCELED one cannot be told apart from a cancel by
        another process over REST — the reason ``rm`` is only in ALGO_UPDATE — so it is not reported.)"""
        for symbol, tracked in list(self.tracking.open_algos.items()):
            if not tracked:
                continue
            open_now = {o["clientAlgoId"] for o in await self.client.call(
                "futures_get_open_orders", mutation=False, conditional=True, symbol=symbol)}
            for client_algo_id in sorted(tracked - open_now):
                try:
                    order = await self.exchange.get_conditional(symbol, client_algo_id)
                except OrderNotFound:
                    self.tracking.forget_open(symbol, client_algo_id)
                    continue
                if order.status is ConditionalStatus.NEW:
                    continue  # listed again next time (a lagging list)
                self.tracking.forget_open(symbol, client_algo_id)
                if order.status.value in ENDED_BY_EXCHANGE:
                    await self._emit(queue, ConditionalEnded(
                        symbol=symbol, client_algo_id=client_algo_id, status=order.status,
                        reason=f"{order.status.value} (seen by polling: the REST answer gives no reason)",
                        ts_ms=self.client.server_now_ms(),
                    ))


def _log_task_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("binance_task_failed", task=task.get_name(), error=type(error).__name__, detail=str(error)[:200])
