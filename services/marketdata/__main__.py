"""``python -m services.marketdata``: prices, klines and market state for the fleet (DESIGN §3)."""

from __future__ import annotations

import time

import structlog

from common.service import ServiceContext, run
from common.streams import Service
from services.marketdata.publisher import Publisher
from services.marketdata.sources import build_feed
from services.marketdata.symbols import SymbolRulesSource, refresh_symbols

log = structlog.get_logger()

#: how often the published counts are logged
STATS_INTERVAL_S = 60.0


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    md = settings.marketdata
    publisher = Publisher(Service.MARKETDATA, kline_update_ms=md.kline_update_ms)
    feed = await build_feed(ctx.redis, settings)
    rules = SymbolRulesSource(ctx.redis, settings)
    ctx.on_close(rules.close)
    try:
        count = await refresh_symbols(ctx.redis, rules)
        log.info("exchange_symbols_refreshed", symbols=count, exchange=settings.exchange)
    except Exception as e:  # the refresh loop tries again; market data must not wait for it
        log.warning("exchange_symbols_refresh_failed", error=repr(e))
    log.info("marketdata_source", source=feed.name, symbols=list(settings.symbols),
             kline_interval=md.kline_interval)

    async def market(ctx: ServiceContext) -> None:
        logged_at = time.monotonic()
        async for batch in feed.batches(ctx.stop):
            ctx.beat("market")
            await publisher.publish(ctx.redis, batch)
            if time.monotonic() - logged_at >= STATS_INTERVAL_S:
                logged_at = time.monotonic()
                log.info("market_published", ticks=publisher.ticks, closed_klines=publisher.closed_klines,
                         open_klines=publisher.open_klines, states=publisher.states_published,
                         failed_rounds=publisher.failed_rounds, backlog=publisher.backlog)

    async def symbols(ctx: ServiceContext) -> None:
        while True:
            if await ctx.wait("symbols", md.symbols_refresh_s):
                return
            try:
                await refresh_symbols(ctx.redis, rules)
            except Exception as e:  # a failed refresh keeps the previous rules
                log.warning("exchange_symbols_refresh_failed", error=repr(e))

    ctx.loop("market", market)
    ctx.loop("symbols", symbols)


def main() -> None:
    run(Service.MARKETDATA, setup)


if __name__ == "__main__":
    main()
