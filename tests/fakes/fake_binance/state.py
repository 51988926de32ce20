"""The fake Binance USD-M account: orders, algo (conditional) orders, positions, balance, trades, the
request log and the fault plan. Thread-safe: the server runs in its own thread and event loop while a
test drives prices and faults from the main thread.

Shapes and error codes are Binance's (``/fapi`` REST and the user data stream); the matching engine
is a toy: MARKET orders fill in full at the mark price set by the test, with a taker fee.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from common.contracts.base import plain_decimal
from common.exchange.rules import SymbolRules

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SYMBOLS_FILE = REPO_ROOT / "config" / "paper_symbols.json"
DEFAULT_API_KEY = "fake-api-key"
DEFAULT_API_SECRET = "fake-api-secret"

#: plausible mark prices until a test sets its own
DEFAULT_MARKS: dict[str, Decimal] = {
    "BTCUSDT": Decimal("60000"),
    "ETHUSDT": Decimal("3000"),
    "SOLUSDT": Decimal("150"),
    "XRPUSDT": Decimal("0.6"),
    "ANKRUSDT": Decimal("0.02"),
    "RIVERUSDT": Decimal("10"),
    "HYPEUSDT": Decimal("30"),
    "币安人生USDT": Decimal("0.1"),
}
CONDITIONAL_TYPES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
PLAIN_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
UNKNOWN_ERROR_MSG = "Unknown error, please check your request or try again later."
ZERO = Decimal(0)


class BinanceError(Exception):
    """An error answer: HTTP status plus Binance's ``{"code", "msg"}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


@dataclass
class Fault:
    """One injected failure, consumed by the next ``times`` matching requests.

    kinds: ``latency`` (delay, then normal), ``timeout`` (hold ``hold_s``; with ``execute`` the request
    takes effect first), ``status`` (HTTP ``status`` with a body), ``rate_limit`` (429/418 + Retry-After,
    -1003), ``unknown`` (503 "Unknown error"; with ``execute``, the default, the order WAS placed),
    ``error`` (any Binance ``code``/``msg`` with ``status``, default 400)."""

    path: str
    method: str
    kind: str
    times: int = 1
    delay_s: float = 0.0
    hold_s: float = 5.0
    status: int | None = None
    code: int | None = None
    msg: str | None = None
    retry_after_s: int = 1
    execute: bool = False


FAULT_KINDS = ("latency", "timeout", "status", "rate_limit", "unknown", "error")


@dataclass
class LoggedRequest:
    """One request as it reached the fake (``at_s`` is ``time.monotonic()`` on arrival)."""

    method: str
    path: str
    params: dict[str, str]
    at_s: float
    api_key: str | None
    status: int = 0
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "params": self.params,
            "at_s": self.at_s,
            "api_key_present": self.api_key is not None,
            "status": self.status,
            "fault": self.fault,
        }


@dataclass
class Position:
    amt: Decimal = ZERO
    entry: Decimal = ZERO
    update_ms: int = 0


@dataclass
class Subscriber:
    """A websocket connection of the user data stream, living in the server's event loop."""

    listen_key: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str | None]

    def push(self, message: str | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, message)
        except RuntimeError:  # the loop is closed: the connection is gone anyway
            pass


@dataclass
class _Account:
    wallet: Decimal
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    client_ids: dict[str, int] = field(default_factory=dict)
    algos: dict[int, dict[str, Any]] = field(default_factory=dict)
    client_algo_ids: dict[str, int] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)


def _dec(params: dict[str, str], name: str, *, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return None
    if not PLAIN_NUMBER.match(raw):
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    try:
        return Decimal(raw)
    except InvalidOperation as e:  # pragma: no cover - the regex already refused it
        raise BinanceError(-1102, f"Parameter '{name}' malformed.") from e


def _bool(params: dict[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return raw == "true"


def _multiple_of(value: Decimal, unit: Decimal) -> bool:
    return unit == 0 or (value % unit) == 0


class FakeBinance:
    """The state of one fake account, and what tests use to drive it."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        symbols_file: Path = DEFAULT_SYMBOLS_FILE,
        starting_balance: Decimal = Decimal("10000"),
        taker_fee: Decimal = Decimal("0.0005"),
        default_leverage: int = 20,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.starting_balance = starting_balance
        self.taker_fee = taker_fee
        self.default_leverage = default_leverage
        self.lock = threading.RLock()
        self.exchange_info: dict[str, Any] = json.loads(symbols_file.read_text(encoding="utf-8"))
        self.rules = {e["symbol"]: SymbolRules.from_exchange_info(e) for e in self.exchange_info["symbols"]}
        self._subscribers: list[Subscriber] = []
        self.reset()

    # --- test controls -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every order, position, fault and logged request; marks back to their defaults."""
        with self.lock:
            self.account = _Account(wallet=self.starting_balance)
            self.marks: dict[str, Decimal] = {s: DEFAULT_MARKS.get(s, Decimal(1)) for s in self.rules}
            self.klines: dict[tuple[str, str], list[list[Any]]] = {}
            self.faults: list[Fault] = []
            self.log: list[LoggedRequest] = []
            self.clock_offset_ms = 0
            self.listen_key: str | None = None
            self.listen_keys_issued = 0
            self.keepalives = 0
            self.ws_enabled = True
            self.ws_messages_sent = 0
            self._order_ids = itertools.count(8_389_765_000)
            self._algo_ids = itertools.count(3_000_000)
            self._trade_ids = itertools.count(512_000_000)
            self._listen_seq = itertools.count(1)
        self.disconnect_websockets()

    def set_mark_price(self, symbol: str, price: Decimal | str) -> None:
        """Move the mark price; conditional orders it crosses trigger and fill at it."""
        with self.lock:
            self.marks[symbol] = Decimal(price)
            self._check_triggers(symbol)

    def set_clock_offset_ms(self, offset_ms: int) -> None:
        """Skew the server's clock against the test machine's (for -1021)."""
        with self.lock:
            self.clock_offset_ms = offset_ms

    def set_klines(self, symbol: str, interval: str, rows: list[list[Any]]) -> None:
        with self.lock:
            self.klines[(symbol, interval)] = rows

    def set_position(self, symbol: str, amt: Decimal, entry: Decimal) -> None:
        with self.lock:
            self.account.positions[symbol] = Position(Decimal(amt), Decimal(entry), self.now_ms())

    def inject(self, path: str, method: str, kind: str, times: int = 1, **options: Any) -> Fault:
        """Make the next ``times`` requests to ``method path`` fail as ``kind`` (see :class:`Fault`)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if kind == "unknown":
            options.setdefault("execute", True)
        fault = Fault(path=path, method=method.upper(), kind=kind, times=times, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, path: str, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path == path and fault.method == method and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def requests(self, path: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        """The request log, optionally only one path and method."""
        with self.lock:
            return [
                r
                for r in self.log
                if (path is None or r.path == path) and (method is None or r.method == method.upper())
            ]

    def orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Every regular order the account has (including those triggered algo orders made)."""
        with self.lock:
            return [dict(o) for o in self.account.orders.values() if symbol is None or o["symbol"] == symbol]

    def algo_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(a) for a in self.account.algos.values() if symbol is None or a["symbol"] == symbol]

    def position_amt(self, symbol: str) -> Decimal:
        with self.lock:
            pos = self.account.positions.get(symbol)
            return pos.amt if pos else ZERO

    def liquidate(self, symbol: str, price: Decimal | None = None) -> dict[str, Any]:
        """Close the whole position as the liquidation engine would (``autoclose-`` order)."""
        with self.lock:
            pos = self.account.positions.get(symbol)
            if pos is None or pos.amt == 0:
                raise ValueError(f"no position to liquidate on {symbol}")
            fill_price = Decimal(price) if price is not None else self.marks[symbol]
            side = "SELL" if pos.amt > 0 else "BUY"
            order = self._new_order_record(
                symbol, side, abs(pos.amt), f"autoclose-{self.now_ms()}", "LIQUIDATION", reduce_only=True
            )
            order["type"] = order["origType"] = "LIQUIDATION"
            trade = self._fill(order, fill_price)
            self._publish_order_update(order, trade, execution="CALCULATED")
            return dict(order)

    def expire_listen_key(self) -> None:
        """Binance expires a key that was not kept alive: the stream says so and the key is gone."""
        with self.lock:
            key = self.listen_key
            self.listen_key = None
        if key:
            self._publish(json.dumps({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": key}), key)
            for sub in self._subs(key):
                sub.push(None)

    def set_ws_enabled(self, enabled: bool) -> None:
        """Disabled: open user-stream connections are dropped and new ones refused."""
        with self.lock:
            self.ws_enabled = enabled
        if not enabled:
            self.disconnect_websockets()

    def disconnect_websockets(self) -> None:
        for sub in self._subs(None):
            sub.push(None)

    @property
    def ws_connections(self) -> int:
        with self.lock:
            return len(self._subscribers)

    # --- clock, auth -----------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def check_timestamp(self, params: dict[str, str]) -> None:
        try:
            ts = int(params["timestamp"])
        except (KeyError, ValueError) as e:
            raise BinanceError(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            ) from e
        recv_window = int(params.get("recvWindow", "5000"))
        if recv_window > 60_000:
            raise BinanceError(-1131, "recvWindow must be less than 60000")
        server = self.now_ms()
        if ts > server + 1000:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - ts > recv_window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")

    # --- websocket subscribers -------------------------------------------------------------------

    def subscribe(self, listen_key: str, loop: asyncio.AbstractEventLoop) -> Subscriber:
        with self.lock:
            if not self.ws_enabled or listen_key != self.listen_key:
                raise BinanceError(-1125, "This listenKey does not exist.")
            sub = Subscriber(listen_key, loop, asyncio.Queue())
            self._subscribers.append(sub)
            return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self.lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def _subs(self, listen_key: str | None) -> list[Subscriber]:
        with self.lock:
            return [s for s in self._subscribers if listen_key is None or s.listen_key == listen_key]

    def _publish(self, message: str, listen_key: str | None = None) -> None:
        key = listen_key or self.listen_key
        if key is None:
            return
        for sub in self._subs(key):
            sub.push(message)
            self.ws_messages_sent += 1

    # --- market data -----------------------------------------------------------------------------

    def _rules(self, symbol: str | None) -> SymbolRules:
        if not symbol or symbol not in self.rules:
            raise BinanceError(-1121, "Invalid symbol.")
        return self.rules[symbol]

    def premium_index(self, params: dict[str, str]) -> Any:
        with self.lock:
            symbol = params.get("symbol")
            if symbol is None:
                return [self._premium(s) for s in self.rules]
            self._rules(symbol)
            return self._premium(symbol)

    def _premium(self, symbol: str) -> dict[str, Any]:
        mark = plain_decimal(self.marks[symbol])
        now = self.now_ms()
        return {
            "symbol": symbol,
            "markPrice": mark,
            "indexPrice": mark,
            "estimatedSettlePrice": mark,
            "lastFundingRate": "0.00010000",
            "interestRate": "0.00010000",
            "nextFundingTime": (now // 28_800_000 + 1) * 28_800_000,
            "time": now,
        }

    def klines_for(self, params: dict[str, str]) -> list[list[Any]]:
        with self.lock:
            symbol = params.get("symbol")
            self._rules(symbol)
            assert symbol is not None
            interval = params.get("interval", "1m")
            limit = min(int(params.get("limit", "500")), 1500)
            rows = self.klines.get((symbol, interval))
            if rows is not None:
                return rows[-limit:]
            return self._generated_klines(symbol, interval, limit)

    def _generated_klines(self, symbol: str, interval: str, limit: int) -> list[list[Any]]:
        """A deterministic zig-zag around the mark price, ending at the current candle."""
        units = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
        step_ms = int(interval[:-1] or 1) * units.get(interval[-1], 60_000)
        rules = self.rules[symbol]
        mark = self.marks[symbol]
        last_open = self.now_ms() // step_ms * step_ms
        rows: list[list[Any]] = []
        for i in range(limit):
            open_time = last_open - (limit - 1 - i) * step_ms
            wiggle = Decimal((open_time // step_ms) % 7 - 3) / Decimal(1000)
            close = rules.round_price(mark * (1 + wiggle))
            open_ = rules.round_price(mark * (1 - wiggle / 2))
            high = max(open_, close) + rules.tick_size
            low = min(open_, close) - rules.tick_size
            rows.append([
                open_time, plain_decimal(open_), plain_decimal(high), plain_decimal(low), plain_decimal(close),
                "100", open_time + step_ms - 1, plain_decimal(close * 100), 10, "50",
                plain_decimal(close * 50), "0",
            ])
        return rows

    # --- orders ----------------------------------------------------------------------------------

    def new_order(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            symbol = params.get("symbol")
            rules = self._rules(symbol)
            assert symbol is not None
            order_type = params.get("type", "")
            if order_type in CONDITIONAL_TYPES:
                raise BinanceError(
                    -4120,
                    "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
                )
            if order_type != "MARKET":
                raise BinanceError(-1116, "Invalid orderType.")
            side = params.get("side")
            if side not in ("BUY", "SELL"):
                raise BinanceError(-1117, "Invalid side.")
            qty = _dec(params, "quantity")
            assert qty is not None
            reduce_only = _bool(params, "reduceOnly")
            client_id = params.get("newClientOrderId") or f"fake-{next(self._listen_seq)}"
            if client_id in self.account.client_ids:
                raise BinanceError(-4116, "ClientOrderId is duplicated.")
            self._check_qty(rules, qty)
            mark = self.marks[symbol]
            pos = self.account.positions.get(symbol, Position())
            if reduce_only:
                reducing = (side == "SELL" and pos.amt > 0) or (side == "BUY" and pos.amt < 0)
                if not reducing:
                    raise BinanceError(-2022, "ReduceOnly Order is rejected.")
                qty = min(qty, abs(pos.amt))
            elif qty * mark < rules.min_notional:
                raise BinanceError(
                    -4164,
                    f"Order's notional must be no smaller than {plain_decimal(rules.min_notional)} "
                    "(unless you choose reduce only).",
                )
            if not reduce_only:
                self._check_margin(symbol, side, qty, mark)
            order = self._new_order_record(symbol, side, qty, client_id, "MARKET", reduce_only=reduce_only)
            trade = self._fill(order, mark)
            self._publish_order_update(order, trade)
            return self._order_json(order, with_time=False)

    def _check_qty(self, rules: SymbolRules, qty: Decimal) -> None:
        if qty <= 0:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if not _multiple_of(qty, rules.step_size):
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if qty < rules.min_qty:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if qty > rules.market_max_qty:
            raise BinanceError(-4005, "Quantity greater than max quantity.")

    def _check_margin(self, symbol: str, side: str, qty: Decimal, mark: Decimal) -> None:
        pos = self.account.positions.get(symbol, Position())
        signed = qty if side == "BUY" else -qty
        increase = abs(pos.amt + signed) - abs(pos.amt)
        if increase <= 0:
            return
        used = sum(
            (abs(p.amt) * self.marks[s] / self._leverage(s) for s, p in self.account.positions.items()),
            ZERO,
        )
        available = self.account.wallet + self._unrealized() - used
        needed = increase * mark / self._leverage(symbol) + qty * mark * self.taker_fee
        if needed > available:
            raise BinanceError(-2019, "Margin is insufficient.")

    def _unrealized(self) -> Decimal:
        return sum(
            ((self.marks[s] - p.entry) * p.amt for s, p in self.account.positions.items()),
            ZERO,
        )

    def _leverage(self, symbol: str) -> int:
        return self.account.leverage.get(symbol, min(self.default_leverage, self.rules[symbol].max_leverage))

    def _new_order_record(
        self, symbol: str, side: str, qty: Decimal, client_id: str, orig_type: str, *, reduce_only: bool
    ) -> dict[str, Any]:
        order_id = next(self._order_ids)
        now = self.now_ms()
        order: dict[str, Any] = {
            "orderId": order_id,
            "symbol": symbol,
            "status": "NEW",
            "clientOrderId": client_id,
            "price": "0",
            "avgPrice": "0",
            "origQty": plain_decimal(qty),
            "executedQty": "0",
            "cumQty": "0",
            "cumQuote": "0",
            "timeInForce": "GTC",
            "type": "MARKET",
            "reduceOnly": reduce_only,
            "closePosition": False,
            "side": side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": orig_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": now,
            "updateTime": now,
        }
        self.account.orders[order_id] = order
        self.account.client_ids[client_id] = order_id
        return order

    def _fill(self, order: dict[str, Any], price: Decimal) -> dict[str, Any]:
        """Fill the whole order at ``price``: position, wallet, trade record."""
        symbol, side = order["symbol"], order["side"]
        qty = Decimal(order["origQty"])
        fee = (qty * price * self.taker_fee).quantize(Decimal("0.00000001"))
        realized = self._apply_to_position(symbol, side, qty, price)
        self.account.wallet += realized - fee
        now = self.now_ms()
        trade = {
            "buyer": side == "BUY",
            "commission": plain_decimal(fee),
            "commissionAsset": "USDT",
            "id": next(self._trade_ids),
            "maker": False,
            "orderId": order["orderId"],
            "price": plain_decimal(price),
            "qty": plain_decimal(qty),
            "quoteQty": plain_decimal(qty * price),
            "realizedPnl": plain_decimal(realized),
            "side": side,
            "positionSide": "BOTH",
            "symbol": symbol,
            "time": now,
        }
        self.account.trades.append(trade)
        order.update(
            status="FILLED",
            executedQty=plain_decimal(qty),
            cumQty=plain_decimal(qty),
            cumQuote=plain_decimal(qty * price),
            avgPrice=plain_decimal(price),
            updateTime=now,
        )
        return trade

    def _apply_to_position(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> Decimal:
        pos = self.account.positions.setdefault(symbol, Position())
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if pos.amt == 0 or (pos.amt > 0) == (signed > 0):
            total = abs(pos.amt) + qty
            pos.entry = (abs(pos.amt) * pos.entry + qty * price) / total
        else:
            closing = min(qty, abs(pos.amt))
            realized = (price - pos.entry) * closing * (1 if pos.amt > 0 else -1)
            if qty > abs(pos.amt):
                pos.entry = price
        pos.amt += signed
        if pos.amt == 0:
            pos.entry = ZERO
        pos.update_ms = self.now_ms()
        return realized

    def _order_json(self, order: dict[str, Any], *, with_time: bool = True) -> dict[str, Any]:
        out = dict(order)
        if not with_time:
            out.pop("time", None)
        return out

    def _find_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = params.get("symbol")
        self._rules(symbol)
        order_id: int | None = None
        if params.get("orderId"):
            order_id = int(params["orderId"])
        elif params.get("origClientOrderId"):
            order_id = self.account.client_ids.get(params["origClientOrderId"])
        else:
            raise BinanceError(-1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!")
        order = self.account.orders.get(order_id) if order_id is not None else None
        if order is None or order["symbol"] != symbol:
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def get_order(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            return self._order_json(self._find_order(params))

    def cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            try:
                order = self._find_order(params)
            except BinanceError as e:
                if e.code == -2013:
                    raise BinanceError(-2011, "Unknown order sent.") from e
                raise
            if order["status"] not in ("NEW", "PARTIALLY_FILLED"):
                raise BinanceError(-2011, "Unknown order sent.")
            order["status"] = "CANCELED"
            return self._order_json(order, with_time=False)

    def open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            symbol = params.get("symbol")
            return [
                self._order_json(o)
                for o in self.account.orders.values()
                if o["status"] in ("NEW", "PARTIALLY_FILLED") and (symbol is None or o["symbol"] == symbol)
            ]

    # --- algo (conditional) orders ---------------------------------------------------------------

    def new_algo(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            symbol = params.get("symbol")
            rules = self._rules(symbol)
            assert symbol is not None
            if params.get("algoType") != "CONDITIONAL":
                raise BinanceError(-1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
            order_type = params.get("type", "")
            if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise BinanceError(-1116, "Invalid orderType.")
            side = params.get("side")
            if side not in ("BUY", "SELL"):
                raise BinanceError(-1117, "Invalid side.")
            trigger = _dec(params, "triggerPrice")
            assert trigger is not None
            if trigger <= 0 or not _multiple_of(trigger, rules.tick_size):
                raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
            close_position = _bool(params, "closePosition")
            reduce_only = _bool(params, "reduceOnly")
            qty = _dec(params, "quantity", required=not close_position)
            if close_position and (qty is not None or "reduceOnly" in params):
                raise BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
            if qty is not None:
                self._check_qty(rules, qty)
            client_algo_id = params.get("clientAlgoId") or f"fake-algo-{next(self._listen_seq)}"
            if client_algo_id in self.account.client_algo_ids:
                raise BinanceError(-4116, "ClientOrderId is duplicated.")
            mark = self.marks[symbol]
            immediate = self._crossed(order_type, side, trigger, mark)
            if immediate:
                raise BinanceError(-2021, "Order would immediately trigger.")
            now = self.now_ms()
            algo_id = next(self._algo_ids)
            algo: dict[str, Any] = {
                "algoId": algo_id,
                "clientAlgoId": client_algo_id,
                "algoType": "CONDITIONAL",
                "orderType": order_type,
                "symbol": symbol,
                "side": side,
                "positionSide": "BOTH",
                "timeInForce": params.get("timeInForce", "GTC"),
                "quantity": plain_decimal(qty) if qty is not None else "0",
                "algoStatus": "NEW",
                "triggerPrice": plain_decimal(trigger),
                "price": "0",
                "icebergQuantity": None,
                "selfTradePreventionMode": "EXPIRE_MAKER",
                "workingType": params.get("workingType", "CONTRACT_PRICE"),
                "priceMatch": "NONE",
                "closePosition": close_position,
                "priceProtect": _bool(params, "priceProtect"),
                "reduceOnly": reduce_only or close_position,
                "activatePrice": "",
                "callbackRate": "",
                "createTime": now,
                "updateTime": now,
                "triggerTime": 0,
                "goodTillDate": 0,
                "actualOrderId": "",
                "actualPrice": "",
                "executedQty": "0",
            }
            self.account.algos[algo_id] = algo
            self.account.client_algo_ids[client_algo_id] = algo_id
            self._publish_algo_update(algo)
            return self._algo_json(algo)

    @staticmethod
    def _crossed(order_type: str, side: str, trigger: Decimal, mark: Decimal) -> bool:
        # A SELL stop protects a long: it fires when the price falls to the trigger; a SELL take-profit
        # when it rises to it. BUY orders (protecting shorts) mirror that.
        falls_to = (order_type == "STOP_MARKET") == (side == "SELL")
        return mark <= trigger if falls_to else mark >= trigger

    def _algo_json(self, algo: dict[str, Any]) -> dict[str, Any]:
        return dict(algo)

    def _find_algo(self, params: dict[str, str]) -> dict[str, Any]:
        algo_id: int | None = None
        if params.get("algoId"):
            algo_id = int(params["algoId"])
        elif params.get("clientAlgoId"):
            algo_id = self.account.client_algo_ids.get(params["clientAlgoId"])
        else:
            raise BinanceError(-1102, "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!")
        algo = self.account.algos.get(algo_id) if algo_id is not None else None
        if algo is None:
            raise BinanceError(-2013, "Order does not exist.")
        return algo

    def get_algo(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            return self._algo_json(self._find_algo(params))

    def cancel_algo(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            try:
                algo = self._find_algo(params)
            except BinanceError as e:
                if e.code == -2013:
                    raise BinanceError(-2011, "Unknown order sent.") from e
                raise
            if algo["algoStatus"] != "NEW":
                raise BinanceError(-2011, "Unknown order sent.")
            algo.update(algoStatus="CANCELED", updateTime=self.now_ms())
            self._publish_algo_update(algo)
            return {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"], "code": "200", "msg": "success"}

    def open_algos(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            symbol = params.get("symbol")
            return [
                self._algo_json(a)
                for a in self.account.algos.values()
                if a["algoStatus"] == "NEW" and (symbol is None or a["symbol"] == symbol)
            ]

    def _check_triggers(self, symbol: str) -> None:
        mark = self.marks[symbol]
        for algo in list(self.account.algos.values()):
            if algo["symbol"] != symbol or algo["algoStatus"] != "NEW":
                continue
            if self._crossed(algo["orderType"], algo["side"], Decimal(algo["triggerPrice"]), mark):
                self._trigger(algo, mark)

    def _trigger(self, algo: dict[str, Any], mark: Decimal) -> None:
        symbol, side = algo["symbol"], algo["side"]
        pos = self.account.positions.get(symbol, Position())
        reducing = (side == "SELL" and pos.amt > 0) or (side == "BUY" and pos.amt < 0)
        now = self.now_ms()
        if not reducing:
            algo.update(algoStatus="EXPIRED", updateTime=now, triggerTime=now)
            self._publish_algo_update(algo)
            return
        qty = abs(pos.amt) if algo["closePosition"] else min(Decimal(algo["quantity"]), abs(pos.amt))
        # The matching-engine order a triggered algo order becomes carries the client algo id.
        self.account.client_ids.pop(algo["clientAlgoId"], None)
        order = self._new_order_record(
            symbol, side, qty, algo["clientAlgoId"], algo["orderType"], reduce_only=True
        )
        order.update(stopPrice=algo["triggerPrice"], closePosition=algo["closePosition"], workingType="MARK_PRICE")
        algo.update(algoStatus="TRIGGERED", triggerTime=now, updateTime=now, actualOrderId=str(order["orderId"]))
        self._publish_algo_update(algo)
        trade = self._fill(order, mark)
        self._publish_order_update(order, None, execution="NEW", status="NEW")
        self._publish_order_update(order, trade)
        algo.update(
            algoStatus="FINISHED",
            updateTime=self.now_ms(),
            actualPrice=order["avgPrice"],
            executedQty=order["executedQty"],
        )
        self._publish_algo_update(algo)

    # --- account ---------------------------------------------------------------------------------

    def position_risk(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            symbol = params.get("symbol")
            if symbol is not None:
                self._rules(symbol)
            out = []
            for s, p in self.account.positions.items():
                has_orders = any(a["symbol"] == s and a["algoStatus"] == "NEW" for a in self.account.algos.values())
                if (symbol is not None and s != symbol) or (p.amt == 0 and not has_orders):
                    continue
                mark = self.marks[s]
                lev = Decimal(self._leverage(s))
                notional = p.amt * mark
                margin = abs(notional) / lev
                liq = ZERO
                if p.amt != 0:
                    liq = max(ZERO, p.entry * (1 - Decimal(1) / lev) if p.amt > 0 else p.entry * (1 + Decimal(1) / lev))
                out.append({
                    "symbol": s,
                    "positionSide": "BOTH",
                    "positionAmt": plain_decimal(p.amt),
                    "entryPrice": plain_decimal(p.entry),
                    "breakEvenPrice": plain_decimal(p.entry),
                    "markPrice": plain_decimal(mark),
                    "unRealizedProfit": plain_decimal((mark - p.entry) * p.amt),
                    "liquidationPrice": plain_decimal(self.rules[s].round_price(liq)),
                    "isolatedMargin": "0",
                    "notional": plain_decimal(notional),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": plain_decimal(margin),
                    "maintMargin": plain_decimal(abs(notional) * Decimal("0.004")),
                    "positionInitialMargin": plain_decimal(margin),
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": p.update_ms,
                })
            return out

    def symbol_config(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            symbol = params.get("symbol")
            symbols = [symbol] if symbol else list(self.rules)
            for s in symbols:
                self._rules(s)
            return [
                {
                    "symbol": s,
                    "marginType": "CROSSED",
                    "isAutoAddMargin": False,
                    "leverage": self._leverage(s),
                    "maxNotionalValue": "1000000",
                }
                for s in symbols
            ]

    def change_leverage(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            symbol = params.get("symbol")
            rules = self._rules(symbol)
            assert symbol is not None
            raw = params.get("leverage", "")
            if not raw.isdigit():
                raise BinanceError(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.")
            leverage = int(raw)
            if not 1 <= leverage <= rules.max_leverage:
                raise BinanceError(-4028, f"Leverage {leverage} is not valid")
            self.account.leverage[symbol] = leverage
            return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": symbol}

    def balances(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            unrealized = self._unrealized()
            used = sum(
                (abs(p.amt) * self.marks[s] / self._leverage(s) for s, p in self.account.positions.items()),
                ZERO,
            )
            available = self.account.wallet + unrealized - used
            wallet = plain_decimal(self.account.wallet)
            return [
                {
                    "accountAlias": "SgsR",
                    "asset": "USDT",
                    "balance": wallet,
                    "crossWalletBalance": wallet,
                    "crossUnPnl": plain_decimal(unrealized),
                    "availableBalance": plain_decimal(available),
                    "maxWithdrawAmount": plain_decimal(available),
                    "marginAvailable": True,
                    "updateTime": self.now_ms(),
                }
            ]

    def user_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            symbol = params.get("symbol")
            self._rules(symbol)
            start = int(params["startTime"]) if params.get("startTime") else None
            end = int(params["endTime"]) if params.get("endTime") else None
            order_id = int(params["orderId"]) if params.get("orderId") else None
            limit = min(int(params.get("limit", "500")), 1000)
            rows = [
                dict(t)
                for t in self.account.trades
                if t["symbol"] == symbol
                and (start is None or t["time"] >= start)
                and (end is None or t["time"] <= end)
                and (order_id is None or t["orderId"] == order_id)
            ]
            return rows[:limit] if start is not None else rows[-limit:]

    # --- listen key ------------------------------------------------------------------------------

    def new_listen_key(self) -> dict[str, Any]:
        with self.lock:
            if self.listen_key is None:
                self.listen_key = f"fakeListenKey{next(self._listen_seq):04d}" + "x" * 44
                self.listen_keys_issued += 1
            return {"listenKey": self.listen_key}

    def keepalive_listen_key(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            if self.listen_key is None or params.get("listenKey") not in (None, self.listen_key):
                raise BinanceError(-1125, "This listenKey does not exist.")
            self.keepalives += 1
            return {"listenKey": self.listen_key}

    def close_listen_key(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            key = self.listen_key
            self.listen_key = None
        if key:
            for sub in self._subs(key):
                sub.push(None)
        return {}

    # --- user data stream events -----------------------------------------------------------------

    def _publish_order_update(
        self,
        order: dict[str, Any],
        trade: dict[str, Any] | None,
        *,
        execution: str = "TRADE",
        status: str | None = None,
    ) -> None:
        now = self.now_ms()
        o = {
            "s": order["symbol"],
            "c": order["clientOrderId"],
            "S": order["side"],
            "o": order["type"],
            "f": "GTC",
            "q": order["origQty"],
            "p": "0",
            "ap": order["avgPrice"] if trade else "0",
            "sp": order["stopPrice"],
            "x": execution,
            "X": status or order["status"],
            "i": order["orderId"],
            "l": trade["qty"] if trade else "0",
            "z": order["executedQty"] if trade else "0",
            "L": trade["price"] if trade else "0",
            "N": "USDT",
            "n": trade["commission"] if trade else "0",
            "T": trade["time"] if trade else now,
            "t": trade["id"] if trade else 0,
            "b": "0",
            "a": "0",
            "m": False,
            "R": order["reduceOnly"],
            "wt": order["workingType"],
            "ot": order["origType"],
            "ps": "BOTH",
            "cp": order["closePosition"],
            "rp": trade["realizedPnl"] if trade else "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
        }
        self._publish(json.dumps({"e": "ORDER_TRADE_UPDATE", "E": now, "T": o["T"], "o": o}, ensure_ascii=False))

    def _publish_algo_update(self, algo: dict[str, Any]) -> None:
        now = self.now_ms()
        o = {
            "caid": algo["clientAlgoId"],
            "aid": algo["algoId"],
            "at": "CONDITIONAL",
            "o": algo["orderType"],
            "s": algo["symbol"],
            "S": algo["side"],
            "ps": "BOTH",
            "f": algo["timeInForce"],
            "q": algo["quantity"],
            "X": algo["algoStatus"],
            "ai": algo["actualOrderId"],
            "ap": algo["actualPrice"] or "0",
            "aq": algo["executedQty"],
            "act": "0",
            "tp": algo["triggerPrice"],
            "p": "0",
            "V": "EXPIRE_MAKER",
            "wt": algo["workingType"],
            "pm": "NONE",
            "cp": algo["closePosition"],
            "pP": algo["priceProtect"],
            "R": algo["reduceOnly"],
            "tt": algo["triggerTime"],
            "gtd": 0,
        }
        self._publish(json.dumps({"e": "ALGO_UPDATE", "T": now, "E": now, "o": o}, ensure_ascii=False))


#: A handler of one endpoint: request params in, JSON-able answer out (or BinanceError).
Handler = Callable[[dict[str, str]], Any]
