"""``python -m services.apply_layer``: the one executor."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from common.backoff import Backoff
from common.bus.consumer import DeadCheck
from common.contracts import ApplyPlan, Message
from common.exchange.factory import build_exchange
from common.exchange.placement import RetryPolicy
from common.service import OUTAGES, ServiceContext, run
from common.streams import Service, Stream
from services.apply_layer.executor import Executor
from services.apply_layer.lease import Lease, LeaseLost
from services.apply_layer.settle import catch_up, settle_round, settle_submitting, wait_out_predecessor
from services.apply_layer.throttle import OrderThrottle, ThrottledExchange

log = structlog.get_logger()


def lane(message: Message) -> str:
    return message.symbol if isinstance(message, ApplyPlan) else ""


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    lease = Lease(ctx.redis, ctx.consumer_name, settings.apply.lease_ttl_ms,
                  Backoff(settings.bus.reconnect_initial_ms / 1000, settings.bus.reconnect_max_ms / 1000))
    if not await lease.acquire(ctx.stop, poll_s=settings.apply.lease_ttl_ms / 3000):
        return  # stopped while standby
    ctx.on_close(lease.release)  # from here on the lease is renewed by its own task
    ctx.loop("lease", lambda ctx: lease.hold(ctx.stop, lambda: ctx.beat("lease")))
    exchange = ThrottledExchange(build_exchange(ctx.redis, settings),
                                 OrderThrottle(settings.apply.orders_per_s, settings.apply.order_burst),
                                 before_send=lease.check)
    executor = Executor(ctx.redis, exchange, settings, RetryPolicy.from_settings(settings.binance),
                        fence=lease.fence)

    send_timeout_s = settings.binance.timeout_s if settings.exchange != "paper" else settings.paper.latency_ms / 1000

    async def prepare() -> None:
        # before any new plan: plans a crash left SUBMITTING first (a protective order of theirs may have
        # filled since), then the fills we missed
        await exchange.start()
        if not lease.from_dead_predecessor:
            await wait_out_predecessor(executor, lease.acquired_at, lease.ttl_ms, send_timeout_s)
        settled = await settle_submitting(executor, periodic=False)
        caught_up = await catch_up(executor)
        log.info("apply_layer_started", exchange=exchange.name, settled=settled, fills_caught_up=caught_up)

    ctx.on_close(exchange.close)
    if not await ctx.until_done("start", prepare):
        return
    # every other consumer of the group is dead or a standby holding nothing: this one holds the lease
    ctx.consume(Stream.APPLY_PLAN, executor.handle, lane=lane, guard=executor.guard,
                dead=_others(ctx.consumer_name), fence=lease.fence, transient=executor.TRANSIENT,
                on_dead_letter=executor.dead_lettered)

    async def events_loop(ctx: ServiceContext) -> None:
        async def pump() -> None:
            async for event in exchange.events():
                await executor.router.accept(event)

        pumper = asyncio.create_task(pump(), name="exchange-events")
        try:
            while not ctx.stop.is_set():
                ctx.beat("exchange_events")
                if pumper.done():
                    pumper.result()  # an ended or failed event stream stops the service loudly
                    raise RuntimeError("the exchange event stream ended")
                await executor.router.book_waiting(timeout_s=1.0)
        finally:
            pumper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumper

    ctx.repeat("exchange_events", lambda: events_loop(ctx))
    # a round that would send with a lease renewed late (Redis restarting) is skipped like an outage; a lease
    # truly lost stops the service through its renewal task
    ctx.every("settle", settings.apply.settle_interval_s, lambda: settle_round(executor),
              passing=(*OUTAGES, LeaseLost))


def _others(me: str) -> DeadCheck:
    """The lease holder knows every other consumer of its group is dead (or a standby that holds nothing)."""

    async def dead(name: str) -> bool:
        return name != me

    return dead


def main() -> None:
    run(Service.APPLY_LAYER, setup)


if __name__ == "__main__":
    main()
