"""Build the exchange the settings name: the paper exchange (default) or Binance USD-M futures."""

from __future__ import annotations

from redis.asyncio import Redis

from common.config import Settings
from common.exchange.base import Exchange


def build_exchange(redis: Redis, settings: Settings) -> Exchange:
    if settings.exchange == "paper":
        from common.exchange.paper import PaperExchange

        return PaperExchange.from_settings(redis, settings)
    from common.exchange.binance import BinanceExchange

    return BinanceExchange.from_settings(settings)
