"""Plans left SUBMITTING: settled against the exchange at start, and by the settling round while the
service runs (DESIGN §12: never unsettled longer than ``apply.submitting_max_age_s``).

A SUBMITTING record means the order may have been sent and its outcome was not committed: a crash
between the send and the commit, or an outcome that could not be read (the plan was retried until it was
dead-lettered). Settling asks the exchange for ``qt-<plan_id>``: an order found is booked with its fills
and protected; none found ends the plan as ERROR (when its stream entry is gone) or, at start, lets the
plan be executed (its entry is still pending). The stream entry, when still pending, is acknowledged in
the same commit, so it gets no second result.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from redis.asyncio import Redis

from common import streams
from common.bus import Effects, commit
from common.contracts import PlanReason, now_ms
from common.exchange.base import client_order_id
from common.exchange.errors import ExchangeError
from common.streams import Service, Stream
from services.apply_layer.executor import Executor
from services.apply_layer.lease import SEND_MARGIN
from services.apply_layer.records import PlanRecord, PlanState, load_record, submitting_records

log = structlog.get_logger()


async def settle_round(executor: Executor) -> None:
    """The periodic round: missed exchange fills booked, and the plans of our own orders found among them
    settled at once (booked with their fills and protected); then every SUBMITTING record older than the
    bound; then the protective orders: every position's checked, and ours resting with no position cancelled."""
    await catch_up(executor)
    await settle_submitting(executor, periodic=True)
    await executor.router.audit_protection()
    await executor.router.sweep_orphans()


async def catch_up(executor: Executor) -> int:
    """The exchange's fills we missed, booked; a plan of ours whose fills are there but still SUBMITTING is
    settled now (whatever its age: the exchange has answered for it). Returns the fills booked."""
    caught = await executor.router.catch_up()
    for plan_id in caught.own_plans:
        record = await load_record(executor.redis, plan_id)
        if record is not None and record.state is PlanState.SUBMITTING and record.plan is not None:
            try:
                await settle_record(executor, record, periodic=True)
            except ExchangeError as e:
                log.warning("submitting_plan_not_settled", plan_id=plan_id, error=str(e) or type(e).__name__)
    return caught.booked


async def wait_out_predecessor(executor: Executor, taken_at: float, lease_ttl_ms: int, send_timeout_s: float) -> float:
    """After taking over a lapsed lease: an instance cut off from Redis (not dead) may still have had an
    order on its way — it sends only while its lease was renewed within ``SEND_MARGIN`` of the TTL, and a
    send lasts up to ``send_timeout_s``. A SUBMITTING record that recent is settled only once such a send
    must have landed, so that "not found" cannot mean "not arrived yet". Returns the seconds waited."""
    recent_ms = lease_ttl_ms + send_timeout_s * 1000
    now = now_ms()
    if not [r for r in await submitting_records(executor.redis) if now - r.updated_at < recent_ms]:
        return 0.0
    delay = taken_at + send_timeout_s - (1 - SEND_MARGIN) * lease_ttl_ms / 1000 - time.monotonic()
    if delay > 0:
        log.warning("waiting_out_predecessor", seconds=round(delay, 3))
        await asyncio.sleep(delay)
    return max(delay, 0.0)


async def settle_submitting(executor: Executor, *, periodic: bool) -> int:
    """Settle every SUBMITTING record (at start), or those older than the bound (``periodic``); one that
    the exchange cannot answer for now is left for the next round. Returns how many were settled."""
    older = executor.apply.submitting_max_age_ms if periodic else None
    settled = 0
    for record in await submitting_records(executor.redis, older_than_ms=older):
        if record.plan is None:
            continue
        try:
            settled += await settle_record(executor, record, periodic=periodic)
        except ExchangeError as e:
            log.warning("submitting_plan_not_settled", plan_id=record.plan_id, error=str(e) or type(e).__name__)
    return settled


async def settle_record(executor: Executor, record: PlanRecord, *, periodic: bool) -> int:
    """Settle one record under its plan's guard. 1 when it was settled."""
    plan = record.plan
    assert plan is not None
    async with executor.guard(plan):
        return await _settle_locked(executor, record, periodic=periodic)


async def _settle_locked(executor: Executor, record: PlanRecord, *, periodic: bool) -> int:
    plan = record.plan
    assert plan is not None
    fresh = await load_record(executor.redis, plan.plan_id)
    if fresh is None or fresh.state is not PlanState.SUBMITTING:
        return 0  # settled meanwhile (the consumer had it in hand)
    spec = streams.get(Stream.APPLY_PLAN)
    pending = bool(record.entry_id) and await _still_pending(executor.redis, spec.key, record.entry_id)
    gone = bool(record.entry_id) and not pending  # dead-lettered (or acknowledged) after its send failed
    if not gone and periodic:
        # its entry is still being retried by the consumer: the round settles it only when the exchange
        # has the order (booked now); "not placed" is left to the consumer, which sends it
        try:
            await executor.exchange.get_order(plan.symbol, client_order_id(plan.plan_id))
        except ExchangeError:
            return 0
    effects: Effects
    if gone:
        # what the exchange did is recorded; nothing is sent
        effects = await executor.abandon(plan, PlanReason.DEAD_LETTERED)
    else:
        effects = await executor.execute(plan, record.entry_id)
    ack = (spec.key, Service.APPLY_LAYER, record.entry_id) if pending else None
    await commit(executor.redis, effects.ops, service=Service.APPLY_LAYER, ack=ack, fence=executor.fence)
    log.warning("submitting_plan_settled", plan_id=record.plan_id, symbol=plan.symbol, pending=pending,
                periodic=periodic)
    return 1


async def _still_pending(redis: Redis, key: str, entry_id: str) -> bool:
    rows = await redis.xpending_range(key, Service.APPLY_LAYER, min=entry_id, max=entry_id, count=1)
    return bool(rows)

