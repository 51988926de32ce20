"""marketdata on Binance's market streams for the whole USD-M list (580 symbols), from a local websocket
server sending Binance's message shapes: CPU of one core over ``seconds``.

The server answers whatever marketdata subscribes to on its combined stream (``/market/stream?streams=``,
events wrapped as ``{"stream", "data"}``):

- ``!markPrice@arr@1s`` — every symbol's ``markPriceUpdate`` in one array message, every second
  (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Mark-Price-Stream-for-All-market);
- ``<symbol>@markPrice@1s`` — one ``markPriceUpdate`` per symbol every second
  (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Mark-Price-Stream);
- ``<symbol>@kline_<interval>`` — the kline in progress every 250 ms, its closing update (``"x": true``)
  at the end of its interval
  (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Kline-Candlestick-Streams).
  250 ms is Binance's top rate ("if existing": a symbol without trades sends less), so this is the busy
  market. The first kline closes ``first_close_s`` after the connection (later ones every interval), so a
  close of every symbol falls inside the measured window.

Binance allows 200 streams per connection
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams); the
streams marketdata asks for on each connection are counted in the row's details. REST backfill is off
(``backfill_klines = 0``): this row is the live load. The paper exchange's rules file names the 580
symbols (``QT_PAPER__RULES_FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import websockets.http11
from websockets.asyncio.server import ServerConnection, serve

from bench.fleet import CpuMeter, OnRow, emit, private_redis, profiled, show, wait_until
from bench.procs import heartbeats_ready, rss_kib, services
from bench.report import Row, header
from bench.universe import ALL_MARKET, start_price, symbol_names, write_rules
from common import keys
from common.streams import Stream
from ops.redis_server import free_port

#: marketdata's combined-stream URL names every stream in its query: far more than an HTTP server's usual
#: 8 KiB request line for 580 symbols (Binance answers such a request its own way; here it is accepted)
websockets.http11.MAX_LINE_LENGTH = 1 << 20

KLINE_UPDATE_S = 0.25
MARK_PERIOD_S = 1.0
INTERVAL_MS = 60_000


@dataclass
class Market:
    """Each symbol's price walk and kline in progress (the server's whole market). The first kline lasts
    ``span_s``, every later one the interval."""

    prices: dict[str, float]
    span_s: float
    opened_at: float = field(default_factory=time.monotonic)
    open_time: int = field(default_factory=lambda: (int(time.time() * 1000) // INTERVAL_MS) * INTERVAL_MS)
    klines: dict[str, list[float]] = field(default_factory=dict)  # symbol -> [open, high, low, close]
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def __post_init__(self) -> None:
        self.klines = {s: [p, p, p, p] for s, p in self.prices.items()}

    def step(self) -> None:
        for s, p in self.prices.items():
            p *= 1 + self.rng.gauss(0, 0.0004)
            self.prices[s] = p
            k = self.klines[s]
            k[1], k[2], k[3] = max(k[1], p), min(k[2], p), p

    def due_close(self) -> bool:
        return time.monotonic() - self.opened_at >= self.span_s

    def roll(self) -> None:
        self.open_time += INTERVAL_MS
        self.opened_at = time.monotonic()
        self.span_s = INTERVAL_MS / 1000
        self.klines = {s: [p, p, p, p] for s, p in self.prices.items()}


def _num(x: float) -> str:
    return f"{x:.6g}"


def mark_event(symbol: str, price: float, now: int) -> dict[str, object]:
    p = _num(price)
    return {"e": "markPriceUpdate", "E": now, "s": symbol, "p": p, "P": p, "i": p, "r": "0.00010000",
            "T": (now // 28_800_000 + 1) * 28_800_000}


def kline_event(symbol: str, k: list[float], open_time: int, now: int, closed: bool) -> dict[str, object]:
    o, h, low, c = (_num(v) for v in k)
    return {"e": "kline", "E": now, "s": symbol, "k": {
        "t": open_time, "T": open_time + INTERVAL_MS - 1, "s": symbol, "i": "1m", "f": 1, "L": 2, "o": o, "c": c,
        "h": h, "l": low, "v": "1000", "n": 2, "x": closed, "q": "1", "V": "1", "Q": "1", "B": "0"}}


class BinanceLikeServer:
    """The websocket server, in a thread with its own event loop; counts what it sent and what it was
    asked for."""

    def __init__(self, prices: dict[str, Decimal], first_close_s: float) -> None:
        self.market = Market({s: float(p) for s, p in prices.items()}, first_close_s)
        self.port = free_port()
        self.connections: list[dict[str, int]] = []
        self.sent = {"mark_messages": 0, "mark_events": 0, "kline_events": 0, "closed_klines": 0}
        self.connected = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="binance-ws", daemon=True)
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> BinanceLikeServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with serve(self._handler, "127.0.0.1", self.port, max_size=None, compression=None):
            self._ready.set()
            await self._stop.wait()

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        names = parse_qs(urlparse(ws.request.path).query).get("streams", [""])[0].split("/")
        arr = "!markPrice@arr@1s" in names
        marks = {n.split("@", 1)[0].upper() for n in names if n.endswith("@markPrice@1s") and not n.startswith("!")}
        klines = {n.split("@", 1)[0].upper() for n in names if "@kline_" in n}
        self.connections.append({"streams": len(names), "all_market_marks": int(arr), "symbol_marks": len(marks),
                                 "klines": len(klines), "request_line_bytes": len(ws.request.path)})
        self.connected.set()
        market = self.market
        next_mark = time.monotonic()
        assert self._stop is not None
        try:
            while not self._stop.is_set():
                market.step()
                now = int(time.time() * 1000)
                if time.monotonic() >= next_mark:
                    next_mark += MARK_PERIOD_S
                    if arr:
                        data = [mark_event(s, p, now) for s, p in market.prices.items()]
                        await ws.send(json.dumps({"stream": "!markPrice@arr@1s", "data": data}))
                        self.sent["mark_messages"] += 1
                        self.sent["mark_events"] += len(data)
                    for s in marks:
                        await ws.send(json.dumps({"stream": f"{s.lower()}@markPrice@1s",
                                                  "data": mark_event(s, market.prices[s], now)}))
                        self.sent["mark_messages"] += 1
                        self.sent["mark_events"] += 1
                closing = market.due_close()
                for s in klines:
                    await ws.send(json.dumps({"stream": f"{s.lower()}@kline_1m", "data": kline_event(
                        s, market.klines[s], market.open_time, now, closing)}))
                self.sent["kline_events"] += len(klines)
                if closing:
                    self.sent["closed_klines"] += len(klines)
                    market.roll()
                await asyncio.sleep(KLINE_UPDATE_S)
        except websockets.ConnectionClosed:
            return


def measure(workdir: Path, seconds: float = 35.0, on_row: OnRow | None = None) -> list[Row]:
    """Row ``marketdata_allmarket_cpu``."""
    return [emit([], cpu_row(workdir, seconds=seconds), on_row)]


def cpu_row(workdir: Path, n_symbols: int = ALL_MARKET, seconds: float = 35.0) -> Row:
    """marketdata's CPU over ``seconds`` once its websocket is up."""
    symbols = symbol_names(n_symbols)
    rules = write_rules(workdir / "rules.json", n_symbols)
    prices = {s: start_price(rules[s]) for s in symbols}
    warm_s = 3.0
    with private_redis(workdir) as (server, client), BinanceLikeServer(prices, warm_s + seconds / 3) as ws:
        env = {"REDIS_URL": server.url, "QT_MARKET_SOURCE": "binance", "QT_SYMBOLS": ",".join(symbols),
               "QT_PAPER__RULES_FILE": str(workdir / "rules.json"), "QT_MARKETDATA__BINANCE_WS_URL": ws.url,
               "QT_MARKETDATA__BACKFILL_KLINES": "0", "QT_BINANCE__BASE_URL": f"http://127.0.0.1:{free_port()}"}
        with services(["marketdata"], env, workdir / "logs") as procs:
            proc = procs["marketdata"]
            wait_until(lambda: heartbeats_ready(client, ["marketdata"]), 60, "marketdata started", interval_s=0.1)
            wait_until(ws.connected.is_set, 60, "marketdata connected", interval_s=0.1)
            time.sleep(warm_s)  # the first messages in: the window measures the steady stream
            ticks_before = client.xlen(keys.stream(Stream.MARKET_TICK))
            meter = CpuMeter({"marketdata": proc.pid, "redis": server.process.pid if server.process else 0}).start()
            sent_before = dict(ws.sent)
            with profiled({"marketdata": proc.pid}, "marketdata_ws"):
                time.sleep(seconds)
            cpu = meter.stop()
            sent = {k: v - sent_before[k] for k, v in ws.sent.items()}
            rss = rss_kib(proc.pid)
            published = {"ticks": client.xlen(keys.stream(Stream.MARKET_TICK)) - ticks_before,
                         "klines_stream_len": client.xlen(keys.stream(Stream.MARKET_KLINES)),
                         "marketstates_stream_len": client.xlen(keys.stream(Stream.MARKETSTATE))}
            bad = proc.log(200_000).count("binance_ws_bad_message")
    percent = cpu["marketdata"]
    details: dict[str, object] = {
        "symbols": n_symbols, "seconds": seconds, "cpu_percent": cpu, "sent_in_window": sent,
        "published_in_window": published, "connections": ws.connections, "bad_messages_logged": bad,
        "rss_mib": round(rss / 1024, 1), "kline_update_s": KLINE_UPDATE_S,
        "binance_streams_per_connection_max": 200}
    return Row("marketdata_allmarket_cpu", f"marketdata, {n_symbols} mark prices/s + klines (local ws)", percent,
               "% core", "", None, "< 10 % of one core", percent < 10.0, details)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.marketdata_ws", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=35.0)
    args = parser.parse_args(argv)
    print(header())
    with tempfile.TemporaryDirectory(prefix="qt-bench-") as tmp:
        show(cpu_row(Path(tmp), seconds=args.seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
