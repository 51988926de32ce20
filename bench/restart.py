"""intent_bridge restarted with 10,000 ``trade.intent`` entries waiting: the time from the process's start
to its group having read and acknowledged them all (``XINFO GROUPS``: lag 0, pending 0).

intent_bridge runs once (its group exists, it is caught up), is stopped (SIGTERM), and 10,000 fresh
intents are published as trading_bot publishes them (spread over 50 symbols); then it starts again. The
exchange's rules hash holds the whole USD-M list (580 symbols), as marketdata keeps it whatever symbols
the fleet trades, and the policy allows the 50.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from bench.fleet import OnRow, commit, emit, install, private_redis, profiled, show, wait_until
from bench.procs import FAST, Proc, heartbeats_ready
from bench.report import Row, header
from bench.universe import ALL_MARKET, open_policy, start_price, symbol_names, write_rules
from common import streams
from common.bus.effects import Publish
from common.contracts import TradeIntent
from common.exchange.rules import SymbolRules
from common.ids import hex16
from common.streams import Service, Stream

GROUP = Service.INTENT_BRIDGE


def intents(rules: dict[str, SymbolRules], symbols: list[str], n: int) -> list[TradeIntent]:
    out = []
    for i in range(n):
        r = rules[symbols[i % len(symbols)]]
        price = start_price(r)
        out.append(TradeIntent(
            source=Service.TRADING_BOT, trace_id=hex16(f"rt{i}"), intent_id=hex16(f"ri{i}"), symbol=r.symbol,
            side="BUY", confidence=0.7, entry_price=price, stop_loss=r.round_price(price * Decimal("0.97")),
            take_profit=r.round_price(price * Decimal("1.04")), position_size_usd=Decimal("200"), leverage=10,
            model="fallback-trend-following", atr_pct=0.01, regime="TREND"))
    return out


def group_state(client: redis.Redis) -> dict[str, Any]:
    """The group's row of ``XINFO GROUPS``, with ``lag``: entries after its last delivered one (Redis 6.2,
    the embedded server, has no lag field of its own)."""
    key = streams.get(Stream.TRADE_INTENT).key
    groups: Any = client.xinfo_groups(key)
    row = next((dict(g) for g in groups if str(g["name"]) == GROUP), {})
    if row:
        after: Any = client.xrange(key, min=f"({row['last-delivered-id']}", max="+", count=100_000)
        row["lag"] = len(after)
    return row


def drained(client: redis.Redis) -> bool:
    row = group_state(client)
    return bool(row) and row["lag"] == 0 and int(row["pending"]) == 0


def measure(workdir: Path, n: int = 10_000, timeout_s: float = 60.0, on_row: OnRow | None = None) -> list[Row]:
    """Row ``intent_bridge_restart_10k``."""
    return [emit([], restart_row(workdir, n, timeout_s), on_row)]


def restart_row(workdir: Path, n: int = 10_000, timeout_s: float = 60.0) -> Row:
    names = symbol_names(ALL_MARKET)
    rules = write_rules(workdir / "rules.json", ALL_MARKET)
    traded = names[:50]
    env = {**FAST, "QT_PAPER__RULES_FILE": str(workdir / "rules.json"), "QT_SYMBOLS": ",".join(traded)}
    with private_redis(workdir) as (server, client):
        install(client, rules, open_policy(traded, 50))
        env["REDIS_URL"] = server.url
        first = Proc("services.intent_bridge", env, workdir / "logs" / "intent_bridge.log").start()
        try:
            wait_until(lambda: heartbeats_ready(client, [GROUP]) and bool(group_state(client)), 60,
                       "intent_bridge started", interval_s=0.1)
        finally:
            code = first.stop()
        waiting = intents(rules, traded, n)
        for at in range(0, n, 1000):
            commit(client, [Publish(Stream.TRADE_INTENT, i) for i in waiting[at:at + 1000]], Service.TRADING_BOT)
        before = group_state(client)
        plans_before = client.xlen(streams.get(Stream.APPLY_PLAN).key)
        started = time.monotonic()
        second = Proc("services.intent_bridge", env, workdir / "logs" / "intent_bridge.log").start()
        try:
            ready_s = wait_until(lambda: heartbeats_ready(client, [GROUP]), 60, "restarted", interval_s=0.02)
            done = True
            try:
                with profiled({"intent_bridge": second.pid}, "restart"):
                    wait_until(lambda: drained(client), timeout_s, "drained", interval_s=0.02)
            except TimeoutError:
                done = False
            elapsed = time.monotonic() - started
            after = group_state(client)
            plans = client.xlen(streams.get(Stream.APPLY_PLAN).key) - plans_before
        finally:
            second.stop()
    details: dict[str, object] = {
        "entries": n, "lag_before": int(before.get("lag") or 0), "pending_before": int(before.get("pending", 0)),
        "first_exit_code": code, "ready_s": round(ready_s, 2), "plans_published": plans,
        "lag_after": int(after.get("lag") or 0), "pending_after": int(after.get("pending", 0)),
        "drained": done, "plans_per_s": round(plans / elapsed, 1) if elapsed else None,
        "rules_in_hash": len(rules)}
    return Row("intent_bridge_restart_10k", f"intent_bridge restart, {n:,} intents waiting: drained in", elapsed,
               "s", "", None, "< 5 s", done and elapsed < 5.0, details)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    print(header())
    with tempfile.TemporaryDirectory(prefix="qt-bench-") as tmp:
        show(restart_row(Path(tmp), args.entries, args.timeout_s))


if __name__ == "__main__":
    main(sys.argv[1:])
