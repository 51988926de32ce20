"""One reconciliation pass: read the position hashes and the exchange, confirm a new drift by looking
again after ``monitor.confirm_delay_s``, publish what started or ended, keep the result for
``GET /reconcile``. The decisions are :mod:`services.position_monitor.reconcile`'s."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal

import structlog
from redis.asyncio import Redis

from common import keys
from common.backoff import pause
from common.bus import Effects, commit
from common.config import MonitorSettings
from common.contracts import (
    Action,
    AlertEvent,
    ApplyPlan,
    ExitReason,
    ReconcileEvent,
    ReconcileKind,
    new_trace_id,
    now_ms,
)
from common.exchange.base import Exchange
from common.ids import hex16
from common.logging import bound
from common.positions import PositionRecord
from common.redis_client import hgetall
from common.store import all_positions
from common.streams import Service, Stream
from services.position_monitor.metrics import METRICS
from services.position_monitor.reconcile import Drift, changes, confirmed, find_drift, operator_hint, resolve

log = structlog.get_logger()


@dataclass(frozen=True)
class Published:
    """A drift event of the pass, with what was done."""

    drift: Drift
    action_taken: str


@dataclass(frozen=True)
class ReconcileReport:
    """The result of one pass."""

    at: int
    resolution: str
    redis_positions: int
    exchange_positions: int
    #: every drift open after the pass (reported when it started)
    drifts: tuple[Drift, ...]
    #: what this pass published: drifts that started and RESOLVED ones
    events: tuple[Published, ...] = field(default_factory=tuple)


class Reconciler:
    def __init__(self, redis: Redis, exchange: Exchange, settings: MonitorSettings) -> None:
        self.redis = redis
        self.exchange = exchange
        self.settings = settings
        #: open drift by symbol (in memory: a restart reports a drift still open once more)
        self.known: dict[str, Drift] = {}
        self.last: ReconcileReport | None = None

    async def _read(self) -> tuple[dict[str, PositionRecord], dict[str, Decimal], dict[str, Decimal]]:
        # the hashes first: an order in flight shows on the exchange before apply_layer commits the hash
        records = await all_positions(self.redis)
        theirs = {s: p.position_amt for s, p in (await self.exchange.positions()).items() if p.position_amt != 0}
        return records, {s: p.signed_qty for s, p in records.items()}, theirs

    async def load_known(self) -> None:
        """The drifts still open from before a restart (their keys), so that one resolved meanwhile is
        reported RESOLVED and its key deleted — never left blocking entries."""
        async for key in self.redis.scan_iter(match=keys.reconcile_drift("*"), count=500):
            symbol = keys.tail(str(key), keys.reconcile_drift)
            fields = await hgetall(self.redis, str(key))
            try:
                self.known[symbol or ""] = Drift(symbol or "", ReconcileKind(fields["kind"]),
                                                 Decimal(fields["redis_qty"]), Decimal(fields["exchange_qty"]))
            except (KeyError, ValueError, ArithmeticError):
                log.warning("drift_key_unreadable", key=str(key))

    async def run_once(self, stop: asyncio.Event | None = None) -> ReconcileReport:
        records, ours, theirs = await self._read()
        first = find_drift(ours, theirs)
        current = first
        if any(s not in self.known or self.known[s].kind is not d.kind for s, d in first.items()):
            if self.settings.confirm_delay_s > 0:
                await pause(stop, self.settings.confirm_delay_s)
            records, ours, theirs = await self._read()
            current = confirmed(first, find_drift(ours, theirs), self.known)
        started, ended = changes(self.known, current, ours)
        events: list[Published] = []
        effects = Effects()
        for drift in started + ended:
            events.append(self._publish(effects, drift))
        if effects.ops:
            await commit(self.redis, effects.ops, service=Service.POSITION_MONITOR)
        self.known = dict(current)
        METRICS.drift.set(len(self.known))
        self.last = ReconcileReport(now_ms(), self.settings.resolution, len(records), len(theirs),
                                    tuple(current.values()), tuple(events))
        return self.last

    def _publish(self, effects: Effects, drift: Drift) -> Published:
        trace_id = new_trace_id()
        remedy = resolve(drift, self.settings.resolution)
        effects.publish(Stream.RECONCILE_EVENTS, ReconcileEvent(
            source=Service.POSITION_MONITOR, trace_id=trace_id, symbol=drift.symbol, kind=drift.kind,
            redis_qty=drift.redis_qty, exchange_qty=drift.exchange_qty, action_taken=remedy.action_taken))
        resolved = drift.kind.value == "RESOLVED"
        if resolved:
            effects.delete(keys.reconcile_drift(drift.symbol))
        else:  # entries on the symbol are blocked while this key exists (apply_layer reads it)
            effects.hset(keys.reconcile_drift(drift.symbol), {
                "kind": drift.kind.value, "redis_qty": str(drift.redis_qty), "exchange_qty": str(drift.exchange_qty),
                "since": str(now_ms())})
        effects.publish(Stream.ALERTS, AlertEvent(
            source=Service.POSITION_MONITOR, trace_id=trace_id,
            kind="RECONCILE_RESOLVED" if resolved else "RECONCILE_DRIFT",
            reason=drift.kind.value if resolved else f"{drift.kind.value}: {operator_hint(remedy.action_taken)}",
            details={"symbol": drift.symbol, "redis_qty": str(drift.redis_qty),
                     "exchange_qty": str(drift.exchange_qty), "action_taken": remedy.action_taken,
                     "resolution": self.settings.resolution}))
        if remedy.action_taken == "adopt_exchange_planned":
            effects.publish(Stream.APPLY_PLAN, adopt_plan(drift.symbol, trace_id, now_ms()))
        METRICS.drift_events.labels(drift.kind.value).inc()
        with bound(symbol=drift.symbol, trace_id=trace_id):
            log.warning("reconcile_resolved" if resolved else "reconcile_drift", kind=drift.kind.value,
                        redis_qty=str(drift.redis_qty), exchange_qty=str(drift.exchange_qty),
                        action_taken=remedy.action_taken)
        return Published(drift, remedy.action_taken)


def adopt_plan(symbol: str, trace_id: str, at_ms: int) -> ApplyPlan:
    """The plan that makes apply_layer adopt the exchange's position of ``symbol``."""
    plan_id = hex16(symbol, "adopt", at_ms)
    return ApplyPlan(source=Service.POSITION_MONITOR, trace_id=trace_id, plan_id=plan_id, symbol=symbol,
                     action=Action.ADOPT_EXCHANGE, reason=ExitReason.RECONCILE)
