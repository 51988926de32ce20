"""The fleet's shared state as it is read from Redis: the positions, the policy in force, the latest marks
and market states, the exchange's rules, the kill switch and the books.

The values and their hash codecs live in pure modules (:mod:`common.positions`, :mod:`common.policy`,
:mod:`common.market`, :mod:`common.ess`, :mod:`common.books`) that decision code imports without any I/O;
this module is the one that reads them (a service's I/O layer, the CLI, the API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from common import keys
from common.books import SymbolLedger, account_from_hash, ledger_from_hash
from common.config import Settings
from common.contracts import ContractError, MarketState, decode
from common.ess import Ess, parse_ess
from common.exchange.rules import SymbolRules
from common.market import LatestPrice, parse_price
from common.maths.ledger import Account
from common.policy import Policy, load_policy_file
from common.positions import PositionRecord
from common.redis_client import hgetall, hgetall_many


async def read_position(redis: Redis, symbol: str) -> PositionRecord | None:
    fields = await hgetall(redis, keys.position(symbol))
    return PositionRecord.from_hash(fields) if fields else None


async def all_positions(redis: Redis) -> dict[str, PositionRecord]:
    """Every position hash, by symbol (ledger and snapshot keys that share the prefix are skipped)."""
    found: dict[str, PositionRecord] = {}
    async for key in redis.scan_iter(match=keys.position_pattern(), count=500):
        symbol = keys.symbol_of_position_key(str(key))
        if symbol is None:
            continue
        position = await read_position(redis, symbol)
        if position is not None:
            found[symbol] = position
    return found


async def symbols_with_position(redis: Redis, symbols: list[str]) -> set[str]:
    """Which of ``symbols`` have a position hash (one round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.exists(keys.position(symbol))
        found: Any = await pipe.execute()
    return {symbol for symbol, n in zip(symbols, found, strict=True) if n}


async def current_policy(redis: Redis, settings: Settings) -> Policy:
    """The policy in force: ``quantum:policy:current``, else the policy file."""
    fields = await hgetall(redis, keys.policy_current())
    if fields:
        return Policy.from_hash(fields)
    return load_policy_file(settings.config_file(settings.policy_file))


async def read_price(redis: Any, symbol: str) -> LatestPrice | None:
    """The latest price of ``symbol`` from its hash (``redis`` is a redis.asyncio client)."""
    return parse_price(symbol, await redis.hgetall(keys.market_price(symbol)))


async def read_marketstate(redis: Any, symbol: str) -> MarketState | None:
    """The latest market state of ``symbol``, or None when absent or unreadable."""
    return parse_marketstate(await hgetall(redis, keys.marketstate(symbol)))


def parse_marketstate(fields: dict[str, str]) -> MarketState | None:
    if not fields:
        return None
    try:
        return decode(MarketState, fields)
    except ContractError:
        return None


@dataclass(frozen=True)
class SymbolView:
    """What the exit decisions read of one symbol, and the raw hashes of the ``extra`` keys asked for."""

    position: PositionRecord | None
    price: LatestPrice | None
    market: MarketState | None
    extra: list[dict[str, str]]


async def read_symbol_view(redis: Redis, symbol: str, extra: tuple[str, ...] = ()) -> SymbolView:
    """The position, latest price and market state of ``symbol`` (and the hashes at ``extra``) in one
    round trip instead of one each."""
    position, price, market, *rest = await hgetall_many(
        redis, [keys.position(symbol), keys.market_price(symbol), keys.marketstate(symbol), *extra])
    return SymbolView(PositionRecord.from_hash(position) if position else None, parse_price(symbol, price),
                      parse_marketstate(market), rest)


async def read_symbol_rules(redis: Any) -> dict[str, SymbolRules]:
    """The exchange's rules as marketdata last published them (symbol -> rules)."""
    fields = await hgetall(redis, keys.exchange_symbols())
    return {symbol: SymbolRules.from_json(raw) for symbol, raw in fields.items()}


async def read_symbol_rule(redis: Any, symbol: str) -> SymbolRules | None:
    """One symbol's rules as marketdata last published them (one HGET, not the whole list: a per-intent
    read at 580 symbols must not cost 580 JSON decodes); None when the symbol is not listed."""
    raw = await redis.hget(keys.exchange_symbols(), symbol)
    return SymbolRules.from_json(str(raw)) if raw is not None else None


async def read_ess(redis: Redis) -> Ess:
    return parse_ess(await hgetall(redis, keys.ess()))


async def read_account(redis: Redis) -> Account | None:
    """The account as harvest_brain last booked it; None before the first fill."""
    fields = await hgetall(redis, keys.ledger_account())
    return account_from_hash(fields) if fields else None


async def read_ledgers(redis: Redis) -> dict[str, SymbolLedger]:
    """Every symbol's ledger, by symbol."""
    found: dict[str, SymbolLedger] = {}
    async for key in redis.scan_iter(match=keys.position_ledger_pattern(), count=500):
        symbol = keys.tail(str(key), keys.position_ledger)
        if symbol is not None:
            found[symbol] = ledger_from_hash(await hgetall(redis, str(key)))
    return found
