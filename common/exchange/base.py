"""The one exchange interface apply_layer (and read-only services) talk to, and its domain types.

Implemented by the paper exchange (``common.exchange.paper``) and by Binance USD-M futures through
python-binance (``common.exchange.binance``). Prices and quantities are ``Decimal``; timestamps are
epoch milliseconds; client ids are ``qt-<plan_id>[-sl|-tp]`` (at most 36 chars of ``[A-Za-z0-9._-]``).
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from common.contracts.enums import FillKind, Side
from common.exchange.rules import SymbolRules

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,36}$")


#: the prefix of every client id we send (``qt-<plan_id>[-sl|-tp]``)
OUR_PREFIX = "qt-"


def is_ours(client_id: str) -> bool:
    """An order this fleet placed (any client id starting with :data:`OUR_PREFIX`)."""
    return client_id.startswith(OUR_PREFIX)


def client_order_id(plan_id: str, suffix: str = "") -> str:
    """``qt-<plan_id>`` or ``qt-<plan_id>-<suffix>``; never derived from a symbol."""
    cid = f"{OUR_PREFIX}{plan_id}" + (f"-{suffix}" if suffix else "")
    if not CLIENT_ID_RE.match(cid):
        raise ValueError(f"invalid client order id: {cid!r}")
    return cid


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class ConditionalKind(StrEnum):
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"

    @property
    def fill_kind(self) -> FillKind:
        return FillKind.STOP if self is ConditionalKind.STOP_MARKET else FillKind.TAKE_PROFIT


class ConditionalStatus(StrEnum):
    NEW = "NEW"
    TRIGGERED = "TRIGGERED"
    FINISHED = "FINISHED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    #: refused after it was accepted (Binance: the matching engine denied the triggered order)
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class Fill:
    """One fill (a trade) on the exchange."""

    fill_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    reduce_only: bool
    realized_pnl: Decimal | None
    ts_ms: int


@dataclass(frozen=True)
class OrderResult:
    """An order's state on the exchange."""

    symbol: str
    client_order_id: str
    order_id: str
    side: Side
    status: OrderStatus
    orig_qty: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    reduce_only: bool
    update_time_ms: int
    fills: tuple[Fill, ...] = ()

    @property
    def fee(self) -> Decimal:
        return sum((f.fee for f in self.fills), Decimal(0))


@dataclass(frozen=True)
class ConditionalOrder:
    """A protective stop-loss or take-profit (Binance: an algo order)."""

    symbol: str
    client_algo_id: str
    algo_id: str
    kind: ConditionalKind
    side: Side
    trigger_price: Decimal
    close_position: bool
    quantity: Decimal | None
    status: ConditionalStatus


@dataclass(frozen=True)
class ExchangePosition:
    """A position as the exchange holds it (``position_amt`` signed: + long, - short)."""

    symbol: str
    position_amt: Decimal
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    leverage: int
    liquidation_price: Decimal


@dataclass(frozen=True)
class Balance:
    asset: str
    wallet_balance: Decimal
    available_balance: Decimal
    unrealized_pnl: Decimal


@dataclass(frozen=True)
class ExchangeEvent:
    """A fill that apply_layer did not ask for directly: a conditional order's or a liquidation.

    ``origin_id`` is the client id of the order that filled (``qt-<plan_id>-sl``), or the exchange's
    id for a liquidation."""

    kind: FillKind
    fill: Fill
    origin_id: str


@dataclass(frozen=True)
class ConditionalEnded:
    """A protective conditional order that ended without filling, by the exchange's doing: rejected or
    expired after it was accepted (Binance: ``ALGO_UPDATE`` with ``X`` = ``REJECTED`` / ``EXPIRED`` and
    the reason in ``rm``). The position it protected may now have no stop: apply_layer re-protects it."""

    symbol: str
    client_algo_id: str
    status: ConditionalStatus
    reason: str
    ts_ms: int


#: what :meth:`Exchange.events` yields
OrderEvent = ExchangeEvent | ConditionalEnded


class Exchange(abc.ABC):
    """What apply_layer may ask of an exchange. Every call has a timeout; errors are those of
    :mod:`common.exchange.errors`."""

    name: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, sync the clock, load rules."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    async def symbol_rules(self) -> dict[str, SymbolRules]:
        """Rules of every symbol the exchange lists (cached by the adapter)."""

    @abc.abstractmethod
    async def mark_price(self, symbol: str) -> Decimal: ...

    @abc.abstractmethod
    async def set_leverage(self, symbol: str, leverage: int) -> int:
        """Set the symbol's leverage; returns what the exchange accepted."""

    @abc.abstractmethod
    async def place_market_order(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *, reduce_only: bool
    ) -> OrderResult:
        """A market order. Raises OrderRejected, DuplicateClientOrderId, TemporaryError, UnknownOutcome."""

    @abc.abstractmethod
    async def get_order(self, symbol: str, client_order_id: str) -> OrderResult:
        """The order with this client id, with its fills; OrderNotFound when there is none."""

    @abc.abstractmethod
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
        """A reduce-only protective order triggered on the mark price."""

    @abc.abstractmethod
    async def get_conditional(self, symbol: str, client_algo_id: str) -> ConditionalOrder:
        """OrderNotFound when there is none."""

    @abc.abstractmethod
    async def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        """Cancel; OrderNotFound when it is not open (already triggered, cancelled or unknown)."""

    @abc.abstractmethod
    async def open_conditionals(self, symbol: str | None = None) -> list[ConditionalOrder]: ...

    @abc.abstractmethod
    async def positions(self) -> dict[str, ExchangePosition]:
        """Every non-zero position, by symbol."""

    @abc.abstractmethod
    async def balance(self) -> Balance:
        """The USDT balance."""

    @abc.abstractmethod
    async def fills_since(self, symbol: str, since_ms: int) -> list[Fill]:
        """Fills of ``symbol`` at or after ``since_ms`` (the polling fallback for :meth:`events`)."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[OrderEvent]:
        """Fills of conditional orders and liquidations, and protective orders the exchange rejected or
        expired, as they happen. The iterator ends when the exchange is closed; a consumer deduplicates
        fills by ``fill.fill_id``."""
