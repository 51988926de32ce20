"""What every ``qt`` command shares: the settings (exit 78 when wrong), a Redis client, how a time and a
duration read, and how a command group is declared."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from redis.asyncio import Redis
from rich.console import Console

from common.config import ConfigurationError, Settings, exit_config_error, load_settings
from common.redis_client import REDIS_DOWN, redis_client

T = TypeVar("T")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
EXIT_PROBLEMS = 1
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: Redis did not answer


def new_app(**options: Any) -> typer.Typer:
    """A command group of ``qt``. Help is click's plain layout: Typer's rich one prints a type after every
    flag (``--help <bool>``, ``--json <bool>``) as if it took a value."""
    return typer.Typer(rich_markup_mode=None, **options)


#: ``--format text|json`` of the commands a person and a script both read
FORMAT_OPTION: Any = typer.Option("text", "--format", help="text (local times) or json (one object per line, "
                                  "epoch ms).")
EXIT_USAGE = 2


def output_format(fmt: str) -> bool:
    """True for ``--format json``; exit 2 naming the choices for anything but text or json."""
    if fmt not in ("text", "json"):
        console.print(f"[red]--format must be text or json, not {fmt!r}[/red]")
        raise SystemExit(EXIT_USAGE)
    return fmt == "json"


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


def when(ms: int | None, *, precise: bool = False) -> str:
    """An epoch-milliseconds time as a person reads it: local ISO 8601 with the UTC offset
    (``2026-11-25T10:04:05+01:00``; ``precise`` adds the milliseconds; ``-``: none). ``--format json``
    keeps the epoch milliseconds."""
    if not ms:
        return "-"
    local = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone()
    return local.isoformat(timespec="milliseconds" if precise else "seconds")
