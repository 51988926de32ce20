"""The fake Binance USD-M account, assembled from one part per concern. Thread-safe: the server runs in
its own thread and event loop while a test drives prices and faults from the main thread.

Shapes and error codes are Binance's (``/fapi`` REST and the user data stream); every response builder
names the documentation page it follows (``market.py``, ``orders.py``, ``algo.py``, ``account.py``,
``user_stream.py``). The matching engine is a toy: MARKET orders fill in full at the mark price set by
the test, with a taker fee; algo orders trigger on the mark.
"""

from __future__ import annotations

import itertools
import threading
from decimal import Decimal
from pathlib import Path

from tests.fakes.fake_binance.account import AccountMixin
from tests.fakes.fake_binance.algo import AlgoMixin
from tests.fakes.fake_binance.core import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_SYMBOLS_FILE,
    UNKNOWN_ERROR_MSG,
    Account,
    BinanceError,
    Handler,
    Position,
)
from tests.fakes.fake_binance.faults import FAULT_KINDS, Fault, FaultsMixin, LoggedRequest
from tests.fakes.fake_binance.market import MarketMixin
from tests.fakes.fake_binance.orders import OrdersMixin
from tests.fakes.fake_binance.user_stream import UserStreamMixin

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "FAULT_KINDS",
    "UNKNOWN_ERROR_MSG",
    "BinanceError",
    "FakeBinance",
    "Fault",
    "Handler",
    "LoggedRequest",
    "Position",
]


class FakeBinance(FaultsMixin, MarketMixin, OrdersMixin, AlgoMixin, AccountMixin, UserStreamMixin):
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
        self.symbols_file = symbols_file
        self.starting_balance = starting_balance
        self.taker_fee = taker_fee
        self.default_leverage = default_leverage
        self.lock = threading.RLock()
        self._subscribers = []
        self.reset()

    def reset(self) -> None:
        """Forget every order, position, fault, listed symbol and logged request; marks back to their
        defaults; one-way mode; every knob off."""
        with self.lock:
            self._load_symbols()
            self.account = Account(wallet=self.starting_balance)
            self.klines = {}
            self.clock_offset_ms = 0
            self._order_ids = itertools.count(8_389_765_000)
            self._algo_ids = itertools.count(3_000_000)
            self._trade_ids = itertools.count(512_000_000)
            self._seq = itertools.count(1)
            self._reset_faults()
            self._reset_orders()
            self._reset_algos()
            self._reset_user_stream()
        self.disconnect_websockets()

    def set_clock_offset_ms(self, offset_ms: int) -> None:
        """Skew the server's clock against the test machine's (for -1021)."""
        with self.lock:
            self.clock_offset_ms = offset_ms

    def check_timestamp(self, params: dict[str, str]) -> None:
        """A signed request's ``timestamp`` within ``recvWindow`` of the server's clock (else -1021).
        https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info"""
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
