"""``python -m services.harvest_proposal``: proposes harvests when a position reaches a ladder stage.

Reads the positions and the latest ``market.tick`` entries (plain XREAD, newest mark per symbol), and
every ``exit.evaluate_interval_s`` the price hashes; publishes ``harvest.proposal``. It writes no key:
its ladders live in memory (exitbrain dedupes what a restart proposes again).
"""

from __future__ import annotations

from decimal import Decimal

import structlog
from redis.asyncio import Redis

from common.bus import publish
from common.bus.latest import follow_marks
from common.contracts import now_ms
from common.exit_levels import LadderParams
from common.logging import bound
from common.service import ServiceContext, run
from common.store import all_positions, read_position, read_price, symbols_with_position
from common.streams import Service, Stream
from services.harvest_proposal.propose import Ladder, propose

log = structlog.get_logger()

TICK_BATCH = 1000


class Proposer:
    """The in-memory ladders of the open positions and the publication of their proposals."""

    def __init__(self, redis: Redis, params: LadderParams) -> None:
        self.redis = redis
        self.params = params
        self.ladders: dict[str, Ladder] = {}

    async def scan(self) -> None:
        positions = await all_positions(self.redis)
        for symbol in list(self.ladders):
            if symbol not in positions:
                del self.ladders[symbol]
        for symbol in positions:
            await self.evaluate(symbol)

    async def evaluate(self, symbol: str, mark: Decimal | None = None) -> None:
        position = await read_position(self.redis, symbol)
        if position is None:
            self.ladders.pop(symbol, None)
            return
        if mark is None:
            price = await read_price(self.redis, symbol)
            if price is None:
                return
            mark = price.mark_price
        ladder, proposals = propose(position, self.ladders.get(symbol), mark, now_ms(), self.params)
        if proposals:
            await publish(self.redis, Service.HARVEST_PROPOSAL, *((Stream.HARVEST_PROPOSAL, p) for p in proposals))
            for p in proposals:
                with bound(trace_id=p.trace_id, symbol=symbol):
                    log.info("harvest_proposed", position_plan_id=p.position_plan_id, stage=p.stage.value,
                             trigger_price=str(p.trigger_price), mark_price=str(mark), close_pct=p.close_pct,
                             new_stop_loss=str(p.new_stop_loss), r_multiple=round(p.r_multiple, 4))
        self.ladders[symbol] = ladder


async def setup(ctx: ServiceContext) -> None:
    proposer = Proposer(ctx.redis, LadderParams.from_settings(ctx.settings))

    async def wanted(symbols: list[str]) -> set[str]:  # open positions, and ladders to drop
        return await symbols_with_position(ctx.redis, symbols) | (proposer.ladders.keys() & set(symbols))

    follow_marks(ctx, proposer.evaluate, proposer.scan, every_s=ctx.settings.exit.evaluate_interval_s,
                 batch=TICK_BATCH, wanted=wanted)


def main() -> None:
    run(Service.HARVEST_PROPOSAL, setup)


if __name__ == "__main__":
    main()
