"""Binance USD-M perpetual futures through python-binance's ``AsyncClient`` (DESIGN §6, §8, §12).

What python-binance does not do, this adapter does: a timeout on every request, the clock offset synced
at start and again on -1021, quantities and prices rounded to the symbol's step and tick and sent as
plain decimal strings, booleans as ``"true"``/``"false"``, our own ``newClientOrderId`` /
``clientAlgoId`` on every order, and every vendor error translated at this boundary
(:mod:`common.exchange.binance_errors`). Retries are not done here: :mod:`common.exchange.placement`
owns them.

Binance as it is (DESIGN §12):

- the account must be in one-way mode: :meth:`BinanceExchange.start` refuses hedge mode
  (``ConfigurationError``);
- a symbol's max leverage and notional brackets come from ``GET /fapi/v1/leverageBracket``
  (exchangeInfo has none); only the ``binance.contract_types`` are traded;
- an executed order is returned only with all its trades (their quantities add up to ``executedQty``),
  fees in USDT (BNB and other assets converted at the mark); else :class:`FillsIncomplete`;
- -2013 from ``GET /fapi/v1/algoOrder`` alone never means "not placed": the open and historical algo
  orders are searched first;
- a triggered algo order's child order is mapped back to our ``clientAlgoId`` through ``actualOrderId``
  (ALGO_UPDATE ``ai``, or the algo order history), whatever client id the child carries.

``events()`` reads the user data stream (a listen key kept alive, the websocket reconnected with
backoff) and falls back to polling ``userTrades`` and ``openAlgoOrders`` while the websocket is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any, Final

import aiohttp
import structlog
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from common.backoff import Backoff
from common.config import BinanceSettings, ConfigurationError, Settings
from common.contracts.base import plain_decimal
from common.contracts.enums import FillKind, Side
from common.exchange.base import (
    Balance,
    ConditionalEnded,
    ConditionalKind,
    ConditionalOrder,
    ConditionalStatus,
    Exchange,
    ExchangeEvent,
    ExchangePosition,
    Fill,
    OrderEvent,
    OrderResult,
)
from common.exchange.binance_errors import (
    TIMESTAMP_OUTSIDE_RECV_WINDOW,
    TRANSPORT_ERRORS,
    translate_api_error,
    translate_transport_error,
)
from common.exchange.binance_wire import (
    ENDED_BY_EXCHANGE,
    WORKING_STATUSES,
    child_order_id,
    classify_fill,
    conditional,
    conditional_ended,
    fill_from_order_update,
    fill_from_trade,
    is_fill_update,
    is_forced_close,
    is_ours,
    order_result,
    traded_qty,
)
from common.exchange.errors import (
    ExchangeError,
    FillsIncomplete,
    OrderNotFound,
    OrderRejected,
    SymbolNotTradable,
    TemporaryError,
)
from common.exchange.rules import NO_BRACKET_MAX_LEVERAGE, SymbolRules, build_rules, parse_leverage_brackets

log = structlog.get_logger()

MAINNET_WS_URL: Final = "wss://fstream.binance.com/private/ws/"
TESTNET_WS_URL: Final = "wss://fstream.binancefuture.com/private/ws/"
#: how far back polling looks when events() starts, and how much each poll overlaps the last one
POLL_LOOKBACK_MS: Final = 60_000
POLL_OVERLAP_MS: Final = 2_000
SEEN_MAX: Final = 10_000
EVENT_QUEUE_MAX: Final = 1_000
#: userTrades refuses a startTime more than 7 days back
USER_TRADES_MAX_LOOKBACK_MS: Final = 7 * 86_400_000 - 60_000
#: the most rows userTrades and allAlgoOrders return per call
PAGE_MAX: Final = 1_000
#: re-reads of an executed order's trades within ``fills_wait_s`` before FillsIncomplete
FILLS_POLLS: Final = 4
#: commissions are kept to 8 decimals, as Binance reports them
FEE_PLACES: Final = Decimal("0.00000001")
#: a fee asset's mark price is reused this long when converting fees to USDT
FEE_MARK_TTL_S: Final = 10.0
#: algo order history of a symbol is re-read at most this often when meeting an unknown child order
ALGO_HISTORY_MIN_INTERVAL_S: Final = 1.0
FEE_ASSET: Final = "USDT"
#: GET /fapi/v1/positionSide/dual: true = hedge mode
#: https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Get-Current-Position-Mode
HEDGE_MODE_FIELD: Final = "dualSidePosition"


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


def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > SEEN_MAX:
        cache.popitem(last=False)


def _examples(names: list[str], count: int = 5) -> list[str]:
    return sorted(names)[:count]


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
        self._queue: asyncio.Queue[OrderEvent | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._watched: set[str] = set()
        self._cursor_ms = 0
        #: (symbol, orderId) -> (clientOrderId, original type, reduce-only): userTrades carries none of them
        self._order_info: dict[tuple[str, str], tuple[str, str, bool]] = {}
        #: child orderId -> (our clientAlgoId, the algo order's type), from ``ai`` / ``actualOrderId``
        self._algo_children: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._algo_history_read: dict[str, float] = {}
        #: our conditionals believed open, by symbol (to notice the ones that vanish while polling)
        self._open_algos: dict[str, set[str]] = {}
        self._open_algos_listed = False
        self._fee_marks: dict[str, tuple[float, Decimal]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> BinanceExchange:
        return cls(settings.binance, testnet=settings.exchange == "binance-testnet")

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the client inside the running loop (not ``create()``: it pings spot), point it at
        the configured base URL, sync the clock, refuse an account in hedge mode, load the rules."""
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
            await self._refuse_hedge_mode()
            await self.symbol_rules()
        except BaseException:
            await self.close()
            raise
        log.info("binance_started", exchange=self.name, symbols=len(self._rules), testnet=self.testnet)

    async def _refuse_hedge_mode(self) -> None:
        """Hedge mode (one LONG and one SHORT position per symbol, orders needing ``positionSide``) is
        not supported: this adapter keys positions by symbol and sends ``reduceOnly``, which Binance
        refuses in hedge mode (-1106). Refuse to start rather than mishandle it."""
        raw = await self._call("futures_get_position_mode", mutation=False)
        if raw.get(HEDGE_MODE_FIELD) in (True, "true"):
            raise ConfigurationError(
                "binance.position_mode",
                "the Binance account is in hedge mode (dualSidePosition=true); switch it to one-way mode "
                "(Binance: Preferences > Position Mode > One-way, or POST /fapi/v1/positionSide/dual "
                "dualSidePosition=false, with no open position or order) and start again",
            )

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

    # --- symbol rules and market data ------------------------------------------------------------

    async def symbol_rules(self) -> dict[str, SymbolRules]:
        """exchangeInfo and the leverage brackets, re-read every ``rules_ttl_s``; only the symbols of
        ``binance.contract_types``."""
        if self._rules and time.monotonic() - self._rules_loaded_at < self.settings.rules_ttl_s:
            return self._rules
        info = await self._call("futures_exchange_info", mutation=False)
        brackets = parse_leverage_brackets(await self._call("futures_leverage_bracket", mutation=False))
        load = build_rules(info, brackets, self.settings.contract_types)
        if load.excluded:
            log.info(
                "binance_symbols_left_out",
                reason="contract type not in binance.contract_types",
                contract_types=list(self.settings.contract_types),
                count=len(load.excluded),
                by_type=dict(sorted(Counter(load.excluded.values()).items())),
                examples=_examples(list(load.excluded)),
            )
        if load.without_brackets:
            log.warning(
                "binance_symbols_without_leverage_brackets",
                count=len(load.without_brackets),
                examples=_examples(load.without_brackets),
                max_leverage=NO_BRACKET_MAX_LEVERAGE,
            )
        self._rules = load.rules
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
        result = await self._complete(raw)
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
        return await self._complete(raw)

    def _remember_order(self, raw: Mapping[str, Any]) -> None:
        key = (raw["symbol"], str(raw["orderId"]))
        if len(self._order_info) > SEEN_MAX:
            self._order_info.clear()
        self._order_info[key] = (raw["clientOrderId"], raw.get("origType") or raw["type"], bool(raw["reduceOnly"]))

    async def _complete(self, raw: Mapping[str, Any]) -> OrderResult:
        """The order with every one of its trades: a MARKET order still working (an ACK-style answer:
        NEW, ``executedQty`` 0) is re-read, and the trades are re-read until their quantities add up to
        ``executedQty`` — a few times within ``binance.fills_wait_s``, then :class:`FillsIncomplete`
        (never a result booked short). Binance does not document how far ``userTrades`` may lag an
        order that shows FILLED; it asks to pair REST with the user stream."""
        cid, order_id = raw["clientOrderId"], str(raw["orderId"])
        interval_s = self.settings.fills_wait_s / FILLS_POLLS
        problem = "not read"
        last_error: ExchangeError | None = None
        for attempt in range(FILLS_POLLS + 1):
            if attempt:
                await asyncio.sleep(interval_s)
                try:
                    raw = await self._call("futures_get_order", mutation=False, symbol=raw["symbol"], orderId=order_id)
                except ExchangeError as e:
                    last_error, problem = e, f"order re-read failed: {type(e).__name__}"
                    continue
            if raw["type"] == "MARKET" and raw["status"] in WORKING_STATUSES:
                problem = f"the order is still {raw['status']}"
                continue
            executed = Decimal(raw["executedQty"])
            if executed <= 0:
                return order_result(raw, ())
            try:
                fills = await self._trades_of(raw)
            except ExchangeError as e:
                last_error, problem = e, f"trades read failed: {type(e).__name__}"
                continue
            traded = traded_qty(fills)
            if traded == executed:
                return order_result(raw, fills)
            problem = f"trades add up to {plain_decimal(traded)} of executedQty {plain_decimal(executed)}"
        log.warning("binance_fills_incomplete", client_order_id=cid, order_id=order_id, problem=problem,
                    waited_s=self.settings.fills_wait_s)
        waited = self.settings.fills_wait_s
        raise FillsIncomplete(f"order {cid} ({order_id}): {problem} after {waited}s") from last_error

    async def _trades_of(self, raw: Mapping[str, Any]) -> tuple[Fill, ...]:
        trades = await self._call(
            "futures_account_trades", mutation=False, symbol=raw["symbol"], orderId=str(raw["orderId"]),
            limit=str(PAGE_MAX),
        )
        fills = [fill_from_trade(t, raw["clientOrderId"], bool(raw["reduceOnly"])) for t in trades]
        return tuple([await self._in_usdt(f) for f in sorted(fills, key=lambda f: (f.ts_ms, f.fill_id))])

    async def _in_usdt(self, fill: Fill) -> Fill:
        """The fill with its fee in USDT: a fee paid in another asset (BNB with the BNB fee discount) is
        converted at that asset's ``<ASSET>USDT`` mark price now (not at the trade's time). An asset
        without such a symbol keeps its fee in its own asset, logged."""
        if fill.fee_asset == FEE_ASSET:
            return fill
        asset = fill.fee_asset
        cached = self._fee_marks.get(asset)
        if cached is not None and time.monotonic() - cached[0] < FEE_MARK_TTL_S:
            mark = cached[1]
        else:
            try:
                mark = await self.mark_price(f"{asset}USDT")
            except OrderRejected as e:  # -1121: no such symbol to convert through
                log.warning("binance_fee_not_converted", fill_id=fill.fill_id, fee=plain_decimal(fill.fee),
                            fee_asset=asset, code=e.code)
                return fill
            self._fee_marks[asset] = (time.monotonic(), mark)
        fee = (fill.fee * mark).quantize(FEE_PLACES)
        log.info("binance_fee_converted", fill_id=fill.fill_id, fee=plain_decimal(fill.fee), fee_asset=asset,
                 mark_price=plain_decimal(mark), fee_usdt=plain_decimal(fee))
        return Fill(
            fill_id=fill.fill_id, order_id=fill.order_id, client_order_id=fill.client_order_id, symbol=fill.symbol,
            side=fill.side, qty=fill.qty, price=fill.price, fee=fee, fee_asset=FEE_ASSET,
            reduce_only=fill.reduce_only, realized_pnl=fill.realized_pnl, ts_ms=fill.ts_ms,
        )

    # --- conditional (algo) orders ---------------------------------------------------------------

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
        """A conditional on the mark price: ``closePosition`` (Binance keeps one per type and direction:
        -4130 for a second), or reduce-only for ``quantity`` (several may rest at once)."""
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
        order = conditional(raw)
        self._open_algos.setdefault(symbol, set()).add(client_algo_id)
        log.info(
            "binance_conditional_placed",
            symbol=symbol,
            client_algo_id=client_algo_id,
            algo_id=order.algo_id,
            kind=kind.value,
            trigger_price=plain_decimal(order.trigger_price),
            quantity=None if order.quantity is None else plain_decimal(order.quantity),
        )
        return order

    async def get_conditional(self, symbol: str, client_algo_id: str) -> ConditionalOrder:
        """GET /fapi/v1/algoOrder by ``clientAlgoId`` (its documented parameters only: no symbol). Its
        -2013 is not trusted alone (it answers so for completed orders past their retention, and public
        reports show it for orders ``allAlgoOrders`` still lists): openAlgoOrders and allAlgoOrders of the
        symbol are searched before concluding OrderNotFound."""
        try:
            raw = await self._call("futures_get_algo_order", mutation=False, clientAlgoId=client_algo_id)
        except OrderNotFound:
            raw = await self._find_algo(symbol, client_algo_id)
        self._note_algo(raw)
        return conditional(raw)

    async def _find_algo(self, symbol: str, client_algo_id: str) -> Mapping[str, Any]:
        open_now = await self._call("futures_get_open_orders", mutation=False, conditional=True, symbol=symbol)
        for raw in open_now:
            if raw.get("clientAlgoId") == client_algo_id:
                log.info("binance_algo_found_after_2013", client_algo_id=client_algo_id, where="openAlgoOrders")
                return dict(raw)
        history = await self._algo_history(symbol)
        for raw in history:
            if raw.get("clientAlgoId") == client_algo_id:
                log.info("binance_algo_found_after_2013", client_algo_id=client_algo_id, where="allAlgoOrders")
                return dict(raw)
        if len(history) >= PAGE_MAX:
            # a full page without it proves nothing: there may be more
            raise TemporaryError(f"algo order {client_algo_id}: -2013, and the algo history has more than "
                                 f"{PAGE_MAX} orders to search")
        raise OrderNotFound(f"-2013: algo order {client_algo_id} is in neither algoOrder, openAlgoOrders nor "
                            "allAlgoOrders (the last 7 days)")

    async def _algo_history(self, symbol: str) -> list[Mapping[str, Any]]:
        """``allAlgoOrders`` of the symbol over its default window (the recent 7 days; which time the
        window applies to, creation or update, is not documented), the children they made remembered."""
        rows: list[Mapping[str, Any]] = await self._call(
            "futures_get_all_orders", mutation=False, conditional=True, symbol=symbol, limit=str(PAGE_MAX)
        )
        self._algo_history_read[symbol] = time.monotonic()
        for raw in rows:
            self._note_algo(raw)
        return rows

    def _note_algo(self, raw: Mapping[str, Any]) -> None:
        """Remember the child order of a triggered algo order, and forget a closed one as open."""
        child = child_order_id(raw)
        if child:
            _remember(self._algo_children, child, (raw["clientAlgoId"], raw["orderType"]))
        if raw.get("algoStatus", "NEW") != "NEW":
            self._open_algos.get(raw["symbol"], set()).discard(raw["clientAlgoId"])

    async def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        await self._call("futures_cancel_algo_order", mutation=True, clientAlgoId=client_algo_id)
        self._open_algos.get(symbol, set()).discard(client_algo_id)
        log.info("binance_conditional_cancelled", symbol=symbol, client_algo_id=client_algo_id)

    async def open_conditionals(self, symbol: str | None = None) -> list[ConditionalOrder]:
        params: dict[str, Any] = {"conditional": True}
        if symbol is not None:
            params["symbol"] = symbol
        raw = await self._call("futures_get_open_orders", mutation=False, **params)
        orders = [conditional(o) for o in raw if o.get("orderType") in ConditionalKind.__members__]
        # ours are tracked until we learn how they ended (one that is gone from this list is looked up by
        # the poll, never just forgotten)
        for o in orders:
            if is_ours(o.client_algo_id):
                self._open_algos.setdefault(o.symbol, set()).add(o.client_algo_id)
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
        """The symbol's trades since ``since_ms`` (at most 7 days back), each with the client id of the
        order it belongs to — for the child of a triggered algo order, our ``clientAlgoId`` (mapped
        through ``actualOrderId`` from the algo history when the stream did not tell us)."""
        since_ms = max(since_ms, self._server_now_ms() - USER_TRADES_MAX_LOOKBACK_MS)
        self._watched.add(symbol)  # asked about: events() polls it too while the stream is down
        trades = await self._call(
            "futures_account_trades", mutation=False, symbol=symbol, startTime=str(since_ms), limit=str(PAGE_MAX)
        )
        fills = []
        history_read = False
        for trade in sorted(trades, key=lambda t: (int(t["time"]), int(t["id"]))):
            order_id = str(trade["orderId"])
            if order_id not in self._algo_children:
                client_id, _, _ = await self._order_facts(symbol, order_id)
                if not history_read and not is_ours(client_id) and not is_forced_close(client_id):
                    await self._algo_history(symbol)  # perhaps the child of one of our algo orders
                    history_read = True
            client_id, _, reduce_only = await self._fill_facts(symbol, order_id)
            fills.append(await self._in_usdt(fill_from_trade(trade, client_id, reduce_only)))
        return fills

    async def _fill_facts(self, symbol: str, order_id: str) -> tuple[str, str, bool]:
        """(client id, order type, reduce-only) to classify a fill by: a triggered algo order's child
        is ours under the clientAlgoId and the algo order's type, whatever the child's own id."""
        child = self._algo_children.get(order_id)
        if child is not None:
            return child[0], child[1], True
        return await self._order_facts(symbol, order_id)

    async def _order_facts(self, symbol: str, order_id: str) -> tuple[str, str, bool]:
        """(client id, original type, reduce-only) of an order: userTrades does not carry them."""
        key = (symbol, order_id)
        if key not in self._order_info:
            try:
                raw = await self._call("futures_get_order", mutation=False, symbol=symbol, orderId=order_id)
                self._remember_order(raw)
            except OrderNotFound:
                self._order_info[key] = ("", "", False)
        return self._order_info[key]

    # --- events: the user data stream, polling as the fallback -----------------------------------

    async def events(self) -> AsyncIterator[OrderEvent]:
        if self._events_running:
            raise RuntimeError("events() is already being consumed")
        self._events_running = True
        queue: asyncio.Queue[OrderEvent | None] = asyncio.Queue(EVENT_QUEUE_MAX)
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

    async def _emit(self, queue: asyncio.Queue[OrderEvent | None], event: OrderEvent) -> None:
        """Queue an event once: a fill by its fill id, an ended conditional by its id and status."""
        if isinstance(event, ExchangeEvent):
            key = event.fill.fill_id
        else:
            key = f"ended:{event.client_algo_id}:{event.status.value}"
        if key in self._seen:
            return
        _remember(self._seen, key, None)
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
            self._open_algos.get(event.symbol, set()).discard(event.client_algo_id)
            log.warning(
                "binance_conditional_ended",
                symbol=event.symbol,
                client_algo_id=event.client_algo_id,
                status=event.status.value,
                reason=event.reason,
            )
        await queue.put(event)

    async def _ensure_listen_key(self) -> str:
        if self._listen_key is None:
            self._listen_key = str(await self._call("futures_stream_get_listen_key", mutation=False))
            log.info("binance_listen_key_created")
        return self._listen_key

    async def _stream_loop(self, queue: asyncio.Queue[OrderEvent | None]) -> None:
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

    async def _on_stream_message(self, message: dict[str, Any], queue: asyncio.Queue[OrderEvent | None]) -> None:
        kind = message.get("e")
        if kind == "ORDER_TRADE_UPDATE":
            event = await self._event_from_order_update(message["o"])
            if event is not None:
                await self._emit(queue, event)
        elif kind == "ALGO_UPDATE":
            o = message["o"]
            if o.get("ai"):
                _remember(self._algo_children, str(o["ai"]), (o["caid"], o["o"]))
            if o.get("X") != "NEW":
                self._open_algos.get(o["s"], set()).discard(o["caid"])
            ended = conditional_ended(message)
            if ended is not None:
                await self._emit(queue, ended)
        elif kind == "listenKeyExpired":
            log.warning("binance_listen_key_expired")
            self._listen_key = None
            if self._ws is not None:
                await self._ws.close()

    async def _event_from_order_update(self, o: dict[str, Any]) -> ExchangeEvent | None:
        if not is_fill_update(o):
            return None
        order_id = str(o["i"])
        symbol = o["s"]
        if order_id not in self._algo_children and not is_ours(o["c"]) and not is_forced_close(o["c"]):
            # the child of a triggered algo order may fill before its ALGO_UPDATE names it (``ai``):
            # ask the algo history, at most once a second per symbol
            read_at = self._algo_history_read.get(symbol, 0.0)
            if time.monotonic() - read_at >= ALGO_HISTORY_MIN_INTERVAL_S:
                try:
                    await self._algo_history(symbol)
                except ExchangeError as e:
                    log.warning("binance_algo_history_failed", symbol=symbol, error=type(e).__name__)
        child = self._algo_children.get(order_id)
        client_id, order_type = child if child is not None else (o["c"], o.get("ot") or o.get("o", ""))
        kind = classify_fill(client_id, order_type)
        if kind is None:
            return None
        try:
            fill = await self._in_usdt(fill_from_order_update(o, client_id))
        except ExchangeError as e:  # the fee's mark could not be read: the poll will book it later
            log.warning("binance_fill_event_deferred", order_id=order_id, error=type(e).__name__)
            return None
        origin = order_id if kind is FillKind.LIQUIDATION else client_id
        return ExchangeEvent(kind=kind, fill=fill, origin_id=origin)

    async def _catch_up(self, queue: asyncio.Queue[OrderEvent | None]) -> None:
        """Poll once for what happened while the stream was down; a failure here must not drop the
        stream that just came up."""
        try:
            await self._poll_once(queue)
        except ExchangeError as e:
            log.warning("binance_fill_poll_failed", error=type(e).__name__, detail=str(e)[:200])

    async def _poll_loop(self, queue: asyncio.Queue[OrderEvent | None]) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            if self._ws_connected.is_set():
                continue
            try:
                await self._poll_once(queue)
            except ExchangeError as e:
                log.warning("binance_fill_poll_failed", error=type(e).__name__, detail=str(e)[:200])

    async def _poll_once(self, queue: asyncio.Queue[OrderEvent | None]) -> None:
        """Emit the conditional-order and liquidation fills since the cursor, for every symbol with a
        position, an open conditional, or one we have traded, protected or asked :meth:`fills_since`
        about; then the conditionals that ended meanwhile."""
        since = self._cursor_ms - POLL_OVERLAP_MS
        if not self._open_algos_listed:
            await self.open_conditionals()  # once: what a fresh adapter must watch for ends (weight 40)
            self._open_algos_listed = True
        symbols = set(self._watched) | set(await self.positions())
        for symbol in sorted(symbols):
            for fill in await self.fills_since(symbol, since):
                _, order_type, _ = await self._fill_facts(symbol, fill.order_id)
                kind = classify_fill(fill.client_order_id, order_type)
                if kind is None:
                    continue
                origin = fill.order_id if kind is FillKind.LIQUIDATION else fill.client_order_id
                await self._emit(queue, ExchangeEvent(kind=kind, fill=fill, origin_id=origin))
        await self._poll_conditionals(queue)
        if self._ws_connected.is_set():
            self._cursor_ms = max(self._cursor_ms, self._server_now_ms() - POLL_OVERLAP_MS)

    async def _poll_conditionals(self, queue: asyncio.Queue[OrderEvent | None]) -> None:
        """Our conditionals that left openAlgoOrders since last seen: those the exchange rejected or
        expired become :class:`ConditionalEnded`. (A CANCELED one cannot be told apart from a cancel by
        another process over REST — the reason ``rm`` is only in ALGO_UPDATE — so it is not reported.)"""
        for symbol, tracked in list(self._open_algos.items()):
            if not tracked:
                continue
            open_now = {o["clientAlgoId"] for o in
                        await self._call("futures_get_open_orders", mutation=False, conditional=True, symbol=symbol)}
            for client_algo_id in sorted(tracked - open_now):
                try:
                    order = await self.get_conditional(symbol, client_algo_id)
                except OrderNotFound:
                    self._open_algos.get(symbol, set()).discard(client_algo_id)
                    continue
                if order.status is ConditionalStatus.NEW:
                    continue  # listed again next time (a lagging list)
                self._open_algos.get(symbol, set()).discard(client_algo_id)
                if order.status.value in ENDED_BY_EXCHANGE:
                    await self._emit(queue, ConditionalEnded(
                        symbol=symbol, client_algo_id=client_algo_id, status=order.status,
                        reason=f"{order.status.value} (seen by polling: the REST answer gives no reason)",
                        ts_ms=self._server_now_ms(),
                    ))

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

