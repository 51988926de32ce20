"""The paper exchange's book in Redis: reads, queued writes, and the one transaction runner.

Every state change of the paper exchange is one MULTI/EXEC under WATCH of the keys it read
(optimistic locking; fakeredis and Redis 6.2 alike, no Lua), so a process killed between any two Redis
calls leaves either the whole change or none of it. Ids come from a counter incremented *before* the
transaction: a crash or a retry only leaves a gap in the ids, never half an order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from common import keys
from common.contracts.base import plain_decimal
from common.contracts.enums import FillKind
from common.exchange.base import Fill, OrderResult
from common.exchange.errors import TemporaryError, UnknownOutcome
from common.exchange.paper.book import PaperAccount, PaperPosition
from common.exchange.paper.codec import (
    ConditionalRecord,
    dumps,
    fill_from_dict,
    fill_sequence,
    fill_to_dict,
    loads,
    order_from_json,
    order_to_json,
    position_from_json,
    position_to_json,
)
from common.store import read_price

T = TypeVar("T")
#: callbacks a transaction body registers to run once its EXEC succeeded (logging what it did)
OnCommit = list[Callable[[], None]]
log = structlog.get_logger()

#: fills kept per symbol for ``fills_since`` (older ones are trimmed in the same transaction)
FILL_LOG_MAX = 10_000
#: optimistic-lock retries before a change is given up as contended (TemporaryError)
MAX_ATTEMPTS = 32


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PaperStore:
    """Reads and writes of the paper book. Read methods take the client or a watching pipeline
    (immediate mode); ``put_*`` methods queue on a pipeline after :meth:`begin`."""

    def __init__(self, redis: Redis, starting_balance: Decimal) -> None:
        self.redis = redis
        self.starting_balance = starting_balance

    async def transact(
        self, watch: Sequence[str], body: Callable[[Pipeline, OnCommit], Awaitable[T]], *, what: str
    ) -> T:
        """Run ``body`` under WATCH of ``watch`` and EXEC what it queued; rerun it when a watched key
        changed meanwhile. Errors of Redis before EXEC are TemporaryError (nothing happened); during
        EXEC they are UnknownOutcome (it may have happened: look it up). The body's ``on_commit``
        callbacks run after a successful EXEC only."""
        for attempt in range(MAX_ATTEMPTS):
            on_commit: OnCommit = []
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*watch)
                    result = await body(pipe, on_commit)
                except WatchError:
                    continue
                except RedisError as e:
                    raise TemporaryError(f"paper {what}: redis unavailable: {e}") from e
                if not pipe.explicit_transaction:
                    return result  # nothing to write (and nothing to log)
                try:
                    await pipe.execute()
                except WatchError:
                    log.debug("paper_transaction_retry", what=what, attempt=attempt)
                    continue
                except RedisError as e:
                    raise UnknownOutcome(f"paper {what}: redis failed during EXEC: {e}") from e
                for callback in on_commit:
                    callback()
                return result
        raise TemporaryError(f"paper {what}: contended {MAX_ATTEMPTS} times, try again")

    # --- reads -----------------------------------------------------------------------------------

    async def next_id(self, conn: Redis, count: int = 1) -> int:
        """The first of ``count`` fresh ids (an INCRBY outside the transaction: gaps, never reuse)."""
        last = int(await conn.incrby(keys.paper_sequence(), count))
        return last - count + 1

    async def account(self, conn: Redis) -> PaperAccount:
        raw = await conn.hgetall(keys.paper_account())
        data = {_text(k): _text(v) for k, v in raw.items()}
        return PaperAccount(
            wallet_balance=Decimal(data.get("wallet_balance", plain_decimal(self.starting_balance))),
            fees=Decimal(data.get("fees", "0")),
            realized_pnl=Decimal(data.get("realized_pnl", "0")),
        )

    async def position(self, conn: Redis, symbol: str) -> PaperPosition | None:
        raw = await conn.hget(keys.paper_positions(), symbol)
        return None if raw is None else position_from_json(raw)

    async def positions(self, conn: Redis) -> dict[str, PaperPosition]:
        raw = await conn.hgetall(keys.paper_positions())
        found = (position_from_json(v) for v in raw.values())
        return {p.symbol: p for p in found if p.qty != 0}

    async def leverage(self, conn: Redis, symbol: str) -> int | None:
        raw = await conn.hget(keys.paper_leverage(), symbol)
        return None if raw is None else int(raw)

    async def order(self, conn: Redis, client_order_id: str) -> OrderResult | None:
        raw = await conn.hget(keys.paper_orders(), client_order_id)
        return None if raw is None else order_from_json(raw)

    async def order_exists(self, conn: Redis, client_order_id: str) -> bool:
        return bool(await conn.hexists(keys.paper_orders(), client_order_id))

    async def conditional(self, conn: Redis, client_algo_id: str) -> ConditionalRecord | None:
        raw = await conn.hget(keys.paper_conditionals(), client_algo_id)
        return None if raw is None else ConditionalRecord.from_json(raw)

    async def open_conditionals(self, conn: Redis, symbol: str | None = None) -> list[ConditionalRecord]:
        """Open conditionals (of ``symbol``, or all), oldest first."""
        index = await conn.hgetall(keys.paper_open_conditionals())
        ids = [_text(cid) for cid, sym in index.items() if symbol is None or _text(sym) == symbol]
        if not ids:
            return []
        raws = await conn.hmget(keys.paper_conditionals(), ids)
        records = [ConditionalRecord.from_json(r) for r in raws if r is not None]
        return sorted(records, key=lambda r: int(r.order.algo_id))

    async def open_symbols(self, conn: Redis) -> set[str]:
        """Symbols with an open conditional or a position: what the trigger loop must watch."""
        index = await conn.hgetall(keys.paper_open_conditionals())
        symbols = {_text(sym) for sym in index.values()}
        symbols.update(_text(sym) for sym in await conn.hkeys(keys.paper_positions()))
        return symbols

    async def marks(self, symbols: list[str]) -> dict[str, Decimal]:
        """Latest marks whatever their age (for uPnL); a symbol without one is left out."""
        marks: dict[str, Decimal] = {}
        for symbol in symbols:
            price = await read_price(self.redis, symbol)
            if price is not None:
                marks[symbol] = price.mark_price
        return marks

    async def fills_since(self, conn: Redis, symbol: str, since_ms: int) -> list[Fill]:
        raws = await conn.zrangebyscore(keys.paper_fills(symbol), since_ms, "+inf")
        fills = [fill_from_dict(loads(r)) for r in raws if isinstance(r, (str, bytes))]
        return sorted(fills, key=lambda f: (f.ts_ms, fill_sequence(f)))

    # --- queued writes (after begin()) --------------------------------------------------------------

    @staticmethod
    def begin(pipe: Pipeline) -> None:
        """End the reads of a transaction body: what follows is queued for EXEC."""
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated

    def put_position(self, pipe: Pipeline, symbol: str, position: PaperPosition | None) -> None:
        if position is None:
            pipe.hdel(keys.paper_positions(), symbol)
        else:
            pipe.hset(keys.paper_positions(), symbol, position_to_json(position))

    def put_leverage(self, pipe: Pipeline, symbol: str, leverage: int) -> None:
        pipe.hset(keys.paper_leverage(), symbol, str(leverage))

    def put_account(self, pipe: Pipeline, account: PaperAccount, ts_ms: int) -> None:
        pipe.hset(
            keys.paper_account(),
            mapping={
                "wallet_balance": plain_decimal(account.wallet_balance),
                "fees": plain_decimal(account.fees),
                "realized_pnl": plain_decimal(account.realized_pnl),
                "updated_at": str(ts_ms),
            },
        )

    def put_order(self, pipe: Pipeline, order: OrderResult, kind: FillKind) -> None:
        pipe.hset(keys.paper_orders(), order.client_order_id, order_to_json(order, kind))

    def put_conditional(self, pipe: Pipeline, record: ConditionalRecord, *, open_: bool) -> None:
        cid = record.order.client_algo_id
        pipe.hset(keys.paper_conditionals(), cid, record.to_json())
        if open_:
            pipe.hset(keys.paper_open_conditionals(), cid, record.order.symbol)
        else:
            pipe.hdel(keys.paper_open_conditionals(), cid)

    def log_fill(self, pipe: Pipeline, fill: Fill, kind: FillKind) -> None:
        key = keys.paper_fills(fill.symbol)
        pipe.zadd(key, {dumps(fill_to_dict(fill, kind)): fill.ts_ms})
        pipe.zremrangebyrank(key, 0, -(FILL_LOG_MAX + 1))
