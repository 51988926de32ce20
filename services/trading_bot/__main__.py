"""``python -m services.trading_bot``: a signal on every closed kline of ``market.klines``, intents to
``trade.intent``; ``/health``, ``/metrics``, ``GET /signals``, ``POST /intents`` on 127.0.0.1:8006."""

from __future__ import annotations

import structlog

from common.service import ServiceContext, run
from common.streams import Service
from services.trading_bot.ai_client import AiClient
from services.trading_bot.api import build_app
from services.trading_bot.bot import Bot
from services.trading_bot.window import DecisionPoints, read_after, seed_windows

log = structlog.get_logger()


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    ai = AiClient(settings.http.ai_engine_url, settings.signal.ai_timeout_ms)
    ctx.on_close(ai.aclose)
    bot = Bot(ctx.redis, settings, ai, ctx.stop)
    last_id = await seed_windows(ctx.redis, bot.windows, settings.signal.seed_max_entries)
    points = DecisionPoints()

    async def klines() -> None:
        nonlocal last_id
        entries = await read_after(ctx.redis, last_id, settings.signal.kline_read_count,
                                   settings.signal.kline_block_ms)
        decide, held = points.of(entries, len(entries) >= settings.signal.kline_read_count)
        for entry_id, fields in held:  # the newest of their symbol in reads that came back full
            await bot.on_entry(entry_id, fields, held=True)
            ctx.beat("klines")
        for entry_id, fields in entries:
            await bot.on_entry(entry_id, fields, decide=entry_id in decide)
            last_id = entry_id
            ctx.beat("klines")

    ctx.repeat("klines", klines)
    ctx.serve_http(build_app(bot, settings, ctx.health))


def main() -> None:
    run(Service.TRADING_BOT, setup)


if __name__ == "__main__":
    main()
