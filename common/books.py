"""The books harvest_brain keeps, as everyone reads them: the account ``quantum:ledger:account`` (read by
the governor, trading_bot, position_monitor and ``qt``) and each symbol's ledger
``quantum:position:ledger:{s}`` (position_monitor, ``qt``) — the values and their one hash codec.

The codec stores every USDT amount on the 1e-8 grid, ROUND_HALF_EVEN (:func:`common.maths.ledger.usdt`,
whose module states the rule): the books read as money and sum exactly. ``drawdown`` is a fraction of the
peak, not an amount, and keeps its precision."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.contracts.base import plain_decimal
from common.maths.ledger import Account, usdt

ZERO = Decimal(0)
_DECIMALS = ("equity", "realized_pnl", "fees", "peak_equity", "drawdown", "day_start_equity")
#: the account's USDT amounts (drawdown is a fraction)
_AMOUNTS = frozenset(_DECIMALS) - {"drawdown"}


def account_to_hash(account: Account, updated_at: int) -> dict[str, str]:
    fields = {name: plain_decimal(usdt(getattr(account, name)) if name in _AMOUNTS else getattr(account, name))
              for name in _DECIMALS}
    fields["day"] = account.day
    fields["updated_at"] = str(updated_at)
    return fields


def account_from_hash(fields: dict[str, str]) -> Account:
    return Account(**{name: Decimal(fields[name]) for name in _DECIMALS}, day=fields["day"])


@dataclass(frozen=True)
class SymbolLedger:
    """``quantum:position:ledger:{s}``: the symbol's totals over every fill and closed trade."""

    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    trades: int = 0
    wins: int = 0
    losses: int = 0
    last_fill_id: str = ""
    updated_at: int = 0


def ledger_to_hash(ledger: SymbolLedger) -> dict[str, str]:
    return {
        "realized_pnl": plain_decimal(usdt(ledger.realized_pnl)),
        "fees": plain_decimal(usdt(ledger.fees)),
        "trades": str(ledger.trades),
        "wins": str(ledger.wins),
        "losses": str(ledger.losses),
        "last_fill_id": ledger.last_fill_id,
        "updated_at": str(ledger.updated_at),
    }


def ledger_from_hash(fields: dict[str, str]) -> SymbolLedger:
    if not fields:
        return SymbolLedger()
    return SymbolLedger(
        realized_pnl=Decimal(fields.get("realized_pnl") or 0),
        fees=Decimal(fields.get("fees") or 0),
        trades=int(fields.get("trades") or 0),
        wins=int(fields.get("wins") or 0),
        losses=int(fields.get("losses") or 0),
        last_fill_id=fields.get("last_fill_id", ""),
        updated_at=int(fields.get("updated_at") or 0),
    )
