"""``python -m services.exitbrain``: the one authority on exits.

Every open position is evaluated on each fresh ``market.tick`` of its symbol (plain XREAD from the
latest entry: the newest mark matters, not every mark) and at least every ``exit.evaluate_interval_s``
(at the price hash's mark, which also picks up market-state changes); ``harvest.proposal`` is consumed
through the group ``exitbrain``.
"""

from __future__ import annotations

import structlog

from common import keys
from common.bus.latest import follow_marks
from common.service import ServiceContext, run
from common.store import symbols_with_position
from common.streams import Service, Stream
from services.exitbrain.brain import ExitBrain

log = structlog.get_logger()

#: market.tick entries one XREAD returns at most (only the newest per symbol is used)
TICK_BATCH = 1000


async def setup(ctx: ServiceContext) -> None:
    brain = ExitBrain(ctx.redis, ctx.settings)
    async for key in ctx.redis.scan_iter(match=keys.exit_state("*"), count=500):
        if (symbol := keys.tail(str(key), keys.exit_state)) is not None:
            brain.tracked.add(symbol)
    ctx.consume(Stream.HARVEST_PROPOSAL, brain.handle_proposal, lane=lambda m: getattr(m, "symbol", ""),
                guard=brain.guard)

    async def wanted(symbols: list[str]) -> set[str]:  # open positions, and exit states to drop
        return await symbols_with_position(ctx.redis, symbols) | (brain.tracked & set(symbols))

    follow_marks(ctx, brain.evaluate_symbol, brain.scan, every_s=ctx.settings.exit.evaluate_interval_s,
                 batch=TICK_BATCH, wanted=wanted)


def main() -> None:
    run(Service.EXITBRAIN, setup)


if __name__ == "__main__":
    main()
