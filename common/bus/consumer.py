"""One consumer of one stream through one group — the runtime every grouped handler runs in.

Order of reading (DESIGN §5): the consumer's own pending entries first (id ``0``: a restart reuses its
name and finishes what it held), then entries idle past ``claim_idle_ms`` from any consumer (XAUTOCLAIM),
then new entries (``>``). An entry delivered more than ``max_deliveries`` times, or failing its contract,
goes to ``<stream>.dlq`` and is acknowledged. A handled entry's effects and its XACK are one MULTI/EXEC.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.backoff import Backoff, pause
from common.bus.effects import Effects, Publish, commit
from common.bus.inspect import group_lag
from common.bus.metrics import BusMetrics, default_metrics
from common.config import BusSettings
from common.contracts.base import ContractError, Message, decode, new_trace_id
from common.contracts.messages import DeadLetter
from common.redis_client import REDIS_DOWN
from common.streams import StreamSpec

log = structlog.get_logger()

#: errors with which a reachable Redis refuses work for a while (failover, full disk, memory, loading)
REDIS_REFUSING = ("READONLY", "MISCONF", "OOM", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def consumer_name(service: str, host: str, instance: str = "") -> str:
    """The stable consumer name ``<service>@<host>[-<n>]``: a restart reuses it."""
    return f"{service}@{host}" + (f"-{instance}" if instance else "")


@dataclass(frozen=True)
class Delivery:
    """One entry handed to a handler."""

    stream: StreamSpec
    entry_id: str
    message: Message
    deliveries: int


Handler = Callable[[Delivery], Awaitable[Effects]]
LaneKey = Callable[[Message], str]
Guard = Callable[[Message], AbstractAsyncContextManager[object]]


async def ensure_group(redis: Redis, key: str, group: str) -> bool:
    """Create ``group`` on ``key`` at id 0 with MKSTREAM; False when it existed already."""
    try:
        await redis.xgroup_create(key, group, id="0", mkstream=True)
        return True
    except ResponseError as e:
        if "BUSYGROUP" in str(e):
            return False
        raise


class Consumer:
    """Runs ``handler`` over ``spec`` as ``consumer`` of ``group`` until ``stop`` is set.

    ``lane`` (optional) maps a message to a lane key (e.g. its symbol): entries of one lane are handled
    in order, different lanes concurrently. ``guard`` (optional) gives an async context held around the
    handler *and* its commit (e.g. a per-symbol lock shared with another loop of the service).
    """

    def __init__(
        self,
        redis: Redis,
        spec: StreamSpec,
        group: str,
        consumer: str,
        handler: Handler,
        settings: BusSettings,
        *,
        service: str | None = None,
        lane: LaneKey | None = None,
        guard: Guard | None = None,
        metrics: BusMetrics | None = None,
    ) -> None:
        if group not in spec.groups:
            raise ValueError(f"{group} is not a registered group of {spec.name}")
        self.redis = redis
        self.spec = spec
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.settings = settings
        self.service = service or group
        self.lane = lane
        self.guard = guard
        self.metrics = metrics or default_metrics()
        self.last_progress = time.monotonic()
        self._backoff = Backoff(settings.reconnect_initial_ms / 1000, settings.reconnect_max_ms / 1000)
        #: the wait before a failed entry is tried again (it grows with each failure)
        self._retry = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._labels = (spec.name, group)
        #: the last handler error per pending entry, for the dead letter's reason (bounded)
        self._last_errors: dict[str, str] = {}
        #: deliveries this process made of each failing entry (a floor under XPENDING's count, which a
        #: re-read of history does not raise on every server)
        self._attempts: dict[str, int] = {}

    # --- the loop ---------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the group (at 0, MKSTREAM) if it is missing."""
        if await ensure_group(self.redis, self.spec.key, self.group):
            log.info("group_created", stream=self.spec.name, group=self.group)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and acknowledged first.

        Order is kept: when a handler fails (or Redis fails mid-batch) the rest of that entry's lane is
        left pending, nothing new is read, and after a backoff the consumer re-reads its own pending
        entries first — the failed one again (its delivery count grows until it is dead-lettered), then
        those behind it, in stream order."""
        attempt = 0
        failures = 0
        drained_own = False
        while not stop.is_set():
            self.last_progress = time.monotonic()
            try:
                ok = (await self._drain_own_pending(stop, head_first=failures > 0) if not drained_own
                      else await self._step(stop))
                drained_own = ok
                attempt = 0
                if ok:
                    failures = 0
                    continue
                delay = self._retry.delay_s(failures)
                failures += 1
                await pause(stop, delay)
            except REDIS_DOWN as e:
                drained_own = False  # entries may be held: re-read them before anything new
                delay = self._backoff.delay_s(attempt)
                attempt += 1
                self.metrics.redis_reconnects.labels(self.spec.name).inc()
                log.warning("redis_unavailable", stream=self.spec.name, group=self.group,
                            error=str(e) or type(e).__name__, retry_in_s=round(delay, 3))
                await pause(stop, delay)
            except ResponseError as e:
                drained_own = False
                if "NOGROUP" in str(e):
                    log.warning("group_missing", stream=self.spec.name, group=self.group)
                    continue
                if not str(e).startswith(REDIS_REFUSING):
                    raise
                # a replica after failover, a full disk or memory: wait for the server, do not crash
                delay = self._backoff.delay_s(attempt)
                attempt += 1
                log.warning("redis_refusing", stream=self.spec.name, group=self.group, error=str(e),
                            retry_in_s=round(delay, 3))
                await pause(stop, delay)
        log.info("consumer_stopped", stream=self.spec.name, group=self.group, consumer=self.consumer)

    async def _drain_own_pending(self, stop: asyncio.Event, *, head_first: bool = False) -> bool:
        """Re-read this consumer's own pending entries (a restart finishes what it held); False when a
        handler failed (the rest stays pending, in order). After a failure only the head is re-read until
        it goes through: re-reading the entries queued behind it would count deliveries they never had."""
        await self.setup()
        start = "0-0"
        while not stop.is_set():
            entries = await self._read(start, block=False, count=1 if head_first else None)
            head_first = False
            if not entries:
                return True
            if not await self._handle_batch(entries, await self._delivery_counts(entries)):
                return False
            start = entries[-1][0]
        return True

    async def _step(self, stop: asyncio.Event) -> bool:
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_interval_ms / 1000
            claimed = await self._autoclaim()
            if claimed:
                self._next_claim = 0.0  # more may be waiting
                return await self._handle_batch(claimed, await self._delivery_counts(claimed))
        entries = await self._read(">", block=True)
        if entries:  # delivered to us: handled even when stopping (the batch in hand)
            return await self._handle_batch(entries, {entry_id: 1 for entry_id, _ in entries})
        return True

    # --- Redis reads -------------------------------------------------------------------------------

    async def _read(self, start: str, *, block: bool, count: int | None = None
                    ) -> list[tuple[str, dict[str, str] | None]]:
        reply: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.spec.key: start},
            count=count or self.settings.batch_size,
            block=self.settings.block_ms if block else None,
        )
        if not reply:
            return []
        _, entries = reply[0]
        return [(str(entry_id), fields) for entry_id, fields in entries]

    async def _autoclaim(self) -> list[tuple[str, dict[str, str] | None]]:
        reply = await self.redis.xautoclaim(
            self.spec.key,
            self.group,
            self.consumer,
            min_idle_time=self.settings.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.settings.batch_size,
        )
        self._claim_cursor = str(reply[0])
        claimed = [(str(entry_id), fields) for entry_id, fields in reply[1]]
        deleted = reply[2] if len(reply) > 2 else []
        for entry_id in deleted:  # Redis 7 drops trimmed entries from the PEL and reports them
            await self._dead_letter(str(entry_id), None, 0, "trimmed before it was handled")
        if claimed:
            log.info("entries_claimed", stream=self.spec.name, group=self.group, count=len(claimed),
                     first_id=claimed[0][0])
        return claimed

    async def _delivery_counts(self, entries: list[tuple[str, Any]]) -> dict[str, int]:
        """Delivery counts of pending entries (XPENDING), after this delivery."""
        if not entries:
            return {}
        rows = await self.redis.xpending_range(
            self.spec.key, self.group, min=entries[0][0], max=entries[-1][0], count=len(entries) * 2 + 10,
            consumername=self.consumer,
        )
        return {str(row["message_id"]): int(row["times_delivered"]) for row in rows}

    # --- handling ----------------------------------------------------------------------------------

    async def _handle_batch(self, entries: list[tuple[str, dict[str, str] | None]], counts: dict[str, int]) -> bool:
        """Handle a batch lane by lane; False when a handler failed in some lane."""
        lanes: dict[str, list[tuple[str, dict[str, str] | None]]] = {}
        decoded: dict[str, Message | ContractError | None] = {}
        for entry_id, fields in entries:
            if not fields:
                decoded[entry_id] = None
                lanes.setdefault("", []).append((entry_id, fields))
                continue
            try:
                message: Message | ContractError = decode(self.spec.contract, fields)
            except ContractError as e:
                message = e
            decoded[entry_id] = message
            key = self.lane(message) if self.lane and isinstance(message, Message) else ""
            lanes.setdefault(key, []).append((entry_id, fields))

        async def run_lane(items: list[tuple[str, dict[str, str] | None]]) -> bool:
            for entry_id, fields in items:
                if not await self._handle_one(entry_id, fields, decoded[entry_id], counts.get(entry_id, 1)):
                    return False  # the rest of the lane waits behind the failed entry
            return True

        if len(lanes) == 1:
            return await run_lane(next(iter(lanes.values())))
        results = await asyncio.gather(*(run_lane(items) for items in lanes.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return all(results)

    async def _handle_one(
        self, entry_id: str, fields: dict[str, str] | None, message: Message | ContractError | None,
        deliveries: int,
    ) -> bool:
        self.last_progress = time.monotonic()
        deliveries = max(deliveries, self._attempts.get(entry_id, 0) + 1)
        if message is None:
            await self._dead_letter(entry_id, fields, deliveries, "trimmed before it was handled")
            return True
        if isinstance(message, ContractError):
            await self._dead_letter(entry_id, fields, deliveries, f"contract: {message}")
            return True
        if deliveries > self.settings.max_deliveries:
            limit = self.settings.max_deliveries
            last = self._last_errors.pop(entry_id, "unknown (a consumer died with it)")
            self._attempts.pop(entry_id, None)
            await self._dead_letter(entry_id, fields, deliveries,
                                    f"max_deliveries: delivered {deliveries} times (limit {limit}); last error: {last}")
            return True
        started = time.perf_counter()
        guard = self.guard(message) if self.guard else nullcontext()
        async with guard:
            return await self._handle_valid(entry_id, message, deliveries, started)

    async def _handle_valid(self, entry_id: str, message: Message, deliveries: int, started: float) -> bool:
        with structlog.contextvars.bound_contextvars(trace_id=message.trace_id, entry_id=entry_id):
            try:
                effects = await self.handler(Delivery(self.spec, entry_id, message, deliveries))
            except REDIS_DOWN:
                raise
            except Exception as e:  # the entry stays pending; re-read first after a backoff
                self.metrics.handler_errors.labels(*self._labels).inc()
                if len(self._last_errors) >= 10_000:
                    self._attempts.pop(next(iter(self._last_errors)), None)
                    self._last_errors.pop(next(iter(self._last_errors)))
                self._last_errors[entry_id] = f"{type(e).__name__}: {e}"[:500]
                self._attempts[entry_id] = deliveries
                log.exception("handler_failed", stream=self.spec.name, group=self.group, deliveries=deliveries,
                              error=str(e))
                return False
            finally:
                self.metrics.handler_seconds.labels(*self._labels).observe(time.perf_counter() - started)
            await commit(self.redis, effects.ops, service=self.service, ack=(self.spec.key, self.group, entry_id))
        self._last_errors.pop(entry_id, None)
        self._attempts.pop(entry_id, None)
        self.metrics.processed.labels(*self._labels).inc()
        return True

    async def _dead_letter(self, entry_id: str, fields: dict[str, str] | None, deliveries: int, error: str) -> None:
        payload = dict(fields or {})
        trace_id = payload.get("trace_id", "")
        if len(trace_id) != 16 or any(c not in "0123456789abcdef" for c in trace_id):
            trace_id = new_trace_id()
        letter = DeadLetter(
            source=self.service,
            trace_id=trace_id,
            origin_stream=self.spec.name,
            origin_id=entry_id,
            group=self.group,
            error=error[:2048],
            deliveries=deliveries,
            payload=payload,
        )
        await commit(self.redis, [Publish(self.spec.dlq.name, letter)], service=self.service,
                     ack=(self.spec.key, self.group, entry_id))
        reason = error.split(":", 1)[0]
        self.metrics.dead_lettered.labels(*self._labels, reason).inc()
        log.warning("entry_dead_lettered", stream=self.spec.name, group=self.group, origin_id=entry_id,
                    deliveries=deliveries, error=error, payload=json.dumps(payload, ensure_ascii=False)[:500])

    # --- metrics -----------------------------------------------------------------------------------

    async def measure(self) -> None:
        """Update the lag and pending gauges of this group."""
        for g in await self.redis.xinfo_groups(self.spec.key):
            if str(g["name"]) == self.group:
                self.metrics.lag.labels(*self._labels).set(await group_lag(self.redis, self.spec.key, g))
                self.metrics.pending.labels(*self._labels).set(int(g["pending"]))
