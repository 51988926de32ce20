"""The account ledger hash ``quantum:ledger:account`` (written by harvest_brain, read by the governor,
trading_bot, position_monitor and ``qt``)."""

from __future__ import annotations

from decimal import Decimal

from redis.asyncio import Redis

from common import keys
from common.contracts.base import plain_decimal
from common.maths.ledger import Account
from common.redis_client import hgetall

_DECIMALS = ("equity", "realized_pnl", "fees", "peak_equity", "drawdown", "day_start_equity")


def account_to_hash(account: Account, updated_at: int) -> dict[str, str]:
    fields = {name: plain_decimal(getattr(account, name)) for name in _DECIMALS}
    fields["day"] = account.day
    fields["updated_at"] = str(updated_at)
    return fields


def account_from_hash(fields: dict[str, str]) -> Account:
    return Account(**{name: Decimal(fields[name]) for name in _DECIMALS}, day=fields["day"])


async def read_account(redis: Redis) -> Account | None:
    """The account as harvest_brain last booked it; None before the first fill."""
    fields = await hgetall(redis, keys.ledger_account())
    return account_from_hash(fields) if fields else None
