"""``python -m services.apply_layer``: the one executor."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from common.backoff import Backoff, pause
from common.contracts import ApplyPlan, Message
from common.exchange.base import ExchangeEvent
from common.exchange.factory import build_exchange
from common.exchange.placement import RetryPolicy
from common.redis_client import REDIS_DOWN
from common.service import OUTAGES, ServiceContext, run
from common.streams import Service, Stream
from services.apply_layer.executor import Executor
from services.apply_layer.fills import FillRouter
from services.apply_layer.lease import Lease, LeaseLost
from services.apply_layer.reconcile import reconcile, settle_submitting
from services.apply_layer.throttle import OrderThrottle, ThrottledExchange

log = structlog.get_logger()



def lane(message: Message) -> str:
    return message.symbol if isinstance(message, ApplyPlan) else ""


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    exchange = ThrottledExchange(build_exchange(ctx.redis, settings),
                                 OrderThrottle(settings.apply.orders_per_s, settings.apply.order_burst))
    lease = Lease(ctx.redis, ctx.consumer_name, settings.apply.lease_ttl_ms)
    if not await lease.acquire(ctx.stop, poll_s=settings.apply.lease_ttl_ms / 3000):
        return  # stopped while standby
    ctx.on_close(lease.release)
    executor = Executor(ctx.redis, exchange, settings, RetryPolicy.from_settings(settings.binance))
    router = FillRouter(ctx.redis, exchange, settings, executor.locks)

    async def prepare() -> tuple[int, int]:
        # before any new plan: plans a crash left SUBMITTING first (a protective order of theirs may have
        # filled since), then the fills we missed, then the drift from the exchange
        await exchange.start()
        settled = await settle_submitting(ctx.redis, executor)
        await router.catch_up()
        return settled, len(await reconcile(ctx.redis, exchange, executor.locks))

    backoff = Backoff(settings.bus.reconnect_initial_ms / 1000, settings.bus.reconnect_max_ms / 1000)
    attempt = 0
    while True:  # an exchange or Redis outage at start is waited out, not a crash loop
        try:
            settled, drift = await prepare()
            break
        except OUTAGES as e:
            delay = backoff.delay_s(attempt)
            attempt += 1
            log.warning("start_waiting", error=str(e) or type(e).__name__, retry_in_s=round(delay, 3))
            if await pause(ctx.stop, delay):
                return
    ctx.on_close(exchange.close)
    log.info("apply_layer_started", exchange=exchange.name, settled=settled, drift=drift)
    ctx.consume(Stream.APPLY_PLAN, executor.handle, lane=lane, guard=executor.guard)

    async def events_loop(ctx: ServiceContext) -> None:
        queue: asyncio.Queue[ExchangeEvent] = asyncio.Queue(maxsize=1000)

        async def pump() -> None:
            async for event in exchange.events():
                await queue.put(event)

        pumper = asyncio.create_task(pump(), name="exchange-events")
        try:
            while not ctx.stop.is_set():
                ctx.beat("exchange_events")
                if pumper.done():
                    pumper.result()  # an ended or failed event stream stops the service loudly
                    raise RuntimeError("the exchange event stream ended")
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    continue
                while True:
                    try:
                        await router.on_event(event)
                        break
                    except REDIS_DOWN as e:  # the event is not lost: retry until Redis is back
                        log.warning("redis_unavailable", error=str(e))
                        await asyncio.sleep(0.5)
        finally:
            pumper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumper

    async def reconcile_round() -> None:
        await router.catch_up()
        await reconcile(ctx.redis, exchange, executor.locks)

    async def renew_lease() -> None:
        try:
            await lease.renew()
        except REDIS_DOWN as e:
            if lease.expired():  # another instance may be executing by now: stop (systemd restarts us)
                raise LeaseLost(f"the lease could not be renewed within its TTL: {e}") from e
            log.warning("lease_renewal_failed", error=str(e) or type(e).__name__)

    ctx.every("lease", settings.apply.lease_ttl_ms / 3000, renew_lease, passing=())
    ctx.loop("exchange_events", events_loop)
    ctx.every("reconcile", settings.apply.reconcile_interval_s, reconcile_round, passing=OUTAGES)


def main() -> None:
    run(Service.APPLY_LAYER, setup)


if __name__ == "__main__":
    main()
