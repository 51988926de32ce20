"""harvest_brain's books and the governor's loss limits, on the backtest's clock.

Every fill is booked by :func:`services.harvest_brain.booking.book_fill` into the open trade, the symbol's
ledger and the account — the equity trading_bot sizes on — and a trade that goes flat is a
``trade.closed``. After each booking the governor's rule (:func:`services.governor.risk.breach`) is
checked against the policy's daily-loss and drawdown limits; reaching one trips the kill switch, which
then refuses every entry (exits go on) for the rest of the run, as in the fleet until an operator
re-arms it — or, with ``rearm_next_day``, until the next UTC day begins (an operator re-arming it every
morning: ``qt ess reset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.books import SymbolLedger
from common.contracts import ExecutionResult, TradeClosed
from common.ess import Ess, EssState
from common.maths.ledger import Account, new_account, utc_day
from common.policy import Limits
from common.streams import Service
from services.governor.risk import breach
from services.harvest_brain.booking import OpenTrade, book_fill


@dataclass(frozen=True)
class Trip:
    """The kill switch tripped by the governor: when, and why (``drawdown 16.20% >= 15%``)."""

    at: int
    reason: str


class SimBooks:
    """The ledger and the kill switch of one backtest."""

    def __init__(self, starting_equity: Decimal, limits: Limits, *, rearm_next_day: bool = False) -> None:
        self.starting_equity = starting_equity
        self.limits = limits
        self.rearm_next_day = rearm_next_day
        self.account: Account | None = None
        self.trades: dict[str, OpenTrade] = {}
        self.ledgers: dict[str, SymbolLedger] = {}
        self.closed: list[TradeClosed] = []
        self.ess = Ess(EssState.ARMED)
        self.trips: list[Trip] = []
        self.fills = 0
        self.orphans = 0

    @property
    def equity(self) -> Decimal:
        """The account's equity as the ledger books it (realized PnL less fees)."""
        return self.account.equity if self.account is not None else self.starting_equity

    def book(self, fill: ExecutionResult) -> TradeClosed | None:
        """Book one fill (its ``ts`` is the fill time); the trade it closed, if any. The governor looks at
        the account after it."""
        account = self.account if self.account is not None else new_account(self.starting_equity, fill.ts)
        booking = book_fill(fill, self.trades.get(fill.symbol), self.ledgers.get(fill.symbol, SymbolLedger()),
                            account)
        if booking.trade is None:
            self.trades.pop(fill.symbol, None)
        else:
            self.trades[fill.symbol] = booking.trade
        self.ledgers[fill.symbol] = booking.ledger
        self.account = booking.account
        self.fills += 1
        self.orphans += booking.orphan
        if booking.closed is not None:
            self.closed.append(booking.closed)
        self.check(fill.ts)
        return booking.closed

    def ess_at(self, now_ms: int) -> Ess:
        """The kill switch as an entry at ``now_ms`` sees it (re-armed first when that is due)."""
        if self.ess.tripped and self.rearm_next_day and utc_day(now_ms) != utc_day(self.ess.at):
            self.ess = Ess(EssState.ARMED, "", now_ms, "backtest")
            self.check(now_ms)
        return self.ess

    def check(self, now_ms: int) -> None:
        """The governor's check: a loss limit reached trips the switch (once; it stays tripped)."""
        if self.ess.tripped:
            return
        found = breach(self.account, self.limits, now_ms)
        if found is not None:
            self.ess = Ess(EssState.TRIPPED, found.reason, now_ms, Service.GOVERNOR)
            self.trips.append(Trip(now_ms, found.reason))
