"""Binance USD-M perpetual futures through python-binance's ``AsyncClient`` (DESIGN §6, §8).

What python-binance does not do, this adapter does: a timeout on every request, the clock offset synced
at start and again on -1021, quantities and prices rounded to the symbol's step and tick and sent as
plain decimal strings, booleans as ``"true"``/``"false"``, our own ``newClientOrderId`` /
``clientAlgoId`` on every order, and every vendor error translated at this boundary
(:mod:`common.exchange.binance_errors`). Retries are not done here: :mod:`common.exchange.placement`
owns them.

``events()`` reads the user data stream (a listen key kept alive, the websocket reconnected with
backoff) and falls back to polling ``userTrades`` while the websocket is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, Final

import aiohttp
import structlog
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from common.backoff import Backoff
from common.config import BinanceSettings, Settings
from common.contracts.base import plain_decimal
from common.contracts.enums import FillKind, Side
from common.exchange.base import (
    Balance,
    ConditionalKind,
    ConditionalOrder,
    ConditionalStatus,
    Exchange,
    ExchangeEvent,
    ExchangePosition,
    Fill,
    OrderResult,
    OrderStatus,
)
from common.exchange.binance_errors import (
    TIMESTAMP_OUTSIDE_RECV_WINDOW,
    TRANSPORT_ERRORS,
    translate_api_error,
    translate_transport_error,
)
from common.exchange.errors import (
    ExchangeError,
    OrderNotFound,
    OrderRejected,
    SymbolNotTradable,
    UnknownOutcome,
)
from common.exchange.rules import SymbolRules

log = structlog.get_logger()

MAINNET_WS_URL: Final = "wss://fstream.binance.com/private/ws/"
TESTNET_WS_URL: Final = "wss://fstream.binancefuture.com/private/ws/"
#: how far back polling looks when events() starts, and how much each poll overlaps the last one
POLL_LOOKBACK_MS: Final = 60_000
POLL_OVERLAP_MS: Final = 2_000
SEEN_FILLS_MAX: Final = 10_000
EVENT_QUEUE_MAX: Final = 1_000

ALGO_STATUS: Final = {
    "NEW": ConditionalStatus.NEW,
    "TRIGGERING": ConditionalStatus.TRIGGERED,
    "TRIGGERED": ConditionalStatus.TRIGGERED,
    "FINISHED": ConditionalStatus.FINISHED,
    "CANCELED": ConditionalStatus.CANCELED,
    "EXPIRED": ConditionalStatus.EXPIRED,
    "REJECTED": ConditionalStatus.EXPIRED,
}
ORDER_TYPE_KIND: Final = {
    "STOP_MARKET": FillKind.STOP,
    "STOP": FillKind.STOP,
    "TAKE_PROFIT_MARKET": FillKind.TAKE_PROFIT,
    "TAKE_PROFIT": FillKind.TAKE_PROFIT,
    "LIQUIDATION": FillKind.LIQUIDATION,
}
LIQUIDATION_PREFIXES: Final = ("autoclose-", "adl_autoclose")
#: Binance order statuses beyond ours
ORDER_STATUS_ALIASES: Final = {
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
    "NEW_INSURANCE": OrderStatus.NEW,
    "NEW_ADL": OrderStatus.NEW,
}
#: userTrades refuses a startTime more than 7 days back
USER_TRADES_MAX_LOOKBACK_MS: Final = 7 * 86_400_000 - 60_000


def _bool_param(value: bool) -> str:
    return "true" if value else "false"


def futures_root(base_url: str) -> str:
    """``http://host:port`` from a base URL given with or without the ``/fapi`` suffix."""
    root = base_url.rstrip("/")
    return root[: -len("/fapi")] if root.endswith("/fapi") else root


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


def classify_fill(client_id: str, order_type: str) -> FillKind | None:
    """Which kind of unrequested fill this is: a liquidation, or one of *our* protective orders
    (``qt-<plan_id>-sl|-tp``); ``None`` for anything else (our market orders, foreign orders)."""
    if order_type == "LIQUIDATION" or client_id.startswith(LIQUIDATION_PREFIXES):
        return FillKind.LIQUIDATION
    if not client_id.startswith("qt-"):
        return None
    kind = ORDER_TYPE_KIND.get(order_type)
    if kind is not None:
        return kind
    if client_id.endswith("-sl"):
        return FillKind.STOP
    if client_id.endswith("-tp"):
        return FillKind.TAKE_PROFIT
    return None


def _order_result(raw: dict[str, Any], fills: tuple[Fill, ...]) -> OrderResult:
    return OrderResult(
        symbol=raw["symbol"],
        client_order_id=raw["clientOrderId"],
        order_id=str(raw["orderId"]),
        side=Side(raw["side"]),
        status=ORDER_STATUS_ALIASES.get(raw["status"]) or OrderStatus(raw["status"]),
        orig_qty=Decimal(raw["origQty"]),
        executed_qty=Decimal(raw["executedQty"]),
        avg_price=Decimal(raw.get("avgPrice") or "0"),
        reduce_only=bool(raw.get("reduceOnly", False)),
        update_time_ms=int(raw.get("updateTime") or 0),
        fills=fills,
    )


def _conditional(raw: dict[str, Any]) -> ConditionalOrder:
    close_position = bool(raw.get("closePosition", False))
    quantity = raw.get("quantity")
    return ConditionalOrder(
        symbol=raw["symbol"],
        client_algo_id=raw["clientAlgoId"],
        algo_id=str(raw["algoId"]),
        kind=ConditionalKind(raw["orderType"]),
        side=Side(raw["side"]),
        trigger_price=Decimal(raw["triggerPrice"]),
        close_position=close_position,
        quantity=None if close_position or not quantity else Decimal(quantity),
        status=ALGO_STATUS.get(raw.get("algoStatus", "NEW"), ConditionalStatus.NEW),
    )


def _fill_from_trade(trade: dict[str, Any], client_id: str, reduce_only: bool) -> Fill:
    return Fill(
        fill_id=f"{trade['orderId']}-{trade['id']}",
        order_id=str(trade["orderId"]),
        client_order_id=client_id,
        symbol=trade["symbol"],
        side=Side(trade["side"]),
        qty=Decimal(trade["qty"]),
        price=Decimal(trade["price"]),
        fee=Decimal(trade["commission"]),
        fee_asset=trade.get("commissionAsset", "USDT"),
        reduce_only=reduce_only,
        realized_pnl=Decimal(trade["realizedPnl"]) if "realizedPnl" in trade else None,
        ts_ms=int(trade["time"]),
    )


class BinanceExchange(Exchange):
    """Binance USD-M futures (mainnet or testnet) through python-binance."""

    def __init__(self, settings: BinanceSettings, *, testnet: bool = False) -> None:
        self.settings = settings
        self.testnet = testnet
        self.name = "binance-testnet" if testnet else "binance"
        self._client: Any = None
        self._ws_session: aiohttp.ClientSession | None = None
        self._rules: dict[str, SymbolRules] = {}
        self._rules_loaded_at = 0.0
        self._time_lock = asyncio.Lock()
        self._backoff = Backoff(settings.backoff_initial_ms / 1000, settings.backoff_max_ms / 1000)
        # user data stream
        self._listen_key: str | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ws_connected = asyncio.Event()
        self._events_running = False
        self._queue: asyncio.Queue[ExchangeEvent | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_fills: OrderedDict[str, None] = OrderedDict()
        self._watched: set[str] = set()
        self._order_info: dict[tuple[str, str], tuple[str, str, bool]] = {}
        self._algo_children: dict[str, str] = {}
        self._cursor_ms = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> BinanceExchange:
        return cls(settings.binance, testnet=settings.exchange == "binance-testnet")

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the client inside the running loop (not ``create()``: it pings spot), point it at
        the configured base URL, sync the clock and load the symbol rules."""
        s = self.settings
        timeout = aiohttp.ClientTimeout(total=s.timeout_s, sock_connect=min(s.timeout_s, 5.0) / 2)
        client = AsyncClient(
            s.api_key.get_secret_value(),
            s.api_secret.get_secret_value(),
            requests_params={"timeout": timeout},
            testnet=self.testnet,
        )
        client.REQUEST_RECVWINDOW = s.recv_window_ms
        if s.base_url:
            url = futures_root(s.base_url) + "/fapi"
            if self.testnet:
                client.FUTURES_TESTNET_URL = url
            else:
                client.FUTURES_URL = url
        self._client = client
        self._ws_session = aiohttp.ClientSession()
        try:
            await self._sync_time()
            await self.symbol_rules()
        except BaseException:
            await self.close()
            raise
        log.info("binance_started", exchange=self.name, symbols=len(self._rules), testnet=self.testnet)

    async def close(self) -> None:
        """Stop the user data stream, end :meth:`events`, release the HTTP sessions."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
        if self._listen_key and self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.futures_stream_close(self._listen_key), self.settings.timeout_s)
            self._listen_key = None
        if self._ws_session is not None:
            await self._ws_session.close()
            self._ws_session = None
        if self._client is not None:
            await self._client.close_connection()
            self._client = None

    @property
    def user_stream_connected(self) -> bool:
        """Whether the user data stream's websocket is up (else :meth:`events` is polling)."""
        return self._ws_connected.is_set()

    # --- the one way to call Binance -------------------------------------------------------------

    async def _call(self, endpoint: str, /, *, mutation: bool, **params: Any) -> Any:
        """Call ``AsyncClient.<endpoint>(**params)``, translating every failure; a -1021 re-syncs the
        clock and tries once more (the request was refused, so resending cannot double anything)."""
        if self._client is None:
            raise RuntimeError("BinanceExchange is not started")
        for attempt in (1, 2):
            try:
                return await getattr(self._client, endpoint)(**params)
            except BinanceAPIException as e:
                if e.code == TIMESTAMP_OUTSIDE_RECV_WINDOW and attempt == 1:
                    log.warning("binance_timestamp_rejected", endpoint=endpoint)
                    await self._sync_time()
                    continue
                error = translate_api_error(e, mutation=mutation)
                log.warning(
                    "binance_request_failed",
                    endpoint=endpoint,
                    code=e.code,
                    status=e.status_code,
                    error=type(error).__name__,
                )
                raise error from e
            except TRANSPORT_ERRORS as e:
                error = translate_transport_error(e, mutation=mutation)
                log.warning("binance_request_failed", endpoint=endpoint, transport=type(e).__name__,
                            error=type(error).__name__)
                raise error from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sync_time(self) -> None:
        async with self._time_lock:
            before = time.time() * 1000
            raw = await self._call("futures_time", mutation=False)
            after = time.time() * 1000
            offset = int(int(raw["serverTime"]) - (before + after) / 2)
            self._client.timestamp_offset = offset
            log.info("binance_time_synced", offset_ms=offset, round_trip_ms=int(after - before))

    def _server_now_ms(self) -> int:
        offset = int(self._client.timestamp_offset) if self._client is not None else 0
        return int(time.time() * 1000) + offset

    # --- market data -----------------------------------------------------------------------------

    async def symbol_rules(self) -> dict[str, SymbolRules]:
        if self._rules and time.monotonic() - self._rules_loaded_at < self.settings.rules_ttl_s:
            return self._rules
        info = await self._call("futures_exchange_info", mutation=False)
        self._rules = {
            entry["symbol"]: SymbolRules.from_exchange_info(entry)
            for entry in info["symbols"]
            if entry.get("contractType", "PERPETUAL") == "PERPETUAL"
        }
        self._rules_loaded_at = time.monotonic()
        return self._rules

    async def _tradable(self, symbol: str) -> SymbolRules:
        rules = (await self.symbol_rules()).get(symbol)
        if rules is None or not rules.tradable:
            raise SymbolNotTradable(symbol)
        return rules

    async def mark_price(self, symbol: str) -> Decimal:
        raw = await self._call("futures_mark_price", mutation=False, symbol=symbol)
        return Decimal(raw["markPrice"])

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        raw = await self._call("futures_change_leverage", mutation=True, symbol=symbol, leverage=str(leverage))
        return int(raw["leverage"])

    # --- orders ----------------------------------------------------------------------------------

    async def place_market_order(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *, reduce_only: bool
    ) -> OrderResult:
        rules = await self._tradable(symbol)
        quantity = rules.round_qty(qty)
        if quantity <= 0:
            raise OrderRejected(-4003, f"Quantity {plain_decimal(qty)} rounds to zero at step {rules.step_size}.")
        self._watched.add(symbol)
        raw = await self._call(
            "futures_create_order",
            mutation=True,
            symbol=symbol,
            side=side.value,
            type="MARKET",
            quantity=plain_decimal(quantity),
            reduceOnly=_bool_param(reduce_only),
            newClientOrderId=client_order_id,
            newOrderRespType="RESULT",
        )
        self._remember_order(raw)
        try:
            fills = await self._fills_of(raw)
        except ExchangeError as e:
            # Placed, but its fills are not known yet: settle it by querying like any unknown outcome.
            raise UnknownOutcome(f"order {client_order_id} placed; its fills could not be read") from e
        result = _order_result(raw, fills)
        log.info(
            "binance_order_placed",
            symbol=symbol,
            client_order_id=client_order_id,
            order_id=result.order_id,
            status=result.status.value,
            executed_qty=plain_decimal(result.executed_qty),
        )
        return result

    async def get_order(self, symbol: str, client_order_id: str) -> OrderResult:
        raw = await self._call("futures_get_order", mutation=False, symbol=symbol, origClientOrderId=client_order_id)
        self._remember_order(raw)
        return _order_result(raw, await self._fills_of(raw))

    def _remember_order(self, raw: dict[str, Any]) -> None:
        key = (raw["symbol"], str(raw["orderId"]))
        self._order_info[key] = (raw["clientOrderId"], raw.get("origType") or raw["type"], bool(raw["reduceOnly"]))

    async def _fills_of(self, raw: dict[str, Any]) -> tuple[Fill, ...]:
        if Decimal(raw["executedQty"]) <= 0:
            return ()
        trades = await self._call(
            "futures_account_trades", mutation=False, symbol=raw["symbol"], orderId=str(raw["orderId"])
        )
        return tuple(_fill_from_trade(t, raw["clientOrderId"], bool(raw["reduceOnly"])) for t in trades)

    async def place_conditional(
        self,
        symbol: str,
        kind: ConditionalKind,
        side: Side,
        trigger_price: Decimal,
        client_algo_id: str,
        *,
        close_position: bool = True,
        quantity: Decimal | None = None,
    ) -> ConditionalOrder:
        rules = await self._tradable(symbol)
        params: dict[str, Any] = {
            "symbol": symbol,
            "side": side.value,
            "type": kind.value,
            "triggerPrice": plain_decimal(rules.round_price(trigger_price)),
            "workingType": "MARK_PRICE",
            # python-binance invents an id unless it is given one: always give ours
            "clientAlgoId": client_algo_id,
        }
        if close_position:
            params["closePosition"] = "true"  # Binance refuses reduceOnly/quantity beside it
        else:
            if quantity is None:
                raise ValueError("quantity is required unless close_position")
            size = rules.round_qty(quantity)
            if size <= 0:
                raise OrderRejected(-4003, f"Quantity {plain_decimal(quantity)} rounds to zero.")
            params["quantity"] = plain_decimal(size)
            params["reduceOnly"] = "true"
        self._watched.add(symbol)
        raw = await self._call("futures_create_order", mutation=True, **params)
        order = _conditional(raw)
        log.info(
            "binance_conditional_placed",
            symbol=symbol,
            client_algo_id=client_algo_id,
            algo_id=order.algo_id,
            kind=kind.value,
            trigger_price=plain_decimal(order.trigger_price),
        )
        return order

    async def get_conditional(self, symbol: str, client_algo_id: str) -> ConditionalOrder:
        raw = await self._call("futures_get_order", mutation=False, symbol=symbol, clientAlgoId=client_algo_id)
        return _conditional(raw)

    async def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        await self._call("futures_cancel_order", mutation=True, symbol=symbol, clientAlgoId=client_algo_id)
        log.info("binance_conditional_cancelled", symbol=symbol, client_algo_id=client_algo_id)

    async def open_conditionals(self, symbol: str | None = None) -> list[ConditionalOrder]:
        params: dict[str, Any] = {"conditional": True}
        if symbol is not None:
            params["symbol"] = symbol
        raw = await self._call("futures_get_open_orders", mutation=False, **params)
        orders = [_conditional(o) for o in raw if o.get("orderType") in ConditionalKind.__members__]
        self._watched.update(o.symbol for o in orders)
        return orders

    # --- account ---------------------------------------------------------------------------------

    async def positions(self) -> dict[str, ExchangePosition]:
        risk = await self._call("futures_position_information", mutation=False)
        open_rows = [r for r in risk if Decimal(r["positionAmt"]) != 0]
        if not open_rows:
            return {}
        config = await self._call("futures_symbol_config", mutation=False)
        leverage = {c["symbol"]: int(c["leverage"]) for c in config}
        positions = {
            r["symbol"]: ExchangePosition(
                symbol=r["symbol"],
                position_amt=Decimal(r["positionAmt"]),
                entry_price=Decimal(r["entryPrice"]),
                mark_price=Decimal(r["markPrice"]),
                unrealized_pnl=Decimal(r["unRealizedProfit"]),
                leverage=leverage.get(r["symbol"], 0),
                liquidation_price=Decimal(r.get("liquidationPrice") or "0"),
            )
            for r in open_rows
        }
        self._watched.update(positions)
        return positions

    async def balance(self) -> Balance:
        rows = await self._call("futures_account_balance", mutation=False)
        for row in rows:
            if row["asset"] == "USDT":
                return Balance(
                    asset="USDT",
                    wallet_balance=Decimal(row["balance"]),
                    available_balance=Decimal(row["availableBalance"]),
                    unrealized_pnl=Decimal(row.get("crossUnPnl") or "0"),
                )
        return Balance("USDT", Decimal(0), Decimal(0), Decimal(0))

    async def fills_since(self, symbol: str, since_ms: int) -> list[Fill]:
        since_ms = max(since_ms, self._server_now_ms() - USER_TRADES_MAX_LOOKBACK_MS)
        trades = await self._call(
            "futures_account_trades", mutation=False, symbol=symbol, startTime=str(since_ms), limit="1000"
        )
        fills = []
        for trade in sorted(trades, key=lambda t: (int(t["time"]), int(t["id"]))):
            client_id, _, reduce_only = await self._order_facts(symbol, str(trade["orderId"]))
            fills.append(_fill_from_trade(trade, client_id, reduce_only))
        return fills

    async def _order_facts(self, symbol: str, order_id: str) -> tuple[str, str, bool]:
        """(client id, original type, reduce-only) of an order: userTrades does not carry them."""
        key = (symbol, order_id)
        if key not in self._order_info:
            if len(self._order_info) > SEEN_FILLS_MAX:
                self._order_info.clear()
            try:
                raw = await self._call("futures_get_order", mutation=False, symbol=symbol, orderId=order_id)
                self._remember_order(raw)
            except OrderNotFound:
                self._order_info[key] = ("", "", False)
        return self._order_info[key]

    # --- events: the user data stream, polling as the fallback -----------------------------------

    async def events(self) -> AsyncIterator[ExchangeEvent]:
        if self._events_running:
            raise RuntimeError("events() is already being consumed")
        self._events_running = True
        queue: asyncio.Queue[ExchangeEvent | None] = asyncio.Queue(EVENT_QUEUE_MAX)
        self._queue = queue
        self._cursor_ms = self._server_now_ms() - POLL_LOOKBACK_MS
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
            self._events_running = False
            self._queue = None

    async def _emit(self, queue: asyncio.Queue[ExchangeEvent | None], event: ExchangeEvent) -> None:
        fill_id = event.fill.fill_id
        if fill_id in self._seen_fills:
            return
        self._seen_fills[fill_id] = None
        while len(self._seen_fills) > SEEN_FILLS_MAX:
            self._seen_fills.popitem(last=False)
        self._cursor_ms = max(self._cursor_ms, event.fill.ts_ms)
        log.info(
            "binance_fill_event",
            kind=event.kind.value,
            symbol=event.fill.symbol,
            origin_id=event.origin_id,
            fill_id=fill_id,
            qty=plain_decimal(event.fill.qty),
            price=plain_decimal(event.fill.price),
        )
        await queue.put(event)

    async def _ensure_listen_key(self) -> str:
        if self._listen_key is None:
            self._listen_key = str(await self._call("futures_stream_get_listen_key", mutation=False))
            log.info("binance_listen_key_created")
        return self._listen_key

    async def _stream_loop(self, queue: asyncio.Queue[ExchangeEvent | None]) -> None:
        url = user_stream_url(self.settings.base_url, testnet=self.testnet)
        attempt = 0
        while True:
            try:
                key = await self._ensure_listen_key()
                assert self._ws_session is not None
                async with asyncio.timeout(self.settings.timeout_s):
                    ws = await self._ws_session.ws_connect(url + key, heartbeat=30.0)
                async with ws:
                    self._ws = ws
                    self._ws_connected.set()
                    attempt = 0
                    log.info("binance_user_stream_connected")
                    await self._catch_up(queue)
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            await self._on_stream_message(json.loads(message.data), queue)
                        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the stream must survive anything; polling covers the gap
                log.warning("binance_user_stream_failed", error=type(e).__name__, detail=str(e)[:200])
                if isinstance(e, aiohttp.WSServerHandshakeError):
                    self._listen_key = None  # refused: perhaps the key is gone; ask for one again
            finally:
                if self._ws_connected.is_set():
                    log.warning("binance_user_stream_disconnected")
                self._ws_connected.clear()
                self._ws = None
            await asyncio.sleep(self._backoff.delay_s(attempt))
            attempt += 1

    async def _on_stream_message(self, message: dict[str, Any], queue: asyncio.Queue[ExchangeEvent | None]) -> None:
        kind = message.get("e")
        if kind == "ORDER_TRADE_UPDATE":
            event = self._event_from_order_update(message["o"])
            if event is not None:
                await self._emit(queue, event)
        elif kind == "ALGO_UPDATE":
            o = message["o"]
            if o.get("ai"):
                self._algo_children[str(o["ai"])] = o["caid"]
        elif kind == "listenKeyExpired":
            log.warning("binance_listen_key_expired")
            self._listen_key = None
            if self._ws is not None:
                await self._ws.close()

    def _event_from_order_update(self, o: dict[str, Any]) -> ExchangeEvent | None:
        if o.get("x") not in ("TRADE", "CALCULATED") or Decimal(o.get("l") or "0") <= 0:
            return None
        order_id = str(o["i"])
        client_id = self._algo_children.get(order_id, o["c"])
        kind = classify_fill(client_id, o.get("ot") or o.get("o", ""))
        if kind is None:
            return None
        fill = Fill(
            fill_id=f"{order_id}-{o['t']}",
            order_id=order_id,
            client_order_id=client_id,
            symbol=o["s"],
            side=Side(o["S"]),
            qty=Decimal(o["l"]),
            price=Decimal(o["L"]),
            fee=Decimal(o.get("n") or "0"),
            fee_asset=o.get("N") or "USDT",
            reduce_only=bool(o.get("R", False)),
            realized_pnl=Decimal(o["rp"]) if o.get("rp") is not None else None,
            ts_ms=int(o["T"]),
        )
        origin = order_id if kind is FillKind.LIQUIDATION else client_id
        return ExchangeEvent(kind=kind, fill=fill, origin_id=origin)

    async def _catch_up(self, queue: asyncio.Queue[ExchangeEvent | None]) -> None:
        """Poll once for what filled while the stream was down; a failure here must not drop the
        stream that just came up."""
        try:
            await self._poll_once(queue)
        except ExchangeError as e:
            log.warning("binance_fill_poll_failed", error=type(e).__name__, detail=str(e)[:200])

    async def _poll_loop(self, queue: asyncio.Queue[ExchangeEvent | None]) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            if self._ws_connected.is_set():
                continue
            try:
                await self._poll_once(queue)
            except ExchangeError as e:
                log.warning("binance_fill_poll_failed", error=type(e).__name__, detail=str(e)[:200])

    async def _poll_once(self, queue: asyncio.Queue[ExchangeEvent | None]) -> None:
        """Emit the conditional-order and liquidation fills since the cursor, for every symbol with a
        position or one we have traded or protected."""
        since = self._cursor_ms - POLL_OVERLAP_MS
        symbols = set(self._watched) | set(await self.positions())
        for symbol in sorted(symbols):
            for fill in await self.fills_since(symbol, since):
                _, order_type, _ = self._order_info.get((symbol, fill.order_id), ("", "", False))
                client_id = self._algo_children.get(fill.order_id, fill.client_order_id)
                kind = classify_fill(client_id, order_type)
                if kind is None:
                    continue
                origin = fill.order_id if kind is FillKind.LIQUIDATION else client_id
                await self._emit(queue, ExchangeEvent(kind=kind, fill=fill, origin_id=origin))
        if self._ws_connected.is_set():
            self._cursor_ms = max(self._cursor_ms, self._server_now_ms() - POLL_OVERLAP_MS)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.listen_key_keepalive_s)
            key = self._listen_key
            if key is None:
                continue
            try:
                await self._call("futures_stream_keepalive", mutation=False, listenKey=key)
                log.info("binance_listen_key_kept_alive")
            except OrderRejected as e:  # -1125: the key is gone; reconnect with a new one
                log.warning("binance_listen_key_lost", code=e.code)
                self._listen_key = None
                if self._ws is not None:
                    await self._ws.close()
            except ExchangeError as e:
                log.warning("binance_listen_key_keepalive_failed", error=type(e).__name__)


def _log_task_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("binance_task_failed", task=task.get_name(), error=type(error).__name__, detail=str(error)[:200])

