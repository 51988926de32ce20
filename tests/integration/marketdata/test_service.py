"""``python -m services.marketdata`` as a real process over a real Redis (synthetic and replay)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from common import keys, streams
from common.contracts import MarketKline, MarketState, MarketTick, decode, now_ms
from common.exchange.rules import SymbolRules, load_rules_file
from common.market import parse_price
from common.maths.marketstate import batch_market_state
from common.streams import Stream
from tests.helpers import poll_sync
from tests.integration.processes import REPO, Proc

D = Decimal
SYMBOLS = "BTCUSDT,币安人生USDT"
#: 50 ms rounds of 10 s synthetic time: a 1m kline closes every 300 ms of real time
FAST = {
    "QT_SYMBOLS": SYMBOLS, "QT_MARKETDATA__TICK_INTERVAL_MS": "50", "QT_MARKETDATA__TIME_FACTOR": "200",
    "QT_MARKETDATA__BACKFILL_KLINES": "45", "QT_MARKETDATA__KLINE_UPDATE_MS": "100",
    "QT_RUNTIME__METRICS_PORTS": '{"marketdata": 0}', "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5",
}
MIN = 60_000


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def _entries(r: redis.Redis, stream: str, after: str = "-") -> list[tuple[str, dict[str, str]]]:
    entries = r.xrange(streams.get(stream).key, min=after) or []
    return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in entries]


def _start(redis_url: str, log: Path, **env: str) -> Proc:
    return Proc(["-m", "services.marketdata"], {"REDIS_URL": redis_url, **FAST, **env}, log).start()


def _stop(proc: Proc) -> None:
    code = proc.terminate()
    assert code == 0, proc.log()[-3000:]


def _closed(r: redis.Redis, after: str = "-") -> list[MarketKline]:
    klines = [decode(MarketKline, f) for _, f in _entries(r, Stream.MARKET_KLINES, after)]
    return [k for k in klines if k.closed]


def test_synthetic_source_publishes_ticks_klines_state_and_symbol_rules(redis_url: str, tmp_path: Path) -> None:
    """Synthetic market: valid ticks, closed and in-progress klines and market states in their
    streams, a fresh price hash and the marketstate hash per symbol (a non-ASCII one included), the
    paper rules in quantum:exchange:symbols; SIGTERM exits 0."""
    r = _client(redis_url)
    proc = _start(redis_url, tmp_path / "md.log")
    try:
        # warm-up history (45 klines per symbol) plus at least 5 live klines each
        poll_sync(lambda: len(_closed(r)) >= 2 * 50, timeout_s=30)
        ticks = [decode(MarketTick, f) for _, f in _entries(r, Stream.MARKET_TICK)]
        klines = [decode(MarketKline, f) for _, f in _entries(r, Stream.MARKET_KLINES)]
        states = [decode(MarketState, f) for _, f in _entries(r, Stream.MARKETSTATE)]
        prices = {s: parse_price(s, r.hgetall(keys.market_price(s))) for s in SYMBOLS.split(",")}
        read_at = now_ms()
        state_hashes = {s: decode(MarketState, r.hgetall(keys.marketstate(s))) for s in SYMBOLS.split(",")}
        rules = {s: SymbolRules.from_json(v) for s, v in r.hgetall(keys.exchange_symbols()).items()}
    finally:
        _stop(proc)

    assert {t.symbol for t in ticks} == {"BTCUSDT", "币安人生USDT"}
    assert all(t.source == "marketdata" and len(t.trace_id) == 16 for t in ticks)
    btc = [t.price for t in ticks if t.symbol == "BTCUSDT"]
    assert D("50000") < btc[0] < D("70000") and len(set(btc)) > 3  # starts near 60000 and moves
    assert all(t.price % D("0.1") == 0 for t in ticks if t.symbol == "BTCUSDT")  # on the tick grid
    for symbol in ("BTCUSDT", "币安人生USDT"):
        closed = [k for k in klines if k.symbol == symbol and k.closed]
        opens = [k.open_time for k in closed]
        assert opens == list(range(opens[0], opens[0] + MIN * len(opens), MIN))  # every kline, in order
        assert all(k.interval == "1m" for k in closed)
        assert any(k.symbol == symbol and not k.closed for k in klines)  # in-progress updates too
        # window 40: a state for every closed kline from the 40th on, each written to the hash
        assert len([s for s in states if s.symbol == symbol]) == len(closed) - 39
        assert state_hashes[symbol].regime in ("TREND", "MEAN_REVERSION", "CHOP")
        price = prices[symbol]
        assert price is not None and read_at - price.ts < 2_000  # fresh
        last_tick = [t for t in ticks if t.symbol == symbol][-1]
        assert price.price > 0 and price.mark_price > 0
        assert abs(price.price - last_tick.price) / last_tick.price < D("0.05")
    expected = load_rules_file(REPO / "config" / "paper_symbols.json")
    assert rules == expected and "币安人生USDT" in rules
    assert rules["币安人生USDT"].tick_size == D("0.0001")


def _first_ticks(redis_url: str, log: Path, count: int, **env: str) -> tuple[list[tuple[str, D, D]], list[int]]:
    r = _client(redis_url)
    last = r.xrevrange(streams.get(Stream.MARKET_TICK).key, count=1)
    after = f"({last[0][0]!s}" if last else "-"
    proc = _start(redis_url, log, **env)
    try:
        poll_sync(lambda: len(_entries(r, Stream.MARKET_TICK, after)) >= count, timeout_s=20)
    finally:
        _stop(proc)
    ticks = [decode(MarketTick, f) for _, f in _entries(r, Stream.MARKET_TICK, after)][:count]
    return [(t.symbol, t.price, t.mark_price) for t in ticks], [k.open_time for k in _closed(r)]


def test_same_seed_gives_the_same_ticks_and_restarts_keep_open_times_increasing(
        redis_url: str, tmp_path: Path) -> None:
    """Two fresh runs with one seed publish the same first 40 ticks (prices and marks); another seed
    differs; each restart's klines open after the last one already published. (Fresh: the saved market
    state is deleted in between, else a restart resumes it — tests/integration/marketdata/
    test_synthetic_resume.py.)"""
    first, opens_1 = _first_ticks(redis_url, tmp_path / "a.log", 40, QT_MARKETDATA__SEED="7")
    _client(redis_url).delete(keys.synthetic_market())
    second, opens_2 = _first_ticks(redis_url, tmp_path / "b.log", 40, QT_MARKETDATA__SEED="7")
    other, _ = _first_ticks(redis_url, tmp_path / "c.log", 40, QT_MARKETDATA__SEED="8")
    assert first == second
    assert len({p for _, p, _ in first}) > 4
    assert other != first
    btc_opens = opens_2[len(opens_1):]
    assert btc_opens and min(btc_opens) > max(opens_1)


def _kline_file(path: Path, count: int) -> list[list[Any]]:
    """A Binance 12-column kline file of ``count`` 5m XRPUSDT klines, gently trending."""
    t0, step = 1_700_000_100_000 - 1_700_000_100_000 % 300_000, 300_000
    rows: list[list[Any]] = []
    price = D("0.6000")
    for i in range(count):
        o = price
        c = o + D("0.0007") * (1 if i % 3 else -1)
        h, low = max(o, c) + D("0.0003"), min(o, c) - D("0.0002")
        rows.append([t0 + i * step, str(o), str(h), str(low), str(c), str(1000 + i), t0 + (i + 1) * step - 1,
                     "600.5", 42, "500", "300.2", "0"])
        price = c
    path.write_text(json.dumps(rows))
    return rows


def test_replay_publishes_exactly_the_files_closed_klines_in_order(redis_url: str, tmp_path: Path) -> None:
    """replay:<file> at full speed: market.klines holds exactly the file's klines, in order and
    closed; four ticks per kline; a market state from the 40th kline on, the last equal to a batch
    recomputation over the file."""
    rows = _kline_file(tmp_path / "xrp-5m.json", 50)
    r = _client(redis_url)
    proc = _start(redis_url, tmp_path / "replay.log", QT_MARKET_SOURCE=f"replay:{tmp_path / 'xrp-5m.json'}",
                  QT_MARKETDATA__REPLAY_SPEED="0", QT_MARKETDATA__REPLAY_SYMBOL="XRPUSDT",
                  QT_MARKETDATA__REPLAY_INTERVAL="5m")
    try:
        poll_sync(lambda: len(_entries(r, Stream.MARKETSTATE)) >= 11, timeout_s=20)
        poll_sync(lambda: "replay_finished" in proc.log(), timeout_s=10)
        klines = [decode(MarketKline, f) for _, f in _entries(r, Stream.MARKET_KLINES)]
        ticks = [decode(MarketTick, f) for _, f in _entries(r, Stream.MARKET_TICK)]
        states = [decode(MarketState, f) for _, f in _entries(r, Stream.MARKETSTATE)]
        price = parse_price("XRPUSDT", r.hgetall(keys.market_price("XRPUSDT")))
    finally:
        _stop(proc)
    got = [(k.open_time, k.open, k.high, k.low, k.close, k.volume, k.closed, k.interval) for k in klines]
    want = [(row[0], D(row[1]), D(row[2]), D(row[3]), D(row[4]), D(row[5]), True, "5m") for row in rows]
    assert got == want
    assert len(ticks) == 4 * len(rows) and ticks[-1].price == D(rows[-1][4])
    assert price is not None and price.price == D(rows[-1][4])
    assert len(states) == 11
    ref = batch_market_state([(float(x[1]), float(x[2]), float(x[3]), float(x[4])) for x in rows])
    assert ref is not None
    assert abs(states[-1].sigma - ref.sigma) < 1e-12 and states[-1].regime == ref.regime
    assert abs(states[-1].atr_pct - ref.atr_pct) < 1e-12
