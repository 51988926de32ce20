"""Active/standby (DESIGN §11, §12): only the apply_layer instance holding the lease key executes plans.

The lease ``quantum:apply:lease`` holds the active instance's id with a TTL. From the moment it is taken
it is renewed every third of the TTL by its own task (also while the instance is still preparing), and
every commit of the instance is fenced by it (:class:`~common.bus.effects.Fence`): a commit made after
another instance took the lease cannot go through. No order is sent unless the lease was renewed lately
(:meth:`Lease.check`). An instance that loses the lease stops (exit 1; systemd restarts it as a standby).

A standby waits — alive and ready for systemd, taking no plans — until the lease lapses, then takes it
and, like any start, settles SUBMITTING records and claims the dead instance's pending entries first.
Waiting rides out Redis outages like every other loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError

from common import keys
from common.backoff import Backoff, pause
from common.bus.effects import Fence
from common.redis_client import REDIS_DOWN
from common.systemd import notify

log = structlog.get_logger()

#: no order is sent once this share of the TTL has passed since the last renewal
SEND_MARGIN = 0.8


#: the wait between tries of a renewal that raced a change of the lease key
RENEW_RETRY_S = 0.02


class LeaseLost(RuntimeError):
    """Another instance holds the lease, or it could not be renewed within its TTL: stop executing."""


class Lease:
    def __init__(self, redis: Redis, owner: str, ttl_ms: int, backoff: Backoff | None = None) -> None:
        self.redis = redis
        self.name = owner
        self.owner = f"{owner}/{os.getpid()}/{secrets.token_hex(4)}"
        self.ttl_ms = ttl_ms
        self.renewed_at = 0.0
        #: how it was taken: from a predecessor of this very name whose process is gone (nothing of it can
        #: still be on its way), or after the lease lapsed or was released
        self.from_dead_predecessor = False
        self.acquired_at = 0.0
        self.backoff = backoff or Backoff(0.1, 5.0)
        self._task: asyncio.Task[None] | None = None

    @property
    def fence(self) -> Fence:
        """What every commit of the active instance is fenced by."""
        return Fence(keys.apply_lease(), self.owner)

    async def try_acquire(self) -> bool:
        if await self.redis.set(keys.apply_lease(), self.owner, nx=True, px=self.ttl_ms):
            self.renewed_at = time.monotonic()
            return True
        holder = await self.holder()
        if holder is not None and self._dead_predecessor(holder):
            return await self._take_over(holder)
        return False

    def _dead_predecessor(self, holder: str) -> bool:
        """The holder is this very instance name (same host, same ``-<n>``) and its process is gone: a
        crashed predecessor, whose lease need not be waited out."""
        parts = holder.split("/")
        if len(parts) < 3 or "/".join(parts[:-2]) != self.name:
            return False
        try:
            os.kill(int(parts[-2]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    async def _take_over(self, holder: str) -> bool:
        key = keys.apply_lease()
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if await pipe.get(key) != holder:
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated
                pipe.set(key, self.owner, px=self.ttl_ms)
                await pipe.execute()
            except WatchError:
                return False
        log.warning("lease_taken_from_dead_predecessor", previous=holder)
        self.renewed_at = time.monotonic()
        self.from_dead_predecessor = True
        return True

    async def holder(self) -> str | None:
        value = await self.redis.get(keys.apply_lease())
        return None if value is None else str(value)

    async def acquire(self, stop: asyncio.Event, poll_s: float) -> bool:
        """Wait until this instance holds the lease (False when stopped first). While waiting it tells
        systemd it is up (a standby is a healthy process), keeps the watchdog fed, and rides out Redis
        outages. Once taken, the lease is renewed by its own task (:meth:`hold`)."""
        announced = False
        failures = 0
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    self.acquired_at = time.monotonic()
                    log.info("lease_acquired", owner=self.owner, ttl_ms=self.ttl_ms)
                    notify("STATUS=active")
                    self._task = asyncio.create_task(self._renew_forever(), name="lease-renewal")
                    return True
                if not announced:
                    holder = await self.holder()
                    log.warning("standby", lease_holder=holder)
                    notify("READY=1")
                    notify(f"STATUS=standby: the lease is held by {holder}")
                    announced = True
                failures = 0
                delay = poll_s
            except REDIS_DOWN as e:
                delay = self.backoff.delay_s(failures)
                failures += 1
                log.warning("redis_unavailable", waiting_for="lease", error=str(e) or type(e).__name__,
                            retry_in_s=round(delay, 3))
            notify("WATCHDOG=1")
            if await pause(stop, delay):
                break
        return False

    async def _renew_forever(self) -> None:
        """Renew until :meth:`release` (not until the service is told to stop: a stopping instance still
        finishes the plans in hand, and sends for them)."""
        interval = self.ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except REDIS_DOWN as e:
                if self.expired():  # another instance may be executing by now: stop
                    raise LeaseLost(f"the lease could not be renewed within its TTL: {e}") from e
                log.warning("lease_renewal_failed", error=str(e) or type(e).__name__)

    async def hold(self, stop: asyncio.Event, beat: Callable[[], None]) -> None:
        """Wait while the renewal task runs (calling ``beat`` each second); raise what ended it
        (LeaseLost) — the service then stops."""
        task = self._task
        if task is None:
            raise LeaseLost("the lease was never acquired")
        while not stop.is_set() and not task.done():
            await asyncio.wait({task}, timeout=1.0)
            beat()
        if stop.is_set():
            return
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # checked just above

    async def renew(self) -> None:
        """Extend the lease; LeaseLost when another instance holds it. A lease that lapsed with nobody
        taking it (Redis restarted and its TTL ran out meanwhile) is taken again: no other instance can
        have executed in between without holding it now, and every commit of this one is fenced. A renewal
        that raced a change of the key (its expiry, for one) looks again."""
        key = keys.apply_lease()
        give_up = time.monotonic() + self.ttl_ms / 1000
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    holder = await pipe.get(key)
                    if holder is None:
                        log.warning("lease_lapsed_retaken", owner=self.owner)
                    elif holder != self.owner:
                        raise LeaseLost(f"the lease is held by {holder!r}")
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated
                    pipe.set(key, self.owner, px=self.ttl_ms)
                    await pipe.execute()
                except WatchError:
                    # looked at again: held by another now (LeaseLost), or ours to renew. Right after a Redis
                    # restart the key can be touched several times in a row (its expiry, the reload): tried
                    # again for up to a TTL — never sending meanwhile (check() sees the renewal late)
                    if time.monotonic() > give_up:
                        raise LeaseLost("the lease kept changing while it was renewed") from None
                    await asyncio.sleep(RENEW_RETRY_S)
                    continue
            self.renewed_at = time.monotonic()
            return

    def expired(self) -> bool:
        """True once the TTL has passed since the last renewal (another instance may be active)."""
        return time.monotonic() - self.renewed_at > self.ttl_ms / 1000

    def check(self) -> None:
        """Before an order is sent: LeaseLost unless the lease was renewed recently enough that it cannot
        have lapsed (nor lapse during a short send)."""
        if self._task is not None and self._task.done():
            raise LeaseLost("the lease renewal has stopped")
        if time.monotonic() - self.renewed_at > SEND_MARGIN * self.ttl_ms / 1000:
            raise LeaseLost("the lease was not renewed lately: no order is sent")

    async def release(self) -> None:
        """Give the lease up on a clean stop, so a standby takes over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        key = keys.apply_lease()
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if await pipe.get(key) == self.owner:
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated
                    pipe.delete(key)
                    await pipe.execute()
            except WatchError:
                pass
