"""Read-only views of streams and groups (lag where Redis 6.2's XINFO lacks it), for the runtime's
metrics and for ``qt streams`` / ``qt wiring``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class GroupInfo:
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: int | None
    entries_read: int | None


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True)
class StreamInfo:
    key: str
    length: int
    entries_added: int | None
    last_id: str | None
    first_id: str | None
    groups: tuple[GroupInfo, ...]


async def count_after(redis: Redis, key: str, after_id: str, *, chunk: int = 1000, cap: int = 1_000_000) -> int:
    """Entries of ``key`` with an id greater than ``after_id`` (bounded by the stream's MAXLEN)."""
    total = 0
    start = "(" + after_id
    while total < cap:
        batch = await redis.xrange(key, min=start, max="+", count=chunk)
        if not batch:
            break
        total += len(batch)
        start = "(" + str(batch[-1][0])
        if len(batch) < chunk:
            break
    return total


async def group_lag(redis: Redis, key: str, group: dict[str, Any]) -> int:
    """The group's lag: XINFO's ``lag`` when Redis gives it (7.x), else counted."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    return await count_after(redis, key, str(group["last-delivered-id"]))


async def stream_info(redis: Redis, key: str) -> StreamInfo | None:
    """Length, entries added, first/last id and groups with lag; None when the stream does not exist."""
    try:
        raw = await redis.xinfo_stream(key)
    except ResponseError:
        return None
    groups_raw = await redis.xinfo_groups(key)
    groups = []
    for g in groups_raw:
        groups.append(
            GroupInfo(
                name=str(g["name"]),
                consumers=int(g["consumers"]),
                pending=int(g["pending"]),
                last_delivered_id=str(g["last-delivered-id"]),
                lag=await group_lag(redis, key, g),
                entries_read=None if g.get("entries-read") is None else int(g["entries-read"]),
            )
        )
    first = raw.get("first-entry")
    last = raw.get("last-entry")
    added = raw.get("entries-added")
    return StreamInfo(
        key=key,
        length=int(raw["length"]),
        entries_added=None if added is None else int(added),
        last_id=str(last[0]) if last else None,
        first_id=str(first[0]) if first else None,
        groups=tuple(groups),
    )


async def consumers(redis: Redis, key: str, group: str) -> list[ConsumerInfo]:
    raw = await redis.xinfo_consumers(key, group)
    return [ConsumerInfo(str(c["name"]), int(c["pending"]), int(c["idle"])) for c in raw]
