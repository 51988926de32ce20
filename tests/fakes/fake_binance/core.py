"""What every part of the fake shares: errors, parameter parsing, the account's records, the clock.

The fake's state lives in one :class:`FakeBinance` (``state.py``) assembled from one mixin per concern
(``market.py``, ``orders.py``, ``algo.py``, ``account.py``, ``user_stream.py``, ``faults.py``); each
mixin reads and writes the attributes declared on :class:`FakeCore`, under :attr:`FakeCore.lock`.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

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
    "BNBUSDT": Decimal("600"),
}
CONDITIONAL_TYPES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
PLAIN_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
UNKNOWN_ERROR_MSG = "Unknown error, please check your request or try again later."
ZERO = Decimal(0)
DAY_MS = 86_400_000


class BinanceError(Exception):
    """An error answer: HTTP status plus Binance's ``{"code", "msg"}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


def mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def dec_param(params: dict[str, str], name: str, *, required: bool = True) -> Decimal | None:
    """A DECIMAL parameter: a plain decimal string (Binance refuses ``1e-05``)."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise mandatory(name)
        return None
    if not PLAIN_NUMBER.match(raw):
        raise mandatory(name)
    try:
        return Decimal(raw)
    except InvalidOperation as e:  # pragma: no cover - the check above already refused it
        raise mandatory(name) from e


def bool_param(params: dict[str, str], name: str) -> bool:
    """A STRING boolean parameter: exactly ``"true"`` or ``"false"``."""
    raw = params.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise mandatory(name)
    return raw == "true"


def int_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.lstrip("-").isdigit():
        raise mandatory(name)
    return int(raw)


def multiple_of(value: Decimal, unit: Decimal) -> bool:
    return unit == 0 or (value % unit) == 0


def reducing(side: str, amt: Decimal) -> bool:
    """Whether an order on ``side`` reduces a one-way position of signed ``amt``."""
    return (side == "SELL" and amt > 0) or (side == "BUY" and amt < 0)


@dataclass
class Position:
    amt: Decimal = ZERO
    entry: Decimal = ZERO
    update_ms: int = 0


@dataclass
class TradeDelay:
    """Trades of one order (beyond its first ``first_visible``) are hidden from userTrades for a while."""

    delay_s: float
    first_visible: int = 0


@dataclass
class Account:
    """One account's records. Orders and algo orders are kept as dicts of every field the fake knows;
    the response builders pick the fields each Binance page documents."""

    wallet: Decimal
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    client_ids: dict[str, int] = field(default_factory=dict)
    algos: dict[int, dict[str, Any]] = field(default_factory=dict)
    client_algo_ids: dict[str, int] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    #: trade id -> time.monotonic() from which userTrades shows it
    trade_visible_at: dict[int, float] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    #: GET /fapi/v1/positionSide/dual: True = hedge mode
    dual_side: bool = False


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


class FakeCore:
    """The state shared by the mixins (set up by ``FakeBinance.reset``)."""

    api_key: str
    api_secret: str
    starting_balance: Decimal
    taker_fee: Decimal
    default_leverage: int
    symbols_file: Path
    lock: threading.RLock
    account: Account
    #: exchangeInfo as served (what the symbols file holds, without its comment and brackets)
    exchange_info: dict[str, Any]
    #: GET /fapi/v1/leverageBracket as served, by symbol
    brackets: dict[str, dict[str, Any]]
    rules: dict[str, SymbolRules]
    marks: dict[str, Decimal]
    klines: dict[tuple[str, str], list[list[Any]]]
    clock_offset_ms: int
    _order_ids: Iterator[int]
    _algo_ids: Iterator[int]
    _trade_ids: Iterator[int]
    _seq: Iterator[int]
    _subscribers: list[Subscriber]

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def _rules(self, symbol: str | None) -> SymbolRules:
        if not symbol or symbol not in self.rules:
            raise BinanceError(-1121, "Invalid symbol.")
        return self.rules[symbol]

    def _leverage(self, symbol: str) -> int:
        return self.account.leverage.get(symbol, min(self.default_leverage, self.rules[symbol].max_leverage))

    # --- implemented by the mixins, used across them (declared here, the last base of every mixin) ---

    def _publish_order_update(
        self, order: dict[str, Any], trade: dict[str, Any] | None, *, execution: str = "TRADE",
        status: str | None = None, order_type: str | None = None,
    ) -> None:
        raise NotImplementedError  # user_stream.py

    def _publish_algo_update(self, algo: dict[str, Any]) -> None:
        raise NotImplementedError  # user_stream.py

    def _check_triggers(self, symbol: str) -> None:
        raise NotImplementedError  # algo.py

    def _position_changed(self, symbol: str) -> None:
        raise NotImplementedError  # algo.py: a flattened position expires its close-position orders

    def _new_order_record(
        self, symbol: str, side: str, qty: Decimal, client_id: str, orig_type: str, *, reduce_only: bool
    ) -> dict[str, Any]:
        raise NotImplementedError  # orders.py

    def _fill(self, order: dict[str, Any], price: Decimal) -> list[dict[str, Any]]:
        raise NotImplementedError  # orders.py

    def add_symbol(self, symbol: str, **options: Any) -> None:
        raise NotImplementedError  # market.py

    def _unrealized(self) -> Decimal:
        raise NotImplementedError  # orders.py

    def _used_margin(self) -> Decimal:
        raise NotImplementedError  # orders.py


#: A handler of one endpoint: request params in, JSON-able answer out (or BinanceError).
Handler = Callable[[dict[str, str]], Any]
