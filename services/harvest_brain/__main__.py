"""``python -m services.harvest_brain``: the books — every fill of ``execution.result`` into the ledger."""

from __future__ import annotations

from decimal import Decimal

import structlog

from common import keys
from common.exchange.errors import ExchangeError
from common.exchange.factory import build_exchange
from common.service import ServiceContext, run
from common.store import read_account
from common.streams import Service, Stream
from services.harvest_brain.books import DRAWDOWN, EQUITY, Bookkeeper

log = structlog.get_logger()


async def starting_equity(ctx: ServiceContext) -> Decimal:
    """The equity the account starts from when ``quantum:ledger:account`` is absent: the paper exchange's
    starting balance, or the wallet balance a real exchange reports (one read-only call)."""
    settings = ctx.settings
    if settings.exchange == "paper" or await ctx.redis.exists(keys.ledger_account()):
        return settings.paper.starting_balance
    exchange = build_exchange(ctx.redis, settings)
    try:
        await exchange.start()
        return (await exchange.balance()).wallet_balance
    except ExchangeError as e:
        log.warning("starting_equity_unknown", error=str(e), fallback=str(settings.signal.default_balance_usd))
        return settings.signal.default_balance_usd
    finally:
        await exchange.close()


async def setup(ctx: ServiceContext) -> None:
    equity = await starting_equity(ctx)
    account = await read_account(ctx.redis)
    EQUITY.set(float(account.equity if account else equity))  # the gauges are right before the next fill
    DRAWDOWN.set(float(account.drawdown) if account else 0.0)
    log.info("harvest_brain_started", exchange=ctx.settings.exchange, starting_equity=str(equity))
    # one lane: every fill moves the one account hash, so fills are booked strictly one after another
    ctx.consume(Stream.EXECUTION_RESULT, Bookkeeper(ctx.redis, equity).handle)


def main() -> None:
    run(Service.HARVEST_BRAIN, setup)


if __name__ == "__main__":
    main()
