"""Startup and periodic checks: settle every SUBMITTING record, and compare the position hashes with the
exchange. A difference is published (reconcile.events, alerts) and blocks entries for that symbol until
the two agree again; exits still run."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal

import structlog
from redis.asyncio import Redis

from common import keys, streams
from common.bus import Effects, commit
from common.contracts import AlertEvent, ReconcileEvent, ReconcileKind, new_trace_id
from common.exchange.base import Exchange
from common.positions import all_positions, drift_kind, read_position
from common.streams import Service, Stream
from services.apply_layer.executor import Executor
from services.apply_layer.metrics import METRICS
from services.apply_layer.records import submitting_records

log = structlog.get_logger()


async def settle_submitting(redis: Redis, executor: Executor) -> int:
    """Every plan left SUBMITTING by a crash is settled against the exchange before new plans are taken;
    its stream entry is acknowledged in the same commit."""
    spec = streams.get(Stream.APPLY_PLAN)
    settled = 0
    for record in await submitting_records(redis):
        if record.plan is None:
            continue
        async with executor.locks[record.plan.symbol]:
            if record.entry_id and not await _still_pending(redis, spec.key, record.entry_id):
                # dead-lettered after its send failed: what the exchange did is recorded, nothing is sent
                effects = await executor.abandon(record.plan, "dead_lettered")
            else:
                effects = await executor.execute(record.plan, record.entry_id)
            ack = (spec.key, Service.APPLY_LAYER, record.entry_id) if record.entry_id else None
            await commit(redis, effects.ops, service=Service.APPLY_LAYER, ack=ack)
        settled += 1
        log.warning("submitting_plan_settled_at_start", plan_id=record.plan_id, symbol=record.plan.symbol)
    return settled


async def reconcile(redis: Redis, exchange: Exchange, locks: defaultdict[str, asyncio.Lock]) -> list[ReconcileEvent]:
    """Compare every position hash with the exchange; publish and block on drift, unblock on agreement."""
    theirs = await exchange.positions()
    ours = await all_positions(redis)
    blocked = {s async for k in redis.scan_iter(match=keys.apply_blocked("*")) if (s := keys.symbol_of_blocked(str(k)))}
    events: list[ReconcileEvent] = []
    for symbol in sorted(set(theirs) | set(ours) | blocked):
        async with locks[symbol]:
            our_qty = their_qty = Decimal(0)
            kind = drift_kind(ours[symbol].signed_qty if symbol in ours else Decimal(0),
                              theirs[symbol].position_amt if symbol in theirs else Decimal(0))
            if kind is not None or symbol in blocked:
                # both sides read again under the lock: an order in flight when the first look was taken
                # has been committed by now (a plan holds the lock from before its send to its commit)
                position = await read_position(redis, symbol)
                exchange_now = (await exchange.positions()).get(symbol)
                our_qty = position.signed_qty if position is not None else Decimal(0)
                their_qty = exchange_now.position_amt if exchange_now is not None else Decimal(0)
                kind = drift_kind(our_qty, their_qty)
            effects = Effects()
            if kind is None and symbol not in blocked:
                continue
            event = ReconcileEvent(source=Service.APPLY_LAYER, trace_id=new_trace_id(), symbol=symbol,
                                   kind=kind or ReconcileKind.RESOLVED, redis_qty=our_qty, exchange_qty=their_qty,
                                   action_taken="entries_blocked" if kind else "entries_unblocked")
            effects.publish(Stream.RECONCILE_EVENTS, event)
            if kind is None:
                effects.delete(keys.apply_blocked(symbol))
            else:
                effects.set(keys.apply_blocked(symbol), kind.value)
                if symbol not in blocked:
                    effects.publish(Stream.ALERTS, AlertEvent(
                        source=Service.APPLY_LAYER, trace_id=event.trace_id, kind="RECONCILE_DRIFT",
                        reason=kind.value, details={"symbol": symbol, "redis_qty": str(our_qty),
                                                    "exchange_qty": str(their_qty)}))
            if kind is not None and symbol in blocked:
                continue  # still drifting: reported when it started, not every interval
            await commit(redis, effects.ops, service=Service.APPLY_LAYER)
            log.warning("reconcile_drift" if kind else "reconcile_resolved", kind=event.kind.value, symbol=symbol,
                        redis_qty=str(our_qty), exchange_qty=str(their_qty))
            events.append(event)
    still = [s async for k in redis.scan_iter(match=keys.apply_blocked("*")) if (s := keys.symbol_of_blocked(str(k)))]
    METRICS.drift.labels(Service.APPLY_LAYER).set(len(still))
    METRICS.open_positions.set(len(ours))
    return events


async def _still_pending(redis: Redis, key: str, entry_id: str) -> bool:
    rows = await redis.xpending_range(key, Service.APPLY_LAYER, min=entry_id, max=entry_id, count=1)
    return bool(rows)
