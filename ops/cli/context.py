"""What every ``qt`` command shares: the settings (exit 78 when wrong) and a Redis client."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from redis.asyncio import Redis
from rich.console import Console

from common.config import ConfigurationError, Settings, exit_config_error, load_settings
from common.redis_client import REDIS_DOWN, redis_client

T = TypeVar("T")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
EXIT_PROBLEMS = 1
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: Redis did not answer


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as e:
        exit_config_error("qt", e)


def with_redis(fn: Callable[[Redis, Settings], Awaitable[T]]) -> T:
    """Run ``fn(redis, settings)`` in an event loop; exit 69 with one line when Redis is down."""
    conf = settings()

    async def main() -> T:
        redis = redis_client(conf)
        try:
            return await fn(redis, conf)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except REDIS_DOWN as e:
        console.print(f"[red]redis unavailable at {conf.redis_url}: {e}[/red]")
        raise SystemExit(EXIT_UNAVAILABLE) from None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def age(ms: int | None) -> str:
    """A duration in milliseconds as an operator reads it: ``42s``, ``7m``, ``3h``, ``2d`` (``-``: none)."""
    if ms is None:
        return "-"
    seconds = max(0, ms) / 1000
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
