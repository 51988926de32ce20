"""``quantum:exchange:symbols``: the exchange's trading rules, as the trading side reads them.

The rules come from the exchange the fleet trades on (``settings.exchange``): the paper exchange's
rules file, or Binance's exchangeInfo. Every refresh replaces the whole hash in one transaction, so
a symbol the exchange stopped listing disappears and a reader never sees half a refresh.
"""

from __future__ import annotations

from redis.asyncio import Redis

from common import keys
from common.bus import HashSet, commit
from common.config import Settings
from common.exchange.base import Exchange
from common.exchange.factory import build_exchange
from common.exchange.rules import SymbolRules
from common.market import rules_mapping
from common.streams import Service


class SymbolRulesSource:
    """The rules of the configured exchange; Binance's client is started on first use."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.exchange: Exchange = build_exchange(redis, settings)
        # the paper exchange reads its rules file; starting it would open its account, not ours to do
        self._needs_start = settings.exchange != "paper"
        self._started = False

    async def rules(self) -> dict[str, SymbolRules]:
        if self._needs_start and not self._started:
            await self.exchange.start()
            self._started = True
        return await self.exchange.symbol_rules()

    async def close(self) -> None:
        if self._started:
            await self.exchange.close()


def symbols_op(rules: dict[str, SymbolRules]) -> HashSet:
    """The write that replaces ``quantum:exchange:symbols`` with ``rules``."""
    return HashSet(keys.exchange_symbols(), rules_mapping(rules), replace=True)


async def refresh_symbols(redis: Redis, source: SymbolRulesSource) -> int:
    """Publish the exchange's rules; how many symbols they list."""
    rules = await source.rules()
    if not rules:
        raise ValueError("the exchange listed no symbols; the previous rules stay")
    await commit(redis, [symbols_op(rules)], service=Service.MARKETDATA)
    return len(rules)
