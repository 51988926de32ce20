"""``qt contract-check``: the last entries of every stream validated against their contracts."""

from __future__ import annotations

import typer
from redis.asyncio import Redis
from rich.table import Table

from common import streams
from common.config import Settings
from common.contracts import ContractError, decode
from common.redis_client import xrange
from ops.cli.context import EXIT_PROBLEMS, console, with_redis


async def check(redis: Redis, count: int) -> list[tuple[str, int, int, str]]:
    """(stream, checked, invalid, first error) for every registered stream."""
    rows = []
    for spec in streams.all_streams():
        entries = await xrange(redis, spec.key, count=count, reverse=True)
        invalid, first = 0, ""
        for entry_id, fields in entries:
            try:
                decode(spec.contract, fields)
            except ContractError as e:
                invalid += 1
                first = first or f"{entry_id}: {e}"
        rows.append((spec.name, len(entries), invalid, first))
    return rows


def contract_check(count: int = typer.Option(100, help="Entries per stream, newest first.")) -> None:
    """Validate the newest entries of every stream against its contract; exit 1 on any invalid entry."""

    async def go(redis: Redis, _: Settings) -> list[tuple[str, int, int, str]]:
        return await check(redis, count)

    rows = with_redis(go)
    table = Table(title="contract check", title_justify="left")
    for col in ("stream", "checked", "invalid", "first error"):
        table.add_column(col)
    for name, checked, invalid, first in rows:
        table.add_row(name, str(checked), str(invalid), first)
    console.print(table)
    bad = sum(r[2] for r in rows)
    console.print(f"{sum(r[1] for r in rows)} entries checked, {bad} invalid")
    if bad:
        raise typer.Exit(EXIT_PROBLEMS)
