"""A tick crosses an open position's stop → the reduce-only fill in ``execution.result``: apply_layer,
exitbrain and harvest_proposal as real processes on the paper exchange, p50/p99 over ``crossings``,
beside one Redis round trip (PING) measured in the same run.

The loop, in rounds: open a long on each of the crossing symbols at once (entry plans in ``apply.plan``,
as intent_bridge publishes them) and wait until every one is filled and exitbrain's first stop update of
it is settled; then cross the symbols' stops one at a time — a tick 5 % under the entry, below both the
software stop and the exchange's — and wait for the reduce-only fill and for the position and its
protective orders to be gone before the next crossing. So each crossing meets a quiet fleet (no other
crossing or entry in flight), and a round of 10 symbols gives 10 crossings in well under a second or
two; 100 rounds make the 1,000.

The latency is Redis' own clock: the id of the crossing tick's ``market.tick`` entry to the id of the
fill's ``execution.result`` entry (whole milliseconds); beside it the same seen by this process
(sub-millisecond: its XADD sent to the fill read back). Whichever of the two exits comes first is the
fill measured — exitbrain's software stop (``EXIT`` fills, via a close plan) or the paper exchange's
stop order (``STOP`` fills: apply_layer's event loop checks the marks every 0.2 s) — and both are
counted. The order-rate cap is lifted (``apply.orders_per_s``): the benchmark opens and closes far more
positions than a fleet would, and a crossing that waits for a token of the cap is not what is measured.

With ``all_market`` symbols ticking at 1 Hz (one round of ticks a second for every symbol, as marketdata
commits Binance's ``!markPrice@arr@1s``), the same loop runs on 10 of them while exitbrain and
harvest_proposal follow every tick; whether they keep up is read from Redis: the share of samples of
``CLIENT LIST`` in which their ``market.tick`` XREAD is blocked (waiting: nothing left to read).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import redis

from bench.fleet import (
    Book,
    CaughtUp,
    CpuMeter,
    Follower,
    OnRow,
    Ticker,
    emit,
    id_ms,
    install,
    private_redis,
    profiled,
    publish_plans,
    publish_ticks,
    quantile,
    show,
    summary,
    wait_until,
)
from bench.procs import heartbeats_ready, rss_kib, services
from bench.report import Row, header
from bench.universe import ALL_MARKET, long_entry, open_policy, start_price, symbol_names, write_rules
from common import keys
from common.contracts import ExecutionResult
from common.exchange.rules import SymbolRules
from common.streams import Stream

SERVICES = ["apply_layer", "exitbrain", "harvest_proposal"]
#: the crossing tick, under the entry (both stops are within 3 %)
CROSS = Decimal("0.95")
PINGS_PER_CROSSING = 3


def fleet_env(rules_file: Path, symbols: list[str]) -> dict[str, str]:
    return {
        "QT_PAPER__RULES_FILE": str(rules_file), "QT_PAPER__STARTING_BALANCE": "100000000",
        "QT_SYMBOLS": ",".join(symbols), "QT_APPLY__COOLDOWN_S": "0",
        "QT_APPLY__ORDERS_PER_S": "100000", "QT_APPLY__ORDER_BURST": "100000",
    }


def ping_ms(client: redis.Redis) -> float:
    started = time.perf_counter_ns()
    client.ping()
    return (time.perf_counter_ns() - started) / 1e6


def crossings(workdir: Path, *, n_crossing: int = 10, all_market: int = 0, target: int = 1000,
              max_s: float = 240.0, extra_env: dict[str, str] | None = None) -> dict[str, object]:
    """Run the loop until ``target`` crossings (or ``max_s``); the figures and counts."""
    total = max(n_crossing, all_market)
    names = symbol_names(total)
    rules = write_rules(workdir / "rules.json", total)
    crossing = names[:n_crossing]
    prices = {s: start_price(rules[s]) for s in names}
    with private_redis(workdir) as (server, client):
        install(client, rules, open_policy(names, max_open_positions=n_crossing + 5))
        publish_ticks(client, {s: prices[s] for s in crossing})
        with services(SERVICES, {"REDIS_URL": server.url, **fleet_env(workdir / "rules.json", names),
                                 **(extra_env or {})},
                      workdir / "logs") as procs:
            wait_until(lambda: heartbeats_ready(client, SERVICES), 60, "fleet started", interval_s=0.1)
            pids = {name: p.pid for name, p in procs.items()}
            redis_pid = server.process.pid if server.process else 0
            ticker = Ticker(server.url, prices) if all_market else None
            sampler = CaughtUp(server.url, {k: v for k, v in pids.items() if k != "apply_layer"})
            try:
                if ticker:
                    ticker.__enter__()
                with sampler, profiled(pids, f"stop_crossing_{total}"):
                    meter = CpuMeter({**pids, "redis": redis_pid}).start()
                    figures = _loop(client, ticker, crossing, rules, prices, target, max_s)
                    cpu = meter.stop()
            finally:
                if ticker:
                    ticker.__exit__()
            figures.update(cpu_percent=cpu, rss_mib={k: round(rss_kib(v) / 1024, 1) for k, v in pids.items()},
                           caught_up=sampler.share(), caught_up_samples=sampler.samples)
            if ticker:
                figures.update(ticks_published=ticker.ticks, tick_rounds=ticker.rounds,
                               ticker_late_s=round(ticker.late_s, 3),
                               tick_stream_len=client.xlen(keys.stream(Stream.MARKET_TICK)))
    return figures


def _loop(client: redis.Redis, ticker: Ticker | None, crossing: list[str], rules: dict[str, SymbolRules],
          prices: dict[str, Decimal], target: int, max_s: float) -> dict[str, object]:
    book = Book()
    follow = Follower(client, [Stream.APPLY_PLAN, Stream.APPLY_RESULT, Stream.EXECUTION_RESULT])

    def poll() -> None:
        book.take(follow.poll(20))

    by_id: list[float] = []
    seen_here: list[float] = []
    #: where the time goes when exitbrain's close is first: tick → close plan, close plan → fill
    to_plan: list[float] = []
    to_fill: list[float] = []
    slowest: list[tuple[int, str, int | None, int]] = []
    before: list[dict[str, object]] = []
    by_kind: dict[str, list[float]] = {}
    pings: list[float] = [ping_ms(client) for _ in range(200)]
    kinds: dict[str, int] = {}
    no_stop_update = 0
    started = time.monotonic()
    round_no = 0
    open_s: list[float] = []
    while len(by_id) < target and time.monotonic() - started < max_s:
        round_no += 1
        # open one long per crossing symbol, at its start price
        at = {s: prices[s] for s in crossing}
        if ticker:
            for s in crossing:
                ticker.set(s, at[s], client)
        else:
            publish_ticks(client, at)
        plans = {s: long_entry(f"bench-{round_no}-{s}", rules[s], at[s]) for s in crossing}
        t_open = time.monotonic()
        publish_plans(client, list(plans.values()))
        wait_until(lambda plans=plans: all(p.plan_id in book.results for p in plans.values()),  # type: ignore[misc]
                   30, "entries settled", poll)
        failed = [s for s, p in plans.items() if not book.results[p.plan_id].message.executed]  # type: ignore[attr-defined]
        if failed:
            raise RuntimeError(f"entries not executed: {[book.results[plans[s].plan_id].message for s in failed]}")
        try:
            wait_until(lambda plans=plans: all(book.stop_settled(p.plan_id) for p in plans.values()),  # type: ignore[misc]
                       5, "stops updated", poll)
        except TimeoutError:
            no_stop_update += sum(not book.stop_settled(p.plan_id) for p in plans.values())
        open_s.append(time.monotonic() - t_open)
        # cross them one at a time
        for s in crossing:
            plan = plans[s]
            book.take(follow.poll(None))
            if plan.plan_id in book.closes:  # closed before its crossing: not one of ours to time
                early = book.closes[plan.plan_id].message
                assert isinstance(early, ExecutionResult)
                before.append({"symbol": s, "round": round_no, "kind": early.kind.value,
                               "reason": early.reason.value if early.reason else None})
                wait_until(lambda s=s: not client.exists(keys.position(s)), 30, f"{s} flat")  # type: ignore[misc]
                continue
            low = rules[s].round_price(at[s] * CROSS)
            sent = time.perf_counter()
            tick_id = ticker.set(s, low, client) if ticker else publish_ticks(client, {s: low})
            wait_until(lambda plan=plan: plan.plan_id in book.closes, 30, f"{s} closed", poll)  # type: ignore[misc]
            read = time.perf_counter()
            fill = book.closes[plan.plan_id]
            assert isinstance(fill.message, ExecutionResult)
            tick_ms = id_ms(tick_id)
            by_id.append(fill.ms - tick_ms)
            if (close := book.close_plans.get(plan.plan_id)) is not None and close.ms <= fill.ms:
                to_plan.append(close.ms - tick_ms)
                to_fill.append(fill.ms - close.ms)
            slowest.append((fill.ms - tick_ms, fill.message.kind.value,
                            None if close is None else close.ms - tick_ms, round_no))
            seen_here.append((read - sent) * 1000)
            kinds[fill.message.kind.value] = kinds.get(fill.message.kind.value, 0) + 1
            by_kind.setdefault(fill.message.kind.value, []).append(fill.ms - tick_ms)
            wait_until(lambda s=s: not client.exists(keys.position(s)) and  # type: ignore[misc]
                       s not in client.hvals(keys.paper_open_conditionals()), 30, f"{s} flat")
            pings.extend(ping_ms(client) for _ in range(PINGS_PER_CROSSING))
    elapsed = time.monotonic() - started
    third = max(1, len(by_id) // 3)
    return {
        "crossings": len(by_id), "rounds": round_no, "seconds": round(elapsed, 1),
        "symbols_crossing": len(crossing), "latency_ms": summary(by_id),
        "latency_seen_by_bench_ms": {k: round(v, 2) for k, v in summary(seen_here).items()},
        "first_third_p50_ms": quantile(by_id[:third], 0.5), "last_third_p50_ms": quantile(by_id[-third:], 0.5),
        "fill_kinds": kinds, "latency_by_fill_kind_ms": {k: summary(v) for k, v in by_kind.items()},
        "closed_before_crossing": before,
        "exitbrain_tick_to_close_plan_ms": summary(to_plan), "apply_layer_close_plan_to_fill_ms": summary(to_fill),
        "slowest": [{"ms": ms, "kind": kind, "close_plan_after_ms": after, "round": r}
                    for ms, kind, after, r in sorted(slowest, key=lambda t: t[0], reverse=True)[:12]],
        "ping_ms": {k: round(v, 3) for k, v in summary(pings).items()},
        "positions_without_stop_update": no_stop_update,
        "open_round_s": {k: round(v, 3) for k, v in summary(open_s).items()},
    }


def measure(workdir: Path, *, crossings: int = 1000, max_s: float = 240.0, on_row: OnRow | None = None
            ) -> list[Row]:
    """Rows ``stop_crossing_10`` and ``stop_crossing_580``, each on its own Redis and fleet under
    ``workdir``."""
    rows: list[Row] = []
    emit(rows, row_10(workdir / "stop10", crossings, max_s), on_row)
    emit(rows, row_580(workdir / "stop580", crossings, max_s), on_row)
    return rows


def row_10(workdir: Path, target: int = 1000, max_s: float = 240.0) -> Row:
    figures = crossings(workdir, n_crossing=10, target=target, max_s=max_s)
    lat = figures["latency_ms"]
    ping = figures["ping_ms"]
    assert isinstance(lat, dict) and isinstance(ping, dict)
    return Row("stop_crossing_10", "stop crossed → reduce-only fill, 10 symbols, p99", float(lat["p99"]), "ms",
               "Redis PING p99", float(ping["p99"]), "p99 < 10 ms",
               float(lat["p99"]) < 10 and int(figures["crossings"]) >= 1000,  # type: ignore[call-overload]
               figures)


def row_580(workdir: Path, target: int = 1000, max_s: float = 240.0) -> Row:
    figures = crossings(workdir, n_crossing=10, all_market=ALL_MARKET, target=target, max_s=max_s)
    lat = figures["latency_ms"]
    ping = figures["ping_ms"]
    caught = figures["caught_up"]
    assert isinstance(lat, dict) and isinstance(ping, dict) and isinstance(caught, dict)
    no_backlog = all(v is not None and v > 0.2 for v in caught.values()) and \
        float(figures["last_third_p50_ms"]) <= 2 * float(figures["first_third_p50_ms"]) + 5  # type: ignore[arg-type]
    figures["no_backlog"] = no_backlog
    return Row("stop_crossing_580", f"the same, {ALL_MARKET} symbols ticking at 1 Hz, p99", float(lat["p99"]), "ms",
               "Redis PING p99", float(ping["p99"]), "p99 < 25 ms, no backlog",
               float(lat["p99"]) < 25 and no_backlog and int(figures["crossings"]) >= 1000,  # type: ignore[call-overload]
               figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crossings", type=int, default=1000)
    parser.add_argument("--max-s", type=float, default=240.0)
    parser.add_argument("--only", choices=("10", "580"))
    args = parser.parse_args(argv)
    print(header())
    with tempfile.TemporaryDirectory(prefix="qt-bench-") as tmp:
        if args.only != "580":
            show(row_10(Path(tmp) / "stop10", args.crossings, args.max_s))
        if args.only != "10":
            show(row_580(Path(tmp) / "stop580", args.crossings, args.max_s))


if __name__ == "__main__":
    main(sys.argv[1:])
