"""The live wiring map: the registry joined with what Redis holds, and the findings the old forensic map
found by hand (WIRING_MAP.md) named automatically. Collection reads Redis; :func:`findings` is pure."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from common import keys, streams
from common.bus.inspect import consumers as group_consumers
from common.bus.inspect import parse_id, stream_info
from common.contracts import ContractError, DeadLetter, decode
from common.contracts.base import now_ms
from common.policy import Policy
from common.redis_client import xrange
from common.store import all_positions
from common.streams import Service


@dataclass(frozen=True)
class ConsumerView:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True)
class GroupView:
    name: str
    registered: bool
    pending: int
    lag: int | None
    consumers: tuple[ConsumerView, ...]


@dataclass(frozen=True)
class StreamView:
    name: str
    registered: bool
    grouped: bool
    producers: tuple[str, ...]
    maxlen: int | None
    length: int
    entries_added: int | None
    last_entry_age_ms: int | None
    groups: tuple[GroupView, ...]


@dataclass(frozen=True)
class DeadLetterView:
    """The newest entry of a non-empty dead-letter stream."""

    entry_id: str
    origin_stream: str
    origin_id: str
    group: str
    deliveries: int
    error: str


@dataclass(frozen=True)
class ServiceView:
    name: str
    instances: tuple[str, ...]
    healthy: bool


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str


@dataclass(frozen=True)
class Thresholds:
    max_lag: int = 1000
    near_maxlen: float = 0.8
    max_consumers: int = 4
    idle_pending_ms: int = 120_000


@dataclass
class WiringSnapshot:
    taken_at: int
    services: list[ServiceView]
    streams: list[StreamView]
    key_counts: dict[str, int]
    positions: dict[str, str] = field(default_factory=dict)  # symbol -> side
    ledgers: set[str] = field(default_factory=set)
    allowlist: tuple[str, ...] = ()
    #: dead-letter stream -> its newest entry, for every one that is not empty
    dead_letters: dict[str, DeadLetterView] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ledgers"] = sorted(self.ledgers)
        return data


def key_pattern(key: str) -> str:
    """The pattern a key counts under: its last segment made ``*`` (``quantum:position:ledger:*``)."""
    head, sep, _ = key.rpartition(":")
    if key.startswith(keys.STREAM_PREFIX):
        return keys.stream("*")
    return f"{head}{sep}*" if sep else key


async def collect(redis: Redis, policy: Policy | None) -> WiringSnapshot:
    now = now_ms()
    counts: Counter[str] = Counter()
    beats: dict[str, list[tuple[str, bool]]] = {}
    async for raw in redis.scan_iter(match=keys.all_keys_pattern(), count=1000):
        key = str(raw)
        counts[key_pattern(key)] += 1
        if key.startswith(keys.heartbeat("", "")[:-1]):
            service, _, instance = key[len(keys.heartbeat("", "")[:-1]):].partition(":")
            value = await redis.get(key)
            healthy = bool(value) and json.loads(value or "{}").get("healthy", True)
            beats.setdefault(service, []).append((instance, healthy))
    services = [ServiceView(s, tuple(i for i, _ in beats.get(s, [])), all(h for _, h in beats.get(s, [])))
                for s in Service.ALL]
    services += [ServiceView(s, tuple(i for i, _ in b), all(h for _, h in b)) for s, b in beats.items()
                 if s not in Service.ALL]
    names = [spec.name for spec in streams.all_streams()]
    async for raw in redis.scan_iter(match=keys.stream("*"), count=1000, _type="stream"):
        name = keys.stream_name(str(raw))
        if name not in names:
            names.append(name)
    views = [await _stream_view(redis, name, now) for name in names]
    positions = {symbol: p.side.value for symbol, p in (await all_positions(redis)).items()}
    ledgers = set()
    for symbol in positions:
        if await redis.exists(keys.position_ledger(symbol)):
            ledgers.add(symbol)
    letters = {v.name: await _newest_letter(redis, v.name) for v in views if is_dead_letter(v.name) and v.length}
    return WiringSnapshot(now, services, views, dict(sorted(counts.items())), positions, ledgers,
                          policy.allowlist if policy else (), letters)


def is_dead_letter(name: str) -> bool:
    spec = streams.STREAMS.get(name)
    return bool(spec.dead_letter_of) if spec is not None else name.endswith(".dlq")


async def _newest_letter(redis: Redis, name: str) -> DeadLetterView:
    entries = await xrange(redis, keys.stream(name), count=1, reverse=True)
    entry_id, fields = entries[0] if entries else ("", {})
    try:
        letter = decode(DeadLetter, fields)
        return DeadLetterView(entry_id, letter.origin_stream, letter.origin_id, letter.group, letter.deliveries,
                              letter.error)
    except ContractError:  # not a dead letter we wrote: show what it says
        deliveries = fields.get("deliveries", "")
        return DeadLetterView(entry_id, fields.get("origin_stream", "?"), fields.get("origin_id", "?"),
                              fields.get("group", "?"), int(deliveries) if deliveries.isdigit() else 0,
                              fields.get("error", "(no error field)"))


async def _stream_view(redis: Redis, name: str, now: int) -> StreamView:
    spec = streams.STREAMS.get(name)
    info = await stream_info(redis, keys.stream(name))
    groups: list[GroupView] = []
    if info is not None:
        for g in info.groups:
            members = await group_consumers(redis, info.key, g.name)
            groups.append(GroupView(g.name, spec is not None and g.name in spec.groups, g.pending, g.lag,
                                    tuple(ConsumerView(c.name, c.pending, c.idle_ms) for c in members)))
    age = None if info is None or info.last_id is None else max(0, now - parse_id(info.last_id)[0])
    return StreamView(
        name=name, registered=spec is not None, grouped=bool(spec and spec.grouped),
        producers=spec.producers if spec else (), maxlen=spec.maxlen if spec else None,
        length=info.length if info else 0, entries_added=info.entries_added if info else None,
        last_entry_age_ms=age, groups=tuple(groups),
    )


def findings(snap: WiringSnapshot, t: Thresholds = Thresholds()) -> list[Finding]:
    """Every fault of the old map that this snapshot shows."""
    found: list[Finding] = []
    alive = {s.name for s in snap.services if s.instances}
    for s in snap.services:
        if s.name in Service.ALL and not s.instances:
            found.append(Finding("SERVICE_DOWN", s.name, "no heartbeat: not running, or not logging its liveness"))
        elif s.instances and not s.healthy:
            found.append(Finding("SERVICE_UNHEALTHY", s.name, "a loop made no progress lately"))
    for v in snap.streams:
        if not v.registered:
            found.append(Finding("STREAM_NOT_REGISTERED", v.name, f"{v.length} entries, groups "
                                 f"{[g.name for g in v.groups] or '-'}"))
        consumed = [g for g in v.groups if g.consumers]
        if consumed and not (set(v.producers) & (alive | {Service.QT})):
            age = "never" if v.last_entry_age_ms is None else f"{v.last_entry_age_ms // 1000}s ago"
            found.append(Finding("CONSUMED_NOT_PRODUCED", v.name,
                                 f"read by {[g.name for g in consumed]} but no registered producer is running "
                                 f"(producers {list(v.producers) or 'none'}; last entry {age})"))
        for g in v.groups:
            subject = f"{v.name} → {g.name}"
            if not g.registered:
                found.append(Finding("GROUP_NOT_REGISTERED", subject, f"lag {g.lag}, {len(g.consumers)} consumers"))
            if g.lag is not None and g.lag > t.max_lag:
                found.append(Finding("LAG", subject, f"lag {g.lag} > {t.max_lag}"))
            if g.lag is not None and v.maxlen and g.lag >= t.near_maxlen * v.maxlen:
                found.append(Finding("LAG_NEAR_MAXLEN", subject,
                                     f"lag {g.lag} of MAXLEN {v.maxlen}: trimming would drop unread entries"))
            if len(g.consumers) > t.max_consumers:
                found.append(Finding("TOO_MANY_CONSUMERS", subject,
                                     f"{len(g.consumers)} consumers (names leak on restart?)"))
            for c in g.consumers:
                if c.pending and c.idle_ms > t.idle_pending_ms:
                    found.append(Finding("IDLE_WITH_PENDING", f"{subject} / {c.name}",
                                         f"{c.pending} pending, idle {c.idle_ms // 1000}s"))
    for v in snap.streams:
        letter = snap.dead_letters.get(v.name)
        if letter is not None:
            found.append(Finding("DLQ_NOT_EMPTY", v.name,
                                 f"{v.length} dead letter(s); newest {letter.entry_id} from {letter.origin_stream} "
                                 f"{letter.origin_id} (group {letter.group}, {letter.deliveries} deliveries): "
                                 f"{letter.error[:300]}"))
    for symbol in sorted(snap.positions):
        if snap.allowlist and symbol not in snap.allowlist:
            found.append(Finding("POSITION_OUTSIDE_ALLOWLIST", symbol, "open position of a symbol not allowed"))
        if symbol not in snap.ledgers:
            found.append(Finding("POSITION_WITHOUT_LEDGER", symbol, "open position with an empty ledger"))
    return found
