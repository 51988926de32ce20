"""``qt streams``: the streams and groups of the registry as they are in Redis."""

from __future__ import annotations

import time

import typer
from redis.asyncio import Redis
from rich.table import Table

from common import keys, streams
from common.bus.consumer import ensure_group
from common.bus.inspect import StreamInfo, parse_id, stream_info
from common.config import Settings
from common.contracts.base import now_ms
from ops.cli.context import age, console, new_app, with_redis

app = new_app(help="Streams and consumer groups.", invoke_without_command=True, no_args_is_help=False)


async def init_groups(redis: Redis) -> list[tuple[str, str]]:
    """Create every registered group at id 0 (MKSTREAM); the (stream, group) pairs created."""
    created = []
    for spec in streams.grouped_streams():
        for group in spec.groups:
            if await ensure_group(redis, spec.key, group):
                created.append((spec.name, group))
    return created


async def discovered_stream_keys(redis: Redis) -> list[str]:
    """Every stream key under ``quantum:stream:`` in Redis (registered or not)."""
    found = [k async for k in redis.scan_iter(match=keys.stream("*"), count=500, _type="stream")]
    return sorted(found)


async def collect(redis: Redis) -> list[tuple[str, bool, StreamInfo | None]]:
    """(name, registered, info) for every registered stream and every unregistered one found."""
    rows: list[tuple[str, bool, StreamInfo | None]] = []
    for spec in streams.all_streams():
        rows.append((spec.name, True, await stream_info(redis, spec.key)))
    for key in await discovered_stream_keys(redis):
        if streams.by_key(key) is None:
            rows.append((keys.stream_name(key), False, await stream_info(redis, key)))
    return rows


def render(rows: list[tuple[str, bool, StreamInfo | None]]) -> Table:
    """The table of ``qt streams``. "added" (entries ever added, trimmed ones included) is XINFO's
    entries-added, which Redis 6.2 does not give: on 6.2 the column is left out."""
    now = now_ms()
    added = any(info is not None and info.entries_added is not None for _, _, info in rows)
    table = Table(title="quantum:stream:*", title_justify="left")
    columns = ("stream", "length", *(("added",) if added else ()), "groups", "consumers", "pending", "lag",
               "last entry")
    for column in columns:
        table.add_column(column, justify="left" if column in ("stream", "groups") else "right")
    for name, registered, info in rows:
        label = name if registered else f"[yellow]{name} (not registered)[/yellow]"
        if info is None:
            table.add_row(label, *["-"] * (len(columns) - 1))
            continue
        groups = ", ".join(g.name for g in info.groups) or "-"
        table.add_row(
            label,
            str(info.length),
            *(["-" if info.entries_added is None else str(info.entries_added)] if added else []),
            groups,
            str(sum(g.consumers for g in info.groups)) if info.groups else "-",
            str(sum(g.pending for g in info.groups)) if info.groups else "-",
            str(max((g.lag or 0) for g in info.groups)) if info.groups else "-",
            age(None if info.last_id is None else now - parse_id(info.last_id)[0]),
        )
    return table


@app.callback()
def show(
    ctx: typer.Context,
    watch: float = typer.Option(0.0, "--watch", help="Print the table again every N seconds."),
) -> None:
    """A table of every stream: length, entries added (Redis 7), groups, consumers, pending, lag, age of the
    last entry."""
    if ctx.invoked_subcommand is not None:
        return

    async def once(redis: Redis, _: Settings) -> None:
        console.print(render(await collect(redis)))

    while True:
        with_redis(once)
        if not watch:
            return
        time.sleep(watch)


@app.command("init")
def init() -> None:
    """Create every registered consumer group at id 0 (MKSTREAM). Safe to run again."""

    async def go(redis: Redis, _: Settings) -> list[tuple[str, str]]:
        return await init_groups(redis)

    created = with_redis(go)
    for stream, group in created:
        console.print(f"created group {group} on {keys.stream(stream)} at 0")
    total = sum(len(s.groups) for s in streams.grouped_streams())
    console.print(f"{total} groups registered, {len(created)} created, {total - len(created)} existed")


@app.command("prune-consumers")
def prune_consumers(
    idle_s: int = typer.Option(3600, help="Remove consumers idle longer than this with nothing pending."),
) -> None:
    """Remove consumers that are idle with nothing pending (writes: XGROUP DELCONSUMER)."""

    async def go(redis: Redis, _: Settings) -> list[tuple[str, str, str]]:
        removed = []
        for key in await discovered_stream_keys(redis):
            for group in await redis.xinfo_groups(key):
                for member in await redis.xinfo_consumers(key, group["name"]):
                    if int(member["pending"]) == 0 and int(member["idle"]) > idle_s * 1000:
                        await redis.xgroup_delconsumer(key, group["name"], member["name"])
                        removed.append((keys.stream_name(key), str(group["name"]), str(member["name"])))
        return removed

    removed = with_redis(go)
    for stream, group, name in removed:
        console.print(f"removed consumer {name} of {stream} → {group}")
    console.print(f"{len(removed)} consumers removed")


@app.command("trim")
def trim(
    stream: str = typer.Option("", help="One registered stream (default: all)."),
    force: bool = typer.Option(False, help="Trim even where a group's lag exceeds the MAXLEN."),
) -> None:
    """XTRIM each registered stream to its MAXLEN (~). Refuses where a group has not read what would be
    dropped, unless --force. Writes."""

    async def go(redis: Redis, _: Settings) -> list[tuple[str, int, str]]:
        done = []
        for spec in streams.all_streams():
            if stream and spec.name != stream:
                continue
            info = await stream_info(redis, spec.key)
            if info is None:
                continue
            unread = max((g.lag or 0 for g in info.groups), default=0)
            if unread > spec.maxlen and not force:
                done.append((spec.name, 0, f"refused: a group lags {unread} > MAXLEN {spec.maxlen}"))
                continue
            dropped = int(await redis.xtrim(spec.key, maxlen=spec.maxlen, approximate=True))
            done.append((spec.name, dropped, "ok"))
        return done

    problems = 0
    for name, dropped, note in with_redis(go):
        console.print(f"{name}: {dropped} dropped ({note})")
        problems += note != "ok"
    if problems:
        raise typer.Exit(1)
