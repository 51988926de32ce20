"""The feeds behind ``QT_MARKET_SOURCE``: each yields :class:`~services.marketdata.publisher.Batch`
rounds until ``stop`` is set, and an empty batch at least every second so the loop keeps beating.

- :class:`SyntheticFeed` (``synthetic``): the seeded market of :mod:`.synthetic`, every
  ``tick_interval_ms`` of real time, its clock running ``time_factor`` times faster than the wall
  clock, after a warm-up history of ``backfill_klines`` closed klines; its state is saved in
  ``quantum:marketdata:synthetic`` every second and at stop, and a restart resumes from it (price,
  regime and clock; no second warm-up) instead of replaying the seed's series from its start;
- :class:`ReplayFeed` (``replay:<file>``): a kline file at ``replay_speed``;
- :class:`~services.marketdata.binance_source.BinanceFeed` (``binance``): Binance's websockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import structlog
from redis.asyncio import Redis

from common import keys, streams
from common.backoff import pause
from common.config import ConfigurationError, MarketdataSettings, Settings
from common.contracts import ContractError, MarketKline, decode, now_ms
from common.exchange.rules import SymbolRules, load_rules_file
from common.kline_files import KlineFileError
from common.klines import Kline, interval_ms, kline_open_time
from common.streams import Stream
from services.marketdata.klines import KlineBuilder
from services.marketdata.lockstep import LockstepReplayFeed
from services.marketdata.publisher import Batch, Tick
from services.marketdata.replay import ReplaySource, ReplayTick
from services.marketdata.synthetic import SyntheticMarket, SyntheticParams

log = structlog.get_logger()

#: the longest a feed stays silent: an empty batch keeps the loop's heartbeat going
IDLE_S = 1.0
#: the most events a replay at full speed puts in one round
REPLAY_BATCH = 1_000
#: a symbol with no configured start price starts at this many ticks
DEFAULT_START_TICKS = 10_000
#: how often (real seconds) the synthetic market's state is saved while it runs
SAVE_INTERVAL_S = 1.0


class Feed(Protocol):
    name: str

    def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]: ...




# --- synthetic -------------------------------------------------------------------------------------


def start_prices(symbols: Sequence[str], rules: Mapping[str, SymbolRules],
                 configured: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Each symbol's start price: the configured one on its tick grid, else 10,000 ticks."""
    prices: dict[str, Decimal] = {}
    for symbol in symbols:
        tick = rules[symbol].tick_size
        price = configured.get(symbol)
        prices[symbol] = (rules[symbol].round_price(price) if price is not None else tick * DEFAULT_START_TICKS)
        if prices[symbol] <= 0:
            prices[symbol] = tick
    return prices


def synthetic_origin(now_ms: int, kline_ms: int, warmup_klines: int, last_open_time: int | None) -> int:
    """Where the synthetic clock starts: ``warmup_klines`` klines before now (aligned to the kline),
    but never at or before a kline already published (a restart keeps open times increasing)."""
    origin = kline_open_time(now_ms, kline_ms) - warmup_klines * kline_ms
    if last_open_time is not None:
        origin = max(origin, kline_open_time(last_open_time, kline_ms) + kline_ms)
    return origin


def resume_origin(saved_now: int, kline_ms: int, last_open_time: int | None) -> int:
    """Where a resumed synthetic clock starts: at the saved clock, moved up to the next kline boundary
    (the kline in progress at the stop was published in progress and is not built again) and past any
    kline already published."""
    origin = kline_open_time(saved_now + kline_ms - 1, kline_ms)
    if last_open_time is not None:
        origin = max(origin, kline_open_time(last_open_time, kline_ms) + kline_ms)
    return origin


class SyntheticFeed:
    """The synthetic market for ``symbols`` (tick sizes from ``rules``), on its own clock.

    The model is stepped with the synthetic time elapsed since the start (so the series, the mark
    basis included, depends only on the seed); klines are stamped ``origin + elapsed``. ``saved`` (what
    :meth:`snapshot` gave, from an earlier run) resumes the market and its clock; ``save`` is called
    with a new snapshot every ``save_interval_s`` and when the feed stops.
    """

    name = "synthetic"

    def __init__(self, symbols: Sequence[str], rules: Mapping[str, SymbolRules], md: MarketdataSettings,
                 *, origin_ms: int, saved: Mapping[str, object] | None = None,
                 last_open_time: int | None = None, save: Callable[[str], Awaitable[object]] | None = None,
                 save_interval_s: float = SAVE_INTERVAL_S) -> None:
        unknown = [s for s in symbols if s not in rules]
        if unknown:
            log.warning("synthetic_symbols_without_rules", symbols=unknown)
        self.symbols = [s for s in symbols if s in rules]
        if not self.symbols:
            raise ConfigurationError("symbols", "none of them is in the paper exchange's rules file")
        self.real_interval_s = md.tick_interval_ms / 1000
        self.step_ms = max(1, round(md.tick_interval_ms * md.time_factor))
        self.kline_ms = interval_ms(md.kline_interval)
        self.warmup_klines = md.backfill_klines
        self.origin = origin_ms
        self.elapsed = 0
        self.market = SyntheticMarket(
            start_prices(self.symbols, rules, md.start_prices),
            {s: rules[s].tick_size for s in self.symbols},
            SyntheticParams(seed=md.seed, tick_interval_ms=self.step_ms),
        )
        self.builders = {s: KlineBuilder(s, self.kline_ms) for s in self.symbols}
        self.save = save
        self.save_interval_s = save_interval_s
        #: the symbols that went on from a saved state (empty: a fresh start)
        self.resumed: list[str] = []
        if saved is not None:
            self._resume(saved, last_open_time)

    def _resume(self, saved: Mapping[str, object], last_open_time: int | None) -> None:
        try:
            now, elapsed, market = saved["now"], saved["elapsed"], saved["market"]
            if not (isinstance(now, int) and isinstance(elapsed, int) and isinstance(market, Mapping)):
                raise ValueError("now, elapsed and market of the wrong type")
            self.resumed = self.market.resume(market)
        except (KeyError, ValueError) as e:
            log.warning("synthetic_state_not_resumed", error=str(e))
            return
        start = resume_origin(now, self.kline_ms, last_open_time)
        self.elapsed = elapsed + (start - now)
        self.origin = start - self.elapsed
        self.warmup_klines = 0  # the history is there already
        log.info("synthetic_market_resumed", at=start, symbols=self.resumed)

    @property
    def now(self) -> int:
        """The synthetic clock (epoch ms)."""
        return self.origin + self.elapsed

    def snapshot(self) -> str:
        """The JSON to resume from: the clock, the model time and the market's state."""
        return json.dumps({"now": self.now, "elapsed": self.elapsed, "market": self.market.state()},
                          ensure_ascii=False)

    def step(self) -> Batch:
        """One round: a tick per symbol, the klines it closed and each symbol's current kline."""
        ts = self.now
        batch = Batch()
        for t in self.market.next_ticks(self.elapsed):
            batch.ticks.append(Tick(t.symbol, t.price, t.mark_price))
            batch.klines.extend(self.builders[t.symbol].add(ts, t.price, t.qty))
        for builder in self.builders.values():
            current = builder.current()
            if current is not None:
                batch.klines.append(current)
        self.elapsed += self.step_ms
        return batch

    def warmup(self) -> Batch:
        """The history before the live start: ``warmup_klines`` closed klines per symbol (no ticks)."""
        end = self.warmup_klines * self.kline_ms
        klines: list[Kline] = []
        while self.elapsed < end:
            klines.extend(k for k in self.step().klines if k.closed)
        for builder in self.builders.values():
            klines.extend(builder.advance(self.origin + end))
        klines.sort(key=lambda k: k.open_time)
        return Batch(klines=klines)

    async def _save(self) -> None:
        if self.save is None:
            return
        try:
            await self.save(self.snapshot())
        except Exception as e:  # the market goes on; the next save (or the stop) tries again
            log.warning("synthetic_state_not_saved", error=repr(e))

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        # the generator resumes after a yield once its batch was published: a snapshot taken then
        # describes what was published
        if self.warmup_klines:
            yield self.warmup()
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        save_at = loop.time()
        try:
            while not stop.is_set():
                yield self.step()
                if loop.time() >= save_at:
                    await self._save()
                    save_at = loop.time() + self.save_interval_s
                next_at += self.real_interval_s
                delay = next_at - loop.time()
                if delay < -10 * self.real_interval_s:  # far behind (a stall): resume the pace, no burst
                    next_at = loop.time()
                if await pause(stop, delay):
                    return
        finally:
            if self.elapsed:
                await self._save()


# --- replay ----------------------------------------------------------------------------------------


class ReplayFeed:
    """A kline file replayed at its speed: each kline's four ticks, then the closed kline."""

    name = "replay"

    def __init__(self, source: ReplaySource) -> None:
        self.source = source
        self.finished = False

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        batch, due = Batch(), 0
        for offset, event in self.source.events():
            if (batch and offset != due) or len(batch.ticks) + len(batch.klines) >= REPLAY_BATCH:
                yield batch
                batch = Batch()
            if not batch:
                due = offset
                # wait for the event's time, beating at least every IDLE_S
                while (wait := start + offset / 1000 - loop.time()) > 0:
                    if await pause(stop, min(wait, IDLE_S)):
                        return
                    if wait > IDLE_S:
                        yield Batch()
            if stop.is_set():
                return
            if isinstance(event, ReplayTick):
                batch.ticks.append(Tick(event.symbol, event.price, event.price))
            else:
                batch.klines.append(event)
        if batch:
            yield batch
        self.finished = True
        log.info("replay_finished", file=str(self.source.path), klines=len(self.source.klines))
        while not await pause(stop, IDLE_S):
            yield Batch()


def replay_feed(settings: Settings, redis: Redis | None = None) -> Feed:
    """The replay of ``replay:<file>`` (in lockstep with the fleet when ``replay_lockstep``, which needs
    ``redis``); a missing or malformed file is a configuration error."""
    md = settings.marketdata
    path = Path(settings.market_source.removeprefix("replay:"))
    try:
        source = ReplaySource(path, md.replay_symbol, md.replay_interval, md.replay_speed)
    except KlineFileError as e:
        raise ConfigurationError("market_source", str(e)) from e
    if md.replay_lockstep and redis is not None:
        return LockstepReplayFeed(source, redis)
    return ReplayFeed(source)


# --- choosing the feed -----------------------------------------------------------------------------


async def last_kline_open_time(redis: Redis) -> int | None:
    """The open time of the newest entry of ``market.klines`` (None when the stream is empty)."""
    entries = await redis.xrevrange(streams.get(Stream.MARKET_KLINES).key, count=1)
    for _, fields in entries or []:
        try:
            return decode(MarketKline, fields or {}).open_time
        except ContractError:
            return None
    return None


async def build_feed(redis: Redis, settings: Settings) -> Feed:
    """The feed ``settings.market_source`` names. A bad source setting is a ConfigurationError."""
    source = settings.market_source
    if source.startswith("replay:"):
        return replay_feed(settings, redis)
    if source == "binance":
        from services.marketdata.binance_source import BinanceFeed

        return BinanceFeed(settings, settings.symbols)
    md = settings.marketdata
    path = settings.config_file(settings.paper.rules_file)
    try:
        rules = load_rules_file(path)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigurationError("paper.rules_file", f"cannot read {path}: {e}") from e
    kline_ms = interval_ms(md.kline_interval)
    last_open = await last_kline_open_time(redis)
    origin = synthetic_origin(now_ms(), kline_ms, md.backfill_klines, last_open)
    key = keys.synthetic_market()
    raw = await redis.get(key)
    saved = None
    if raw:
        try:
            loaded = json.loads(raw)
            saved = loaded if isinstance(loaded, dict) else None
        except ValueError as e:
            log.warning("synthetic_state_not_resumed", error=f"unreadable {key}: {e}")

    async def save(snapshot: str) -> None:
        await redis.set(key, snapshot)

    return SyntheticFeed(settings.symbols, rules, md, origin_ms=origin, saved=saved, last_open_time=last_open,
                         save=save)
