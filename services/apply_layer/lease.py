"""Active/standby (DESIGN §11): only the apply_layer instance holding the lease key executes plans.

The lease ``quantum:apply:lease`` holds the active instance's id with a TTL; the active one renews it
well before it lapses. A standby waits (alive and ready for systemd, but taking no plans) until the lease
lapses, then takes it and — like any start — settles SUBMITTING records and re-reads pending entries
first. An instance that cannot renew in time stops: after the TTL another may already be executing.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError

from common import keys
from common.backoff import pause
from common.systemd import notify

log = structlog.get_logger()


class LeaseLost(RuntimeError):
    """Another instance holds the lease, or it could not be renewed within its TTL: stop executing."""


class Lease:
    def __init__(self, redis: Redis, owner: str, ttl_ms: int) -> None:
        self.redis = redis
        self.name = owner
        self.owner = f"{owner}/{os.getpid()}/{secrets.token_hex(4)}"
        self.ttl_ms = ttl_ms
        self.renewed_at = 0.0

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
        return True

    async def holder(self) -> str | None:
        value = await self.redis.get(keys.apply_lease())
        return None if value is None else str(value)

    async def acquire(self, stop: asyncio.Event, poll_s: float) -> bool:
        """Wait until this instance holds the lease (False when stopped first). While waiting it tells
        systemd it is up (a standby is a healthy process) and keeps the watchdog fed."""
        announced = False
        while not stop.is_set():
            if await self.try_acquire():
                log.info("lease_acquired", owner=self.owner, ttl_ms=self.ttl_ms)
                notify("STATUS=active")
                return True
            if not announced:
                holder = await self.holder()
                log.warning("standby", lease_holder=holder)
                notify("READY=1")
                notify(f"STATUS=standby: the lease is held by {holder}")
                announced = True
            notify("WATCHDOG=1")
            await pause(stop, poll_s)
        return False

    async def renew(self) -> None:
        """Extend the lease; LeaseLost when another instance holds it."""
        key = keys.apply_lease()
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                holder = await pipe.get(key)
                if holder != self.owner:
                    raise LeaseLost(f"the lease is held by {holder!r}")
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated
                pipe.set(key, self.owner, px=self.ttl_ms)
                await pipe.execute()
            except WatchError as e:
                raise LeaseLost("the lease changed hands while it was renewed") from e
        self.renewed_at = time.monotonic()

    def expired(self) -> bool:
        """True once the TTL has passed since the last renewal (another instance may be active)."""
        return time.monotonic() - self.renewed_at > self.ttl_ms / 1000

    async def release(self) -> None:
        """Give the lease up on a clean stop, so a standby takes over at once."""
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
