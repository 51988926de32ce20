"""What a handler returns: the publications and key writes the runtime applies atomically.

A handler never writes to Redis itself. It returns :class:`Effects`; the runtime queues them with the
XACK of the entry in one MULTI/EXEC, so an entry's effects happen exactly once or not at all.
Producers that consume nothing (marketdata, the CLI) use :func:`publish`, the same path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from common import streams
from common.contracts.base import Message, encode

#: the most characters (field names and values) an entry a service publishes may hold; a larger one is
#: refused before it is sent (:class:`OversizedEntry`) — the biggest contract in use is far below it
MAX_ENTRY_CHARS = 1 << 20


class OversizedEntry(ValueError):
    """A message whose encoded fields exceed :data:`MAX_ENTRY_CHARS`: a programming error, never sent."""


def entry_chars(fields: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in fields.items())


@dataclass(frozen=True)
class Publish:
    """XADD ``message`` to the registered stream ``stream`` (MAXLEN ~ from the registry)."""

    stream: str
    message: Message


@dataclass(frozen=True)
class HashSet:
    """HSET ``mapping`` on ``key``; ``replace`` deletes the hash first; ``ttl_ms`` sets an expiry."""

    key: str
    mapping: Mapping[str, str]
    replace: bool = False
    ttl_ms: int | None = None


@dataclass(frozen=True)
class SetValue:
    """SET ``key`` to ``value`` with an optional expiry."""

    key: str
    value: str
    ttl_ms: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str


Op = Publish | HashSet | SetValue | Delete


@dataclass(frozen=True)
class Fence:
    """A commit goes through only while ``key`` holds ``value`` (apply_layer: the lease it holds). Checked
    inside the transaction (WATCH), so a writer that lost its lease can never commit after its successor."""

    key: str
    value: str


class FenceLost(RuntimeError):
    """The fence key no longer holds our value: another instance owns the work now. Stop at once (the
    service exits 1; systemd restarts it, as a standby)."""


@dataclass
class Effects:
    """The ordered writes of one handled entry (empty: just acknowledge)."""

    ops: list[Op] = field(default_factory=list)

    def publish(self, stream: str, message: Message) -> Effects:
        self.ops.append(Publish(stream, message))
        return self

    def hset(self, key: str, mapping: Mapping[str, str], *, replace: bool = False,
             ttl_ms: int | None = None) -> Effects:
        self.ops.append(HashSet(key, dict(mapping), replace, ttl_ms))
        return self

    def set(self, key: str, value: str, *, ttl_ms: int | None = None) -> Effects:
        self.ops.append(SetValue(key, value, ttl_ms))
        return self

    def delete(self, key: str) -> Effects:
        self.ops.append(Delete(key))
        return self

    def extend(self, other: Effects) -> Effects:
        self.ops.extend(other.ops)
        return self

    def published(self, stream: str) -> list[Message]:
        """The messages queued for ``stream`` (for tests and logs)."""
        return [op.message for op in self.ops if isinstance(op, Publish) and op.stream == stream]


def queue_ops(pipe: Pipeline, ops: Iterable[Op], *, service: str | None = None) -> None:
    """Queue ``ops`` on a transaction pipeline. A message that is not the stream's contract, a service
    that is not a registered producer of the stream, or an oversized message is a programming error
    (ValueError; nothing of the transaction is sent)."""
    for op in ops:
        if isinstance(op, Publish):
            spec = streams.get(op.stream)
            if not isinstance(op.message, spec.contract):
                raise ValueError(f"{op.stream} takes {spec.contract.__name__}, not {type(op.message).__name__}")
            if service is not None and service not in spec.producers:
                raise ValueError(f"{service} is not a registered producer of {op.stream}")
            fields: Any = encode(op.message)
            if (size := entry_chars(fields)) > MAX_ENTRY_CHARS:
                raise OversizedEntry(f"{op.stream}: a {type(op.message).__name__} of {size:,} characters "
                                     f"(at most {MAX_ENTRY_CHARS:,})")
            pipe.xadd(spec.key, fields, maxlen=spec.maxlen, approximate=True)
        elif isinstance(op, HashSet):
            if op.replace:
                pipe.delete(op.key)
            if op.mapping:
                mapping: Any = dict(op.mapping)
                pipe.hset(op.key, mapping=mapping)
            if op.ttl_ms is not None:
                pipe.pexpire(op.key, op.ttl_ms)
        elif isinstance(op, SetValue):
            pipe.set(op.key, op.value, px=op.ttl_ms)
        else:
            pipe.delete(op.key)


async def commit(
    redis: Redis,
    ops: Iterable[Op],
    *,
    service: str | None = None,
    ack: tuple[str, str, str | Sequence[str]] | None = None,
    fence: Fence | None = None,
) -> None:
    """Apply ``ops`` and (optionally) XACK ``(stream_key, group, entry_id or entry_ids)`` in one MULTI/EXEC;
    with a ``fence``, only while its key holds its value (FenceLost otherwise)."""
    ops = list(ops)
    acked: tuple[str, ...] = () if ack is None else (ack[2],) if isinstance(ack[2], str) else tuple(ack[2])
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            if fence is not None:
                await pipe.watch(fence.key)
                holder = await pipe.get(fence.key)
                if holder != fence.value:
                    await pipe.reset()  # type: ignore[no-untyped-call]  # redis-py leaves reset() unannotated
                    raise FenceLost(f"{fence.key} is held by {holder!r}, not by this instance")
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated
            queue_ops(pipe, ops, service=service)
            if ack is not None and acked:
                pipe.xack(ack[0], ack[1], *acked)
            try:
                await pipe.execute()
                return
            except WatchError:
                continue  # the fence key was written meanwhile (our own renewal): check it again


async def publish(redis: Redis, service: str, *messages: tuple[str, Message]) -> None:
    """Publish ``(stream, message)`` pairs atomically, as ``service``."""
    await commit(redis, [Publish(stream, message) for stream, message in messages], service=service)
