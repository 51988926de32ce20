"""``qt trace <id>``: every entry of one chain across all streams, in time order.

A chain is followed through its ids to a fixed point: the trace_id an intent started, the plans and
their ids, the position they opened (``position_plan_id``), the exits of that position and their fills,
and its ``trade.closed``.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from redis.asyncio import Redis

from common import streams
from common.bus.inspect import parse_id
from common.config import Settings
from common.redis_client import xrange
from ops.cli.context import EXIT_PROBLEMS, console, with_redis

LINK_FIELDS = ("trace_id", "plan_id", "position_plan_id", "intent_id")


async def chain(redis: Redis, start: str, *, rounds: int = 4) -> list[tuple[str, str, dict[str, str]]]:
    """(stream, entry id, fields) of every entry linked to ``start``, oldest first."""
    entries: list[tuple[str, str, dict[str, str]]] = []
    for spec in streams.all_streams():
        if spec.dead_letter_of:
            continue
        for entry_id, fields in await xrange(redis, spec.key):
            entries.append((spec.name, entry_id, fields))
    ids = {start}
    picked: dict[tuple[str, str], tuple[str, str, dict[str, str]]] = {}
    for _ in range(rounds):
        grown = False
        for stream, entry_id, fields in entries:
            if (stream, entry_id) in picked:
                continue
            if any(fields.get(f) in ids for f in LINK_FIELDS):
                picked[(stream, entry_id)] = (stream, entry_id, fields)
                new = {fields[f] for f in LINK_FIELDS if fields.get(f)} - ids
                # an exit's own trace starts a new chain; follow it through the plan it names
                ids |= new
                grown = grown or bool(new)
        if not grown:
            break
    return sorted(picked.values(), key=lambda e: (parse_id(e[1]), e[0]))


def trace(
    ident: str = typer.Argument(..., help="A plan_id, trace_id, intent_id or position's plan_id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per entry."),
) -> None:
    """Every entry across all streams of one chain, in time order; exit 1 when nothing matches."""

    async def go(redis: Redis, _: Settings) -> list[tuple[str, str, dict[str, str]]]:
        return await chain(redis, ident)

    found = with_redis(go)
    for stream, entry_id, fields in found:
        if as_json:
            print(json.dumps({"stream": stream, "id": entry_id, **fields}, ensure_ascii=False))
        else:
            console.print(f"{entry_id}  [bold]{stream}[/bold]  {_summary(stream, fields)}")
    if not found:
        console.print(f"nothing found for {ident}")
        raise typer.Exit(EXIT_PROBLEMS)


def _summary(stream: str, f: dict[str, Any]) -> str:
    keep = ("symbol", "action", "side", "decision", "error", "qty", "price", "kind", "reason", "exit_reason",
            "filled_qty", "avg_price", "pnl_net", "plan_id", "position_plan_id", "confidence")
    return " ".join(f"{k}={f[k]}" for k in keep if f.get(k) not in (None, ""))


