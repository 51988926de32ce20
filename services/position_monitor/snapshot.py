"""Snapshots: every position as the exchange holds it, marked to the latest mark price, into
``quantum:position:snapshot:{s}`` and ``position.snapshot``.

A symbol is snapshotted while either the position hash or the exchange holds it (the snapshot is the
exchange's side: ``position_amt`` 0 when only the hash has it). A snapshot key expires on its own if
position_monitor stops, and is deleted once neither side holds the symbol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from redis.asyncio import Redis

from common import keys
from common.bus import Effects, commit
from common.contracts import PositionSnapshot, new_trace_id, plain_decimal
from common.exchange.base import Exchange, ExchangePosition
from common.market import LatestPrice
from common.positions import PositionRecord
from common.store import all_positions, read_price
from common.streams import Service, Stream

ZERO = Decimal(0)
#: a snapshot key lives this many snapshot intervals (at least a minute) unless it is refreshed
TTL_INTERVALS = 10


@dataclass(frozen=True)
class Snapshot:
    """The exchange's position of a symbol as snapshotted: when, and under which trace."""

    position: ExchangePosition
    synced_at: int
    trace_id: str

    def to_hash(self) -> dict[str, str]:
        p = self.position
        return {
            "position_amt": plain_decimal(p.position_amt),
            "entry_price": plain_decimal(p.entry_price),
            "mark_price": plain_decimal(p.mark_price),
            "unrealized_pnl": plain_decimal(p.unrealized_pnl),
            "leverage": str(p.leverage),
            "liquidation_price": plain_decimal(p.liquidation_price),
            "synced_at": str(self.synced_at),
        }

    def message(self) -> PositionSnapshot:
        p = self.position
        return PositionSnapshot(source=Service.POSITION_MONITOR, trace_id=self.trace_id, symbol=p.symbol,
                                position_amt=p.position_amt, entry_price=p.entry_price,
                                mark_price=p.mark_price, unrealized_pnl=p.unrealized_pnl,
                                leverage=p.leverage, liquidation_price=p.liquidation_price)


def _is_trace(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def build_snapshot(symbol: str, held: ExchangePosition | None, ours: PositionRecord | None,
                   price: LatestPrice | None, now: int) -> Snapshot:
    """One symbol's snapshot: the exchange's quantity and entry, marked at the latest mark price (the
    price hash's, else the exchange's); unrealized PnL = (mark − entry) · signed quantity."""
    trace_id = ours.trace_id if ours is not None and _is_trace(ours.trace_id) else new_trace_id()
    if held is None:
        mark = price.mark_price if price else (ours.entry_price if ours else ZERO)
        flat = ExchangePosition(symbol, ZERO, ZERO, mark, ZERO, ours.leverage if ours else 1, ZERO)
        return Snapshot(flat, synced_at=now, trace_id=trace_id)
    mark = price.mark_price if price else held.mark_price
    marked = replace(
        held, symbol=symbol, mark_price=mark, unrealized_pnl=(mark - held.entry_price) * held.position_amt,
        leverage=max(1, min(125, held.leverage or (ours.leverage if ours else 1))),
        liquidation_price=max(held.liquidation_price, ZERO),
    )
    return Snapshot(marked, synced_at=now, trace_id=trace_id)


def snapshot_effects(snapshots: list[Snapshot], stale: list[str], ttl_ms: int) -> Effects:
    effects = Effects()
    for snap in snapshots:
        effects.hset(keys.position_snapshot(snap.position.symbol), snap.to_hash(), replace=True, ttl_ms=ttl_ms)
        effects.publish(Stream.POSITION_SNAPSHOT, snap.message())
    for symbol in stale:
        effects.delete(keys.position_snapshot(symbol))
    return effects


async def snapshot_symbols(redis: Redis) -> list[str]:
    """The symbols that have a snapshot key."""
    found = [keys.tail(str(key), keys.position_snapshot)
             async for key in redis.scan_iter(match=keys.position_snapshot_pattern(), count=500)]
    return [symbol for symbol in found if symbol is not None]


async def take_snapshots(redis: Redis, exchange: Exchange, interval_s: float, now: int) -> list[Snapshot]:
    """Snapshot every position (one commit) and delete the snapshots of symbols nobody holds."""
    held: Mapping[str, ExchangePosition] = await exchange.positions()
    ours = await all_positions(redis)
    symbols = sorted(set(held) | set(ours))
    snapshots = [build_snapshot(s, held.get(s), ours.get(s), await read_price(redis, s), now) for s in symbols]
    stale = [s for s in await snapshot_symbols(redis) if s not in held and s not in ours]
    ttl_ms = max(60_000, int(interval_s * 1000 * TTL_INTERVALS))
    await commit(redis, snapshot_effects(snapshots, stale, ttl_ms).ops, service=Service.POSITION_MONITOR)
    return snapshots
