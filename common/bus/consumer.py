"""One consumer of one stream through one group — the runtime every grouped handler runs in.

Order of reading (DESIGN §5, §12): entries held by consumers known to be dead are claimed at once
(``dead``: by default a consumer whose heartbeat is gone; apply_layer, holding the lease, knows every
other consumer of its group is dead), then this consumer's own pending entries are re-read (id ``0``: a
restart finishes what it held, the claimed entries among them, in stream order), then entries idle past
``claim_idle_ms`` from any consumer (XAUTOCLAIM), then new entries (``>``).

Each lane (``lane`` maps a message to a key, e.g. its symbol) has its own worker: entries of one lane are
handled in stream order, lanes independently of each other. A failing entry holds up only its own lane:
that lane waits (doubling, capped) and tries the same entry again while the other lanes keep flowing; an
entry delivered more than ``max_deliveries`` times, or failing its contract, goes to ``<stream>.dlq`` and
is acknowledged. A handled entry's effects and its XACK are one MULTI/EXEC, fenced when the consumer is
given a :class:`~common.bus.effects.Fence` (nothing commits unless the fence key still holds our value).
A ``batched`` consumer (its handler reads nothing that the effects of earlier entries write, so it need not
see them committed) handles the entries its lane holds one after another and commits their effects and
XACKs together in one MULTI/EXEC, in stream order: each entry's effects still happen exactly once, with its
XACK, and a handler failure commits the entries before it and leaves the failing one at the lane's head.
At most ``in_flight_max`` entries are held in memory, and a batch's worth (two, batched) in lanes that are
not failing; the reader waits for room. Before a failed entry is tried again its lane checks what it holds against the
group's pending list (an entry whose commit met an outage may have gone through: it is never handled twice).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common import keys
from common.backoff import Backoff, pause
from common.bus.effects import Effects, Fence, Publish, commit, entry_chars
from common.bus.inspect import group_lag
from common.bus.metrics import BusMetrics, default_metrics
from common.config import BusSettings
from common.contracts.base import ContractError, Message, decode, new_trace_id
from common.contracts.messages import DeadLetter
from common.redis_client import REDIS_DOWN
from common.streams import StreamSpec

log = structlog.get_logger()

#: errors with which a reachable Redis refuses work for a while (failover, full disk, memory, loading)
#: a commit that failed for Redis, not for what it carried
_COMMIT_OUTAGE: tuple[type[BaseException], ...] = (*REDIS_DOWN, ResponseError)
#: what a dead letter keeps of the entry: each value's first DLQ_FIELD_CHARS characters, each name's first
#: DLQ_NAME_CHARS, and fields in order while they fit DLQ_PAYLOAD_CHARS in all (the whole entry's size and
#: digest are kept beside), so that a dead letter is always far below the largest entry a service may publish
DLQ_FIELD_CHARS = 4096
DLQ_NAME_CHARS = 256
DLQ_PAYLOAD_CHARS = 65_536
REDIS_REFUSING = ("READONLY", "MISCONF", "OOM", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
_UNSURE: tuple[type[BaseException], ...] = (ResponseError, *REDIS_DOWN)


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
#: is the consumer of this name known to be dead (its entries may be claimed at once)?
DeadCheck = Callable[[str], Awaitable[bool]]
#: what else a dead-lettered (decodable) entry commits with its dead letter, under its guard (e.g. the one
#: result a plan must have), given the message and the reason
DeadLetterHook = Callable[[Message, str], Awaitable[Effects]]


async def ensure_group(redis: Redis, key: str, group: str) -> bool:
    """Create ``group`` on ``key`` at id 0 with MKSTREAM; False when it existed already."""
    try:
        await redis.xgroup_create(key, group, id="0", mkstream=True)
        return True
    except ResponseError as e:
        if "BUSYGROUP" in str(e):
            return False
        raise


def heartbeat_dead(redis: Redis) -> DeadCheck:
    """A consumer ``<service>@<instance>`` is dead when its heartbeat key is gone (a clean stop deletes
    it; after a crash it lapses with its TTL)."""

    async def dead(name: str) -> bool:
        service, _, instance = name.partition("@")
        return not instance or not await redis.exists(keys.heartbeat(service, instance))

    return dead


def _raise_if_cancelled() -> None:
    """A cancelled blocking read can return normally (redis-py 8 swallows the CancelledError in places):
    a loop that was cancelled ends at its next turn all the same."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _capped(fields: dict[str, str]) -> dict[str, str]:
    """What a dead letter keeps of ``fields`` (see DLQ_PAYLOAD_CHARS)."""
    kept: dict[str, str] = {}
    used = 0
    for name, value in fields.items():
        name, value = name[:DLQ_NAME_CHARS], value[:DLQ_FIELD_CHARS]
        used += len(name) + len(value)
        if used > DLQ_PAYLOAD_CHARS:
            break
        kept[name] = value
    return kept


def _digest(fields: dict[str, str]) -> str:
    """SHA-256 of the entry's fields as canonical JSON (sorted names)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Entry:
    entry_id: str
    fields: dict[str, str] | None
    message: Message | ContractError | None
    #: the delivery count Redis had when it was read (1 for a new entry)
    deliveries: int

    @property
    def order(self) -> tuple[int, int]:
        return _id_key(self.entry_id)


@dataclass
class _Lane:
    """The entries of one lane held in memory, in stream order, and its worker."""

    key: str
    entries: list[_Entry] = field(default_factory=list)
    failures: int = 0
    delay_s: float = 0.0
    task: asyncio.Task[None] | None = None
    #: how many entries at the head a batched lane has handled or is handling (they keep their place)
    started: int = 0
    #: entries whose commit met an outage: committed or not, unknown until the lane's next check
    unsure: set[str] = field(default_factory=set)

    def insert(self, entry: _Entry) -> None:
        """In stream order; an entry claimed late (older than some held) goes before the newer ones
        that have not started (the head, once started, stays the head)."""
        if not self.entries or self.entries[-1].order < entry.order:
            self.entries.append(entry)  # the usual case: a new entry comes after every one held
            return
        orders = [e.order for e in self.entries]
        lo = max(self.started, 1 if self.entries and self.task else 0)
        at = bisect.bisect_right(orders, entry.order, lo=min(lo, len(orders)))
        self.entries.insert(at, entry)


@dataclass
class _Handled:
    """What a batched lane handled of its entries from ``start``: their effects, in order, and how the
    next one (if any was tried) failed."""

    start: int
    effects: list[tuple[str, Effects]] = field(default_factory=list)
    failed: bool = False
    outage: bool = False


class Consumer:
    """Runs ``handler`` over ``spec`` as ``consumer`` of ``group`` until ``stop`` is set.

    ``lane`` (optional) maps a message to a lane key (e.g. its symbol): entries of one lane are handled
    in order, different lanes concurrently and independently. ``guard`` (optional) gives an async
    context held around the handler *and* its commit (e.g. a per-symbol lock shared with another loop of
    the service). ``dead`` says whether another consumer of the group is known dead (its pending entries
    are claimed at once instead of after ``claim_idle_ms``); ``fence`` guards every commit. ``batched``
    commits the entries a lane holds together (only for a handler that does not read what earlier entries
    of its stream write; no guard).
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
        dead: DeadCheck | None = None,
        fence: Fence | None = None,
        transient: tuple[type[BaseException], ...] = (),
        on_dead_letter: DeadLetterHook | None = None,
        batched: bool = False,
    ) -> None:
        if group not in spec.groups:
            raise ValueError(f"{group} is not a registered group of {spec.name}")
        if batched and guard is not None:
            # a guard is held through its entry's commit: entries of one lane committed together would hold
            # several (one symbol's lock twice, a deadlock)
            raise ValueError("a batched consumer takes no guard")
        self.redis = redis
        self.spec = spec
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.settings = settings
        self.service = service or group
        self.lane = lane
        self.guard = guard
        self.dead = dead
        self.fence = fence
        self.transient = transient
        self.on_dead_letter = on_dead_letter
        self.batched = batched
        #: what a handling waits out instead of counting a delivery (the outage kinds, the transient errors)
        self._deferred: tuple[type[BaseException], ...] = (*transient, *_COMMIT_OUTAGE)
        self.metrics = metrics or default_metrics()
        self.last_progress = time.monotonic()
        self._backoff = Backoff(settings.reconnect_initial_ms / 1000, settings.reconnect_max_ms / 1000)
        #: the wait before a failed entry is tried again (it grows with each failure of its lane)
        self._retry = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
        self._next_claim = 0.0
        self._next_refresh = 0.0
        self._claim_cursor = "0-0"
        self._labels = (spec.name, group)
        #: the last handler error per failing entry, for the dead letter's reason (bounded)
        self._last_errors: dict[str, str] = {}
        #: deliveries this process made of each failing entry (a retry from memory is not counted by Redis)
        self._attempts: dict[str, int] = {}
        self._lanes: dict[str, _Lane] = {}
        self._held: set[str] = set()
        #: held entries Redis dropped from the pending list because the stream trimmed them (Redis 7):
        #: still this consumer's to handle, from memory
        self._orphans: set[str] = set()
        #: an XAUTOCLAIM met trimmed entries it could not name (Redis 6.2): read the own pending list again
        self._reread_own = False
        #: while an own-pending read is on its way: the entries that left the lanes meanwhile (finished)
        self._gone: set[str] | None = None
        self._room = asyncio.Event()
        self._failure: BaseException | None = None
        self._stop = asyncio.Event()

    # --- the loop ---------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the group (at 0, MKSTREAM) if it is missing."""
        if await ensure_group(self.redis, self.spec.key, self.group):
            log.info("group_created", stream=self.spec.name, group=self.group)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; entries in hand are finished and acknowledged first (a lane
        waiting to retry a failed entry leaves it pending: a restart re-reads it first)."""
        self._stop = stop
        attempt = 0
        synced = False
        try:
            while not stop.is_set():
                self.last_progress = time.monotonic()
                self._raise_lane_failure()
                _raise_if_cancelled()
                try:
                    if not synced:
                        await self.setup()
                        await self._claim_dead()
                        await self._read_own_pending()
                        synced = True
                    else:
                        synced = await self._step()
                    attempt = 0
                except REDIS_DOWN as e:
                    delay = self._backoff.delay_s(attempt)
                    attempt += 1
                    self.metrics.redis_reconnects.labels(self.spec.name).inc()
                    log.warning("redis_unavailable", stream=self.spec.name, group=self.group,
                                error=str(e) or type(e).__name__, retry_in_s=round(delay, 3))
                    await pause(stop, delay)
                except ResponseError as e:
                    if "NOGROUP" in str(e):
                        log.warning("group_missing", stream=self.spec.name, group=self.group)
                        synced = False
                        continue
                    if not str(e).startswith(REDIS_REFUSING):
                        raise
                    # a replica after failover, a full disk or memory: wait for the server, do not crash
                    delay = self._backoff.delay_s(attempt)
                    attempt += 1
                    log.warning("redis_refusing", stream=self.spec.name, group=self.group, error=str(e),
                                retry_in_s=round(delay, 3))
                    await pause(stop, delay)
            await self._drain()
            self._raise_lane_failure()
        except BaseException:
            for lane in list(self._lanes.values()):
                if lane.task is not None:
                    lane.task.cancel()
            await asyncio.gather(*(lane.task for lane in list(self._lanes.values()) if lane.task),
                                 return_exceptions=True)
            raise
        log.info("consumer_stopped", stream=self.spec.name, group=self.group, consumer=self.consumer)

    async def _drain(self) -> None:
        """Wait for the lanes to finish what they hold (a lane waiting to retry gives up at once)."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _raise_lane_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _step(self) -> bool:
        """One turn of the reader; False when entries of a dead consumer were claimed (the own-pending read
        that takes them, in order and as room allows, comes next)."""
        now = time.monotonic()
        await self._refresh_if_due(now)
        if self._reread_own:
            self._reread_own = False
            await self._read_own_pending()
            return True
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_interval_ms / 1000
            if await self._claim_dead(justid=True):
                return False
            claimed = await self._autoclaim() if self._free() > 0 else []
            if claimed:
                self._next_claim = 0.0  # more may be waiting
                self._route(claimed, await self._delivery_counts(claimed))
                return True
        room = self._free()
        if room <= 0:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), timeout=self.settings.block_ms / 1000)
            return True
        entries = await self._read(">", block=True, count=min(room, self.settings.batch_size))
        if entries:  # delivered to us: handled even when stopping (the entries in hand)
            self._route(entries, {entry_id: 1 for entry_id, _ in entries})
        return True

    async def _refresh_if_due(self, now: float) -> None:
        if now >= self._next_refresh:
            self._next_refresh = now + self.settings.claim_idle_ms / 3000
            await self._refresh_held()

    async def _refresh_held(self) -> None:
        """Reset the idle time of every entry held in memory (see :meth:`_claim_own`)."""
        await self._claim_own(list(self._held))

    async def _claim_own(self, ids: list[str]) -> set[str]:
        """Reset the idle time of ``ids`` (XCLAIM JUSTID: no delivery is counted), so that no consumer —
        another, or this one's own XAUTOCLAIM — claims an entry waiting in a lane. Returns the ids still
        pending; one Redis dropped instead (trimmed from the stream, Redis 7) is an orphan: still ours."""
        claimed: set[str] = set()
        for at in range(0, len(ids), 500):
            page = ids[at:at + 500]
            reply: Any = await self.redis.xclaim(self.spec.key, self.group, self.consumer, min_idle_time=0,
                                                 message_ids=list[Any](page), justid=True)
            claimed.update(str(entry_id) for entry_id in reply)
        gone = {entry_id for entry_id in ids if entry_id not in claimed and entry_id in self._held}
        if gone - self._orphans:
            log.warning("held_entries_trimmed", stream=self.spec.name, group=self.group, count=len(gone),
                        first_id=min(gone, key=_id_key))
        self._orphans |= gone
        return claimed

    def _free(self) -> int:
        """How many more entries may be read: at most ``in_flight_max`` held, and at most a batch's worth
        held by lanes that are not failing (a failing lane's entries wait behind it without stopping the
        reader) — two for a batched consumer, which reads its next batch while it commits the one in hand.
        No further, so a stop drains little and a consumer killed again and again (each restart's re-read
        counts a delivery of every entry it held) does not bring entries it never started to the
        dead-letter stream."""
        active = sum(len(lane.entries) for lane in self._lanes.values() if not lane.failures)
        ahead = (2 if self.batched else 1) * self.settings.batch_size
        return min(self.settings.in_flight_max - len(self._held), ahead - active)

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

    async def _read_own_pending(self) -> None:
        """Re-read this consumer's own pending entries (a restart finishes what it held), page by page in
        stream order; entries already held in memory are not taken twice."""
        start = "0-0"
        while not self._stop.is_set():
            if self._free() <= 0:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), timeout=self.settings.block_ms / 1000)
                self.last_progress = time.monotonic()
                await self._refresh_if_due(self.last_progress)  # what waits in lanes keeps its owner
                continue
            self._gone = set()
            try:
                entries = await self._read(start, block=False, count=min(self._free(), self.settings.batch_size))
                if not entries:
                    return
                counts = await self._delivery_counts(entries)
                gone = self._gone
            finally:
                self._gone = None
            # an entry a lane finished (committed) while this read was on its way is in the reply but done
            self._route([entry for entry in entries if entry[0] not in gone], counts)
            start = entries[-1][0]

    async def _claim_dead(self, *, justid: bool = True) -> bool:
        """Move the pending entries of consumers known to be dead to this consumer's pending list at once
        (XCLAIM JUSTID: no delivery counted); the own-pending read that follows takes them, in stream order
        and as room allows. True when something was claimed."""
        if self.dead is None:
            return False
        summary: Any = await self.redis.xpending(self.spec.key, self.group)
        claimed_any = False
        for row in summary.get("consumers") or []:
            name, count = str(row["name"]), int(row["pending"])
            if name == self.consumer or count == 0 or not await self.dead(name):
                continue
            rows = await self.redis.xpending_range(self.spec.key, self.group, min="-", max="+",
                                                   count=min(count, 10_000), consumername=name)
            ids = [str(r["message_id"]) for r in rows]
            if not ids:
                continue
            reply: Any = await self.redis.xclaim(self.spec.key, self.group, self.consumer, min_idle_time=0,
                                                 message_ids=list[Any](ids), justid=justid)
            log.warning("entries_claimed_from_dead_consumer", stream=self.spec.name, group=self.group,
                        dead_consumer=name, count=len(reply), first_id=ids[0])
            claimed_any = claimed_any or bool(reply)
        return claimed_any

    async def _autoclaim(self) -> list[tuple[str, dict[str, str] | None]]:
        reply = await self.redis.xautoclaim(
            self.spec.key,
            self.group,
            self.consumer,
            min_idle_time=self.settings.claim_idle_ms,
            start_id=self._claim_cursor,
            count=max(1, min(self.settings.batch_size, self._free())),
        )
        self._claim_cursor = str(reply[0])
        if any(entry_id is None for entry_id, _ in reply[1]):
            self._reread_own = True  # Redis 6.2 claims a trimmed entry without naming it: the own read will
        claimed = [(str(entry_id), fields) for entry_id, fields in reply[1]
                   if entry_id is not None and str(entry_id) not in self._held]
        deleted = reply[2] if len(reply) > 2 else []
        for entry_id in map(str, deleted):  # Redis 7 drops trimmed entries from the PEL and reports them
            if entry_id in self._held:
                self._orphans.add(entry_id)  # a lane has it in memory: handled from there
                continue
            await self._dead_letter(entry_id, None, 0, "trimmed before it was handled")
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

    # --- lanes -------------------------------------------------------------------------------------

    def _route(self, entries: list[tuple[str, dict[str, str] | None]], counts: dict[str, int]) -> None:
        """Hand each entry to its lane (started when idle); entries already held are not taken twice."""
        for entry_id, fields in entries:
            if entry_id in self._held:
                continue
            message: Message | ContractError | None = None
            if fields:
                try:
                    message = decode(self.spec.contract, fields)
                except ContractError as e:
                    message = e
            key = self.lane(message) if self.lane and isinstance(message, Message) else ""
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(key)
            lane.insert(_Entry(entry_id, fields, message, counts.get(entry_id, 1)))
            self._held.add(entry_id)
            if lane.task is None:
                lane.task = asyncio.create_task(self._work(lane), name=f"lane:{self.spec.name}:{key}")
                lane.task.add_done_callback(self._lane_done)

    def _lane_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _work(self, lane: _Lane) -> None:
        """Handle the lane's entries in order; a failure makes only this lane wait, check what it holds
        (:meth:`_recheck`) and try again."""
        try:
            while lane.entries:
                if lane.failures:
                    if await pause(self._stop, lane.delay_s):
                        return  # stopping: the failed entry stays pending, re-read first next time
                    try:
                        await self._recheck(lane)
                    except _UNSURE as e:  # not answered: nothing is tried until it is
                        self._outage(lane.entries[0].entry_id, e)
                        lane.delay_s = self._backoff.delay_s(lane.failures)
                        lane.failures += 1
                        continue
                    if not lane.entries:
                        break
                entry = lane.entries[0]
                if self.batched and not lane.failures and self._plain(entry):
                    ok, outage = await self._run_batched(lane)
                else:
                    ok, outage = await self._attempt(lane, entry)
                    if ok:
                        self._drop(lane)
                if ok:
                    lane.failures = 0
                else:  # the lane's head failed (the entries committed before it are gone from the lane)
                    lane.delay_s = (self._backoff if outage else self._retry).delay_s(lane.failures)
                    lane.failures += 1
        finally:
            for entry in lane.entries:
                self._release(entry.entry_id)
            lane.entries.clear()
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            self._room.set()

    async def _recheck(self, lane: _Lane) -> None:
        """Before a retry, keep only the lane's entries that are still this consumer's to handle: pending
        for it (one that is not was committed — its reply lost to an outage — or was claimed by another
        consumer: handled there, never twice here), or orphans (trimmed while held) whose outcome is known.
        Their idle time is reset, so that no consumer claims them, out of order, while the lane waits. One
        round trip for the check; an outage raises (nothing is retried until the check is answered)."""
        ids = [e.entry_id for e in lane.entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.spec.key, self.group, min=entry_id, max=entry_id, count=1)
            replies: Any = await pipe.execute()
        ours = [entry_id for entry_id, rows in zip(ids, replies, strict=True)
                if rows and str(rows[0]["consumer"]) == self.consumer]
        if ours:
            await self._claim_own(ours)
        mine, checked = set(ours), set(ids)
        kept: list[_Entry] = []
        for entry in lane.entries:  # with what the reader routed to the lane meanwhile (just delivered: ours)
            entry_id = entry.entry_id
            if entry_id not in checked or entry_id in mine or \
                    (entry_id in self._orphans and entry_id not in lane.unsure):
                kept.append(entry)
                continue
            orphan = entry_id in self._orphans
            self._release(entry_id)
            self._forget(entry_id)
            if orphan:
                log.error("entry_outcome_unknown", stream=self.spec.name, group=self.group, entry_id=entry_id,
                          reason="trimmed from the stream while its commit met an outage")
            else:
                log.info("entry_settled_elsewhere", stream=self.spec.name, group=self.group, entry_id=entry_id,
                         after_outage=entry_id in lane.unsure)
        if len(kept) != len(lane.entries):
            self._room.set()
        lane.entries[:] = kept
        lane.unsure.clear()
        lane.started = 0

    def _drop(self, lane: _Lane) -> None:
        entry = lane.entries.pop(0)
        lane.started = max(0, lane.started - 1)
        self._release(entry.entry_id)
        self._room.set()

    def _release(self, entry_id: str) -> None:
        """An entry leaves memory (finished, or found settled elsewhere)."""
        self._held.discard(entry_id)
        self._orphans.discard(entry_id)
        if self._gone is not None:
            self._gone.add(entry_id)

    async def _attempt(self, lane: _Lane, entry: _Entry) -> tuple[bool, bool]:
        """One try of the lane's head: (handled, failed because Redis was unavailable). An outage does not
        count as a delivery: only a handler's own failures bring an entry nearer the dead-letter stream.
        After an outage, whether its commit went through is checked before it is tried again."""
        try:
            return await self._handle_one(entry), False
        except self._deferred as e:
            self._outage(entry.entry_id, e)
            lane.unsure.add(entry.entry_id)
            return False, True

    async def _run_batched(self, lane: _Lane) -> tuple[bool, bool]:
        """Handle the lane's plain entries from its head, a batch at a time, each batch's effects and XACKs
        committed in one MULTI/EXEC while the next batch is handled (one commit in flight, in order: a
        batched handler does not read what the entries before it write). (the head succeeded, the head
        failed for an outage): True once the lane holds no plain entry at its head; on a failure the
        entries committed before it are gone from the lane and the failing one is its head."""
        handled = await self._handle_batch(lane, 0)
        while handled.effects:
            count = len(handled.effects)
            more = not handled.failed and count < len(lane.entries) and self._plain(lane.entries[count])
            following = asyncio.create_task(self._handle_batch(lane, count)) if more else None
            try:
                committed = await self._commit_batch(handled.effects)
            except BaseException:  # a lost fence, a cancellation: the batch beside it stops too
                if following is not None:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                raise
            after = await following if following is not None else _Handled(count)
            if not committed:  # an outage: whether the batch went through is checked before a retry
                lane.unsure.update(entry_id for entry_id, _ in handled.effects)
                lane.started = 0
                lane.entries[1:] = sorted(lane.entries[1:], key=lambda e: e.order)
                return False, True
            for _ in handled.effects:
                self._drop(lane)
            if handled.failed:
                return False, handled.outage
            handled = after
        return not handled.failed, handled.outage

    async def _handle_batch(self, lane: _Lane, start: int) -> _Handled:
        """Run the handler over up to a batch of the lane's plain entries from index ``start``, one after
        another; each keeps its place in the lane from the moment it is taken (an entry claimed late goes
        after it, before the entries not taken yet)."""
        handled = _Handled(start)
        entry_id = ""
        try:
            while len(handled.effects) < self.settings.batch_size:
                at = start + len(handled.effects)
                if at >= len(lane.entries) or not self._plain(lane.entries[at]):
                    break
                entry = lane.entries[at]
                assert isinstance(entry.message, Message)
                lane.started = at + 1
                entry_id = entry.entry_id
                effects = await self._call(entry_id, entry.message, self._deliveries(entry))
                if effects is None:
                    handled.failed = True
                    break
                handled.effects.append((entry_id, effects))
        except self._deferred as e:
            self._outage(entry_id, e)
            handled.failed = handled.outage = True
        lane.started = start + len(handled.effects)
        return handled

    async def _commit_batch(self, handled: list[tuple[str, Effects]]) -> bool:
        """The effects of ``handled`` and their XACKs in one MULTI/EXEC; False after an outage."""
        try:
            await commit(self.redis, [op for _, effects in handled for op in effects.ops], service=self.service,
                         ack=(self.spec.key, self.group, [entry_id for entry_id, _ in handled]), fence=self.fence)
        except _COMMIT_OUTAGE as e:
            self._outage(handled[0][0], e)
            return False
        for entry_id, _ in handled:
            self._forget(entry_id)
        self.metrics.processed.labels(*self._labels).inc(len(handled))
        return True

    def _outage(self, entry_id: str, e: BaseException) -> None:
        """Log an outage (or a transient failure) met by an entry; anything else is raised again."""
        if isinstance(e, self.transient):
            log.warning("handler_deferred", stream=self.spec.name, group=self.group, entry_id=entry_id,
                        error=str(e) or type(e).__name__)
        elif isinstance(e, ResponseError):
            if not str(e).startswith(REDIS_REFUSING) and "NOGROUP" not in str(e):
                raise e
            log.warning("redis_refusing", stream=self.spec.name, group=self.group, entry_id=entry_id,
                        error=str(e))
        else:
            self.metrics.redis_reconnects.labels(self.spec.name).inc()
            log.warning("redis_unavailable", stream=self.spec.name, group=self.group, entry_id=entry_id,
                        error=str(e) or type(e).__name__)

    def _plain(self, entry: _Entry) -> bool:
        """A valid message within its delivery limit: handled by the handler (not dead-lettered)."""
        return isinstance(entry.message, Message) and self._deliveries(entry) <= self.settings.max_deliveries

    def _deliveries(self, entry: _Entry) -> int:
        return max(entry.deliveries, self._attempts.get(entry.entry_id, 0) + 1)

    # --- handling ----------------------------------------------------------------------------------

    async def _handle_one(self, entry: _Entry) -> bool:
        self.last_progress = time.monotonic()
        entry_id, fields, message = entry.entry_id, entry.fields, entry.message
        deliveries = self._deliveries(entry)
        if message is None:
            await self._dead_letter(entry_id, fields, deliveries, "trimmed before it was handled")
            return True
        if isinstance(message, ContractError):
            await self._dead_letter(entry_id, fields, deliveries, f"contract: {message}")
            return True
        guard = self.guard(message) if self.guard else nullcontext()
        if deliveries > self.settings.max_deliveries:
            limit = self.settings.max_deliveries
            last = self._last_errors.get(entry_id, "unknown (a consumer died with it)")
            reason = f"max_deliveries: delivered {deliveries} times (limit {limit}); last error: {last}"
            async with guard:
                extra = await self.on_dead_letter(message, reason) if self.on_dead_letter else Effects()
                await self._dead_letter(entry_id, fields, deliveries, reason, extra)
            self._forget(entry_id)
            return True
        async with guard:
            effects = await self._call(entry_id, message, deliveries)
            if effects is None:
                return False
            await commit(self.redis, effects.ops, service=self.service, ack=(self.spec.key, self.group, entry_id),
                         fence=self.fence)
        self._forget(entry_id)
        self.metrics.processed.labels(*self._labels).inc()
        return True

    async def _call(self, entry_id: str, message: Message, deliveries: int) -> Effects | None:
        """The handler's effects for one entry; None when it failed (the entry stays pending and its lane
        tries it again after a backoff). An outage is raised: waited out, not counted as a delivery."""
        self.last_progress = started = time.monotonic()
        with structlog.contextvars.bound_contextvars(trace_id=message.trace_id, entry_id=entry_id):
            try:
                return await self.handler(Delivery(self.spec, entry_id, message, deliveries))
            except (*REDIS_DOWN, *self.transient):
                raise
            except Exception as e:
                self.metrics.handler_errors.labels(*self._labels).inc()
                if len(self._last_errors) >= 10_000:
                    self._forget(next(iter(self._last_errors)))
                self._last_errors[entry_id] = f"{type(e).__name__}: {e}"[:500]
                self._attempts[entry_id] = deliveries
                log.exception("handler_failed", stream=self.spec.name, group=self.group, deliveries=deliveries,
                              error=str(e))
                return None
            finally:
                self.metrics.handler_seconds.labels(*self._labels).observe(time.monotonic() - started)

    def _forget(self, entry_id: str) -> None:
        self._last_errors.pop(entry_id, None)
        self._attempts.pop(entry_id, None)

    async def _dead_letter(self, entry_id: str, fields: dict[str, str] | None, deliveries: int, error: str,
                           extra: Effects | None = None) -> None:
        original = dict(fields or {})
        payload = _capped(original)
        trace_id = original.get("trace_id", "")
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
            payload_chars=entry_chars(original),
            payload_sha256=_digest(original),
            truncated=payload != original,
        )
        ops = [Publish(self.spec.dlq.name, letter), *(extra.ops if extra else [])]
        await commit(self.redis, ops, service=self.service, ack=(self.spec.key, self.group, entry_id),
                     fence=self.fence)
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
