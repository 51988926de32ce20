"""580 klines close at once → every one decided by trading_bot, every intent bridged by intent_bridge and
every resulting plan settled by apply_layer (``apply.result``), on the paper exchange, as real processes.

The market is written as marketdata writes it (its own :class:`~services.marketdata.publisher.Publisher`
turns each round into the same ops, one MULTI a round): a history of closed klines for every symbol
before the fleet starts (trading_bot seeds its windows from it), rising so that the fallback signal is a
confident BUY everywhere, then one round with every symbol's next closed kline and a tick at its close.
ai_engine is not running (its URL points at a closed port: trading_bot uses the fallback at once). The
policy allows every symbol, with the limits of ``config/policy.toml`` (5 open positions: five entries
go to the exchange, the others are refused by the gate).

The time is from the round's ``market.klines`` entries (Redis' clock) to the later of the last decision
(trading_bot's ``GET /signals``, each record stamped when decided) and the last ``apply.result`` of a
plan made from the round's intents.

``exits_first``: apply_layer alone with its order-rate cap as configured (20 orders/s, bursts of 40):
10 positions open, then 120 entry plans at once and right behind them the 10 positions' full closes.
Each entry costs three orders (market, stop, take-profit), so the cap binds for 18 s; the closes should
not wait for it (the throttle serves exits first). Their time from ``apply.plan`` to ``apply.result``
is the figure, beside the time the entries ahead of them take in all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

from bench.fleet import (
    Book,
    Follower,
    OnRow,
    commit,
    emit,
    id_ms,
    install,
    private_redis,
    profiled,
    publish_plans,
    publish_ticks,
    show,
    summary,
    wait_until,
)
from bench.procs import heartbeats_ready, services
from bench.report import Row, header
from bench.universe import ALL_MARKET, long_entry, open_policy, start_price, symbol_names, write_rules
from common.config import DEFAULT_CONFIG_DIR
from common.contracts import ApplyPlan, ApplyResult, TradeIntent, now_ms
from common.exchange.rules import SymbolRules
from common.klines import Kline, interval_ms, kline_open_time
from common.policy import load_policy_file
from common.streams import Service, Stream
from ops.redis_server import free_port
from services.marketdata.publisher import Batch, Publisher, Tick
from tests.plans import close

BURST_SERVICES = ["trading_bot", "intent_bridge", "apply_layer"]
#: closed klines of history per symbol (the slow EMA needs 21, the ATR 14)
HISTORY = 30
INTERVAL = "1m"
#: each kline closes this fraction above the last (a steady trend: a confident BUY)
DRIFT = Decimal("0.002")


def _kline(symbol: str, open_time: int, close: Decimal, tick: Decimal) -> Kline:
    open_ = close / (1 + DRIFT)
    return Kline(symbol, INTERVAL, open_time, open_, close + 3 * tick, open_ - 3 * tick, close, Decimal("1000"), True)


def _closes(rules: dict[str, SymbolRules], symbols: list[str], n: int) -> dict[str, list[Decimal]]:
    """``n`` rising closes per symbol on its tick grid, ending at its start price."""
    out: dict[str, list[Decimal]] = {}
    for s in symbols:
        r = rules[s]
        last = start_price(r)
        out[s] = [r.round_price(last / (1 + DRIFT) ** (n - 1 - i)) for i in range(n)]
    return out


def signals(port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/signals?limit=10000", timeout=10) as answer:
        return list(json.loads(answer.read())["signals"])


def klines_burst(workdir: Path, n_symbols: int = ALL_MARKET, timeout_s: float = 90.0,
                 extra_env: dict[str, str] | None = None) -> Row:
    symbols = symbol_names(n_symbols)
    rules = write_rules(workdir / "rules.json", n_symbols)
    limits = load_policy_file(DEFAULT_CONFIG_DIR / "policy.toml").limits
    step = interval_ms(INTERVAL)
    first_open = kline_open_time(now_ms(), step) - (HISTORY + 1) * step
    closes = _closes(rules, symbols, HISTORY + 1)
    publisher = Publisher(Service.MARKETDATA, kline_update_ms=0)
    http_port = free_port()
    env = {"QT_PAPER__RULES_FILE": str(workdir / "rules.json"), "QT_SYMBOLS": ",".join(symbols),
           "QT_APPLY__COOLDOWN_S": "0", "QT_HTTP__PORTS__TRADING_BOT": str(http_port),
           "QT_HTTP__AI_ENGINE_URL": f"http://127.0.0.1:{free_port()}", "QT_SIGNAL__RECENT_SIGNALS": "10000",
           "QT_PAPER__STARTING_BALANCE": "100000000", **(extra_env or {})}
    with private_redis(workdir) as (server, client):
        install(client, rules, open_policy(symbols, limits.max_open_positions, limits))
        for k in range(HISTORY):
            batch = Batch(klines=[_kline(s, first_open + k * step, closes[s][k], rules[s].tick_size) for s in symbols])
            durable, latest = publisher.ops(batch)
            commit(client, [*durable, *latest], Service.MARKETDATA)
        with services(BURST_SERVICES, {"REDIS_URL": server.url, **env}, workdir / "logs") as procs:
            wait_until(lambda: heartbeats_ready(client, BURST_SERVICES), 60, "fleet started", interval_s=0.1)
            wait_until(lambda: _answers(http_port), 60, "trading_bot http", interval_s=0.1)
            follow = Follower(client, [Stream.TRADE_INTENT, Stream.APPLY_PLAN, Stream.APPLY_RESULT,
                                       Stream.POLICY_AUDIT])
            opened = first_open + HISTORY * step
            batch = Batch(ticks=[Tick(s, closes[s][HISTORY], closes[s][HISTORY]) for s in symbols],
                          klines=[_kline(s, opened, closes[s][HISTORY], rules[s].tick_size) for s in symbols])
            durable, latest = publisher.ops(batch)
            watch = BurstWatch(follow, http_port, opened, n_symbols)
            with profiled({n: p.pid for n, p in procs.items()}, "klines_burst"):
                replies = commit(client, [*durable, *latest], Service.MARKETDATA)
                burst_ms = id_ms(next(str(r) for r in replies if isinstance(r, str) and "-" in r))
                watch.run(timeout_s)
            logs = {name: p.log(600) for name, p in procs.items() if "Traceback" in p.log(20000)}
    mine = watch.plans()
    results = [watch.book.results[p.plan_id] for p in mine if p.plan_id in watch.book.results]
    decisions: dict[str, int] = {}
    for seen in results:
        assert isinstance(seen.message, ApplyResult)
        key = seen.message.decision.value + (f":{seen.message.error}" if seen.message.error else "")
        decisions[key] = decisions.get(key, 0) + 1
    decided = watch.decided
    last_decision = max((int(str(r["ts"])) for r in decided), default=burst_ms)
    last_result = max((s.ms for s in results), default=burst_ms)
    reasons: dict[str, int] = {}
    for r in decided:
        reasons[str(r.get("reason") or "intent")] = reasons.get(str(r.get("reason") or "intent"), 0) + 1
    elapsed = (max(last_decision, last_result) - burst_ms) / 1000
    complete = len(decided) == n_symbols and len(results) == len(mine)
    intents, audits = watch.intents, watch.audits
    details: dict[str, object] = {
        "klines": n_symbols, "decided": len(decided), "decisions": reasons, "intents": len(intents),
        "refused_by_intent_bridge": audits, "plans": len(mine), "settled": len(results),
        "results": decisions, "last_decision_s": round((last_decision - burst_ms) / 1000, 3),
        "last_result_s": round((last_result - burst_ms) / 1000, 3), "max_open_positions": limits.max_open_positions,
        "ai_engine": "not running (fallback signal)", "settings": extra_env or {},
        **({"tracebacks": logs} if logs else {})}
    return Row("klines_580_burst", f"{n_symbols} klines close at once → all decided and settled", elapsed, "s",
               "", None, "< 2 s", complete and elapsed < 2.0, details)


class BurstWatch:
    """Follows what the fleet makes of one round of klines: intents, refusals, plans and their results,
    and at the end trading_bot's decisions on the round (``GET /signals``)."""

    def __init__(self, follow: Follower, http_port: int, open_time: int, expected: int) -> None:
        self.follow = follow
        self.http_port = http_port
        self.open_time = open_time
        self.expected = expected
        self.intents: dict[str, TradeIntent] = {}
        self.book = Book()
        self.audits = 0
        self.decided: list[dict[str, object]] = []

    def plans(self) -> list[ApplyPlan]:
        return [p for p in self.book.plans.values() if p.intent_id in self.intents]

    def _decisions(self) -> list[dict[str, object]]:
        return [r for r in signals(self.http_port) if r.get("open_time") == self.open_time]

    def run(self, timeout_s: float) -> None:
        """Until every intent is refused or its plan settled and the streams are quiet (2 s: trading_bot
        may still be deciding), then until every kline is decided (or 5 s quiet)."""
        started = last_change = time.monotonic()
        while time.monotonic() - started < timeout_s:
            for name, seen in self.follow.poll(100):
                last_change = time.monotonic()
                if name == Stream.TRADE_INTENT and isinstance(seen.message, TradeIntent):
                    self.intents[seen.message.intent_id] = seen.message
                elif name == Stream.POLICY_AUDIT:
                    self.audits += 1
                else:
                    self.book.take([(name, seen)])
            mine = self.plans()
            settled = all(p.plan_id in self.book.results for p in mine) and \
                len(mine) + self.audits >= len(self.intents)
            quiet = time.monotonic() - last_change
            if settled and quiet > 2.0:
                self.decided = self._decisions()
                if len(self.decided) >= self.expected or quiet > 5.0:
                    return
        self.decided = self._decisions()


def _answers(port: int) -> bool:
    try:
        signals(port)
        return True
    except OSError:
        return False


def exits_first(workdir: Path, entries: int = 120, exits: int = 10, timeout_s: float = 30.0) -> Row:
    """The order-rate cap binding: do the closes behind ``entries`` entry plans wait for them?"""
    n = entries + exits
    symbols = symbol_names(n)
    rules = write_rules(workdir / "rules.json", n)
    prices = {s: start_price(rules[s]) for s in symbols}
    env = {"QT_PAPER__RULES_FILE": str(workdir / "rules.json"), "QT_SYMBOLS": ",".join(symbols),
           "QT_APPLY__COOLDOWN_S": "0", "QT_PAPER__STARTING_BALANCE": "100000000"}
    with private_redis(workdir) as (server, client):
        install(client, rules, open_policy(symbols, n + 10))
        publish_ticks(client, prices)
        with services(["apply_layer"], {"REDIS_URL": server.url, **env}, workdir / "logs") as procs:
            wait_until(lambda: heartbeats_ready(client, ["apply_layer"]), 60, "apply_layer started", interval_s=0.1)
            book = Book()
            follow = Follower(client, [Stream.APPLY_PLAN, Stream.APPLY_RESULT])

            def poll() -> None:
                book.take(follow.poll(50))

            held = [long_entry(f"held-{s}", rules[s], prices[s]) for s in symbols[:exits]]
            publish_plans(client, held)
            wait_until(lambda: all(p.plan_id in book.results for p in held), 30, "positions opened", poll)
            flood = [long_entry(f"flood-{s}", rules[s], prices[s]) for s in symbols[exits:]]
            closes = [close(f"close-{p.symbol}", p.plan_id, symbol=p.symbol, reason="stop_loss") for p in held]
            publish_plans(client, flood)
            sent_ms = id_ms(publish_plans(client, closes, Service.EXITBRAIN))
            try:
                wait_until(lambda: all(c.plan_id in book.results for c in closes), timeout_s, "closes", poll)
            except TimeoutError:
                pass
            settled = [book.results[c.plan_id].ms - sent_ms for c in closes if c.plan_id in book.results]
            flood_done = [book.results[p.plan_id].ms for p in flood if p.plan_id in book.results]
            last_close = max((book.results[c.plan_id].ms for c in closes if c.plan_id in book.results), default=0)
            before = sum(ms <= last_close for ms in flood_done) if last_close else len(flood_done)
            procs["apply_layer"].kill()  # hundreds of entries still wait for the cap: no drain
    all_settled = len(settled) == exits
    worst = max(settled) / 1000 if all_settled else timeout_s
    fifo_s = entries * 3 / 20.0
    details: dict[str, object] = {
        "entries_ahead": entries, "exits": exits, "exits_settled": len(settled),
        "exit_latency_ms": summary(settled), "entries_settled_before_last_exit": before,
        "entries_settled_meanwhile": len(flood_done), "orders_per_s": 20, "order_burst": 40,
        "fifo_estimate_s": fifo_s}
    return Row("klines_580_exits_first", f"closes behind {entries} entries, order cap binding: last close", worst, "s",
               "the entries ahead at the cap", fifo_s, "exits first (< 1 s)", all_settled and worst < 1.0, details)


def measure(workdir: Path, on_row: OnRow | None = None) -> list[Row]:
    """Rows ``klines_580_burst`` and ``klines_580_exits_first``, each on its own Redis and fleet."""
    rows: list[Row] = []
    emit(rows, klines_burst(workdir / "burst"), on_row)
    emit(rows, exits_first(workdir / "exits"), on_row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("burst", "exits"))
    parser.add_argument("--env", action="append", default=[], metavar="QT_X=Y", help="extra fleet setting")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    print(header())
    with tempfile.TemporaryDirectory(prefix="qt-bench-") as tmp:
        if args.only != "exits":
            show(klines_burst(Path(tmp) / "burst", extra_env=extra))
        if args.only != "burst":
            show(exits_first(Path(tmp) / "exits"))


if __name__ == "__main__":
    main(sys.argv[1:])
