"""``qt trace <id>``: every entry of one chain across all streams, in time order.

A chain is followed through its ids to a fixed point: the trace_id an intent started, the plans and
their ids, the position they opened (``position_plan_id``), the exits of that position and their fills,
and its ``trade.closed``.

Printed for a person: local times, and the monitoring entries of an open position (``position.snapshot``
every few seconds, ``exitbrain.pnl``) folded to the first and the last with their count, unless
``--all``. ``--format json``: one object per entry, times in epoch ms (the folded last entry carries
``folded``, the count of entries left out before it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import typer
from redis.asyncio import Redis

from common import streams
from common.bus.inspect import parse_id
from common.config import Settings
from common.redis_client import xrange
from common.streams import Stream
from ops.cli.context import EXIT_PROBLEMS, FORMAT_OPTION, console, output_format, when, with_redis

LINK_FIELDS = ("trace_id", "plan_id", "position_plan_id", "intent_id")
#: streams that repeat while a position is open: folded to first and last unless --all
MONITORING = (Stream.POSITION_SNAPSHOT, Stream.EXITBRAIN_PNL)
Entry = tuple[str, str, dict[str, str]]


@dataclass(frozen=True)
class Shown:
    """One entry as printed: ``folded`` entries of its stream (and symbol) were left out before it."""

    stream: str
    entry_id: str
    fields: dict[str, str]
    folded: int = 0
    count: int = 1


def fold(entries: list[Entry]) -> list[Shown]:
    """The entries with every monitoring stream (per symbol) cut to its first and last entry; the last
    says how many it stands for. Other entries pass as they are."""
    runs: dict[tuple[str, str], list[int]] = {}
    for i, (stream, _, fields) in enumerate(entries):
        if stream in MONITORING:
            runs.setdefault((stream, fields.get("symbol", "")), []).append(i)
    keep: dict[int, Shown] = {}
    for i, (stream, entry_id, fields) in enumerate(entries):
        run = runs.get((stream, fields.get("symbol", "")))
        if run is None or stream not in MONITORING:
            keep[i] = Shown(stream, entry_id, fields)
        elif i == run[0] or i == run[-1]:
            last = i == run[-1] and len(run) > 1
            keep[i] = Shown(stream, entry_id, fields, folded=len(run) - 2 if last else 0,
                            count=len(run) if last else 1)
    return [keep[i] for i in sorted(keep)]


async def chain(redis: Redis, start: str, *, rounds: int = 4) -> list[Entry]:
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
    fmt: str = FORMAT_OPTION,
    show_all: bool = typer.Option(False, "--all", help="Every monitoring entry (position.snapshot, "
                                  "exitbrain.pnl), not only the first and the last."),
) -> None:
    """Every entry across all streams of one chain, in time order (local times; the repeated monitoring
    entries folded to first and last unless --all); exit 1 when nothing matches."""
    as_json = output_format(fmt)

    async def go(redis: Redis, _: Settings) -> list[Entry]:
        return await chain(redis, ident)

    found = with_redis(go)
    shown = [Shown(*e) for e in found] if show_all else fold(found)
    for row in shown:
        ts = parse_id(row.entry_id)[0]
        if as_json:
            extra = {"folded": row.folded} if row.folded else {}
            print(json.dumps({"stream": row.stream, "id": row.entry_id, "at": ts, **row.fields, **extra},
                             ensure_ascii=False))
            continue
        if row.folded:
            console.print(f"{'':29}  [dim]… {row.folded} more {row.stream} entries (--all shows them)[/dim]")
        note = f"  [dim](last of {row.count})[/dim]" if row.count > 1 else ""
        console.print(f"{when(ts, precise=True)}  [bold]{row.stream}[/bold]  {_summary(row.stream, row.fields)}{note}",
                      soft_wrap=True)
    if not found:
        console.print(f"nothing found for {ident}")
        raise typer.Exit(EXIT_PROBLEMS)


def _summary(stream: str, f: dict[str, Any]) -> str:
    keep = ("symbol", "action", "side", "decision", "error", "qty", "price", "kind", "reason", "exit_reason",
            "filled_qty", "avg_price", "pnl_net", "plan_id", "position_plan_id", "confidence", "position_amt",
            "mark_price", "unrealized_pnl", "r_multiple", "kill_score")
    return " ".join(f"{k}={f[k]}" for k in keep if f.get(k) not in (None, ""))


