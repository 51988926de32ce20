"""The one way to open Redis: an asyncio client from the settings, with timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.backoff import Backoff, pause
from common.config import Settings

log = structlog.get_logger()

#: what a Redis outage looks like to a caller: retry with backoff, never crash
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, BusyLoadingError, ConnectionError, OSError, TimeoutError,
)


def redis_client(settings: Settings) -> Redis:
    """A client for ``settings.redis_url`` (decoded responses, timeouts on every call)."""
    password = settings.redis_password.get_secret_value() or None
    return Redis.from_url(
        str(settings.redis_url),
        username=settings.redis_username or None,
        password=password,
        decode_responses=True,
        socket_timeout=settings.bus.socket_timeout_s,
        socket_connect_timeout=min(5.0, settings.bus.socket_timeout_s),
        health_check_interval=30,
    )


async def wait_for_redis(redis: Redis, settings: Settings, stop: asyncio.Event | None = None) -> bool:
    """PING until Redis answers (capped backoff with jitter); False when ``stop`` was set first."""
    backoff = Backoff(settings.bus.reconnect_initial_ms / 1000, settings.bus.reconnect_max_ms / 1000)
    attempt = 0
    while stop is None or not stop.is_set():
        try:
            await redis.ping()
            if attempt:
                log.info("redis_available", attempts=attempt + 1)
            return True
        except REDIS_DOWN as e:
            delay = backoff.delay_s(attempt)
            attempt += 1
            log.warning("redis_unavailable", error=str(e) or type(e).__name__, retry_in_s=round(delay, 3))
            await pause(stop, delay)
    return False


async def hgetall(redis: Redis, key: str) -> dict[str, str]:
    """HGETALL with the decoded types this fleet's clients return (redis-py's stubs are wider)."""
    fields: Any = await redis.hgetall(key)
    return {str(k): str(v) for k, v in fields.items()}


async def hgetall_many(redis: Redis, keys: list[str]) -> list[dict[str, str]]:
    """HGETALL of each of ``keys`` in one round trip (a pipeline, not a transaction: each hash is read
    whole, the hashes not at one instant)."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        replies: Any = await pipe.execute()
    return [{str(k): str(v) for k, v in fields.items()} for fields in replies]


Entry = tuple[str, dict[str, str]]


async def xrange(redis: Redis, key: str, *, start: str = "-", end: str = "+", count: int | None = None,
                 reverse: bool = False) -> list[Entry]:
    """XRANGE (or XREVRANGE) as (id, fields) with plain strings; trimmed entries are left out."""
    raw: Any = await (redis.xrevrange(key, max=end, min=start, count=count) if reverse
                      else redis.xrange(key, min=start, max=end, count=count))
    return [(str(entry_id), {str(k): str(v) for k, v in fields.items()}) for entry_id, fields in raw or [] if fields]
