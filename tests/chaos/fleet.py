"""The whole fleet through faults: every service SIGKILLed and restarted, Redis SIGKILLed and restarted on
its AOF, the exchange failing, poison on every grouped stream — then quiesce and check the money.

One run is :func:`chaos_run`: ten services and a standby apply_layer as real processes on a Redis of the
run's own, on the paper exchange or on Binance through python-binance against the fake Binance server
(``QT_EXCHANGE=binance-testnet``, the base URL pointed at it). The faults come at random times from a
seed that is printed. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from common import keys, streams
from common.contracts import (
    Action,
    ApplyPlan,
    ApplyResult,
    ContractError,
    ExecutionResult,
    ExitReason,
    Message,
    PlanStep,
    TradeClosed,
    decode,
    encode,
    new_trace_id,
)
from common.exchange.paper import PaperExchange
from common.governance import flatten_plans, reset, trip
from common.ids import exit_plan_id
from common.positions import PositionRecord
from common.streams import Service, Stream
from ops.redis_server import EmbeddedRedis, free_port
from tests.chaos import invariants as inv
from tests.fakes.fake_binance import FakeBinanceServer, start_fake_binance
from tests.helpers import fast_settings
from tests.integration.processes import Proc

M = TypeVar("M", bound=Message)
SERVICES = ("marketdata", "ai_engine", "trading_bot", "intent_bridge", "governor", "apply_layer", "exitbrain",
            "harvest_proposal", "harvest_brain", "position_monitor")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
#: the Binance credentials of a run: distinctive, so that a leak of them anywhere is found
API_KEY = "chaosKEY7f3a9c1e5b2d8046aa11"
API_SECRET = "chaosSECRET4e8b2f6a9d1c3057bb22"
ORDER_PATHS = (("/fapi/v1/order", "POST"), ("/fapi/v1/algoOrder", "POST"), ("/fapi/v1/order", "GET"),
               ("/fapi/v1/algoOrder", "DELETE"))

#: a market and a fleet fast enough for many entries and exits of every kind in a minute
FLEET_ENV = {
    "QT_SYMBOLS": ",".join(SYMBOLS),
    "QT_BUS__BLOCK_MS": "100", "QT_BUS__CLAIM_INTERVAL_MS": "300", "QT_BUS__CLAIM_IDLE_MS": "3000",
    "QT_BUS__RECONNECT_MAX_MS": "1000", "QT_BUS__RETRY_MAX_MS": "1000",
    "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5", "QT_RUNTIME__HEARTBEAT_TTL_S": "3",
    "QT_EXIT__EVALUATE_INTERVAL_S": "0.2", "QT_EXIT__PNL_INTERVAL_S": "2", "QT_EXIT__CLOSE_RETRY_S": "8",
    # the demo profile's exit levels (config/demo.toml): positions reach the ladder and trail within minutes
    "QT_EXIT__MAX_HOLD_S": "120", "QT_EXIT__KILL_AGE_HORIZON_S": "120", "QT_SIGNAL__MIN_SL_FRAC": "0.004",
    "QT_EXIT__TRAILING_CALLBACK_FRAC": "0.003",
    "QT_MONITOR__SNAPSHOT_INTERVAL_S": "1", "QT_MONITOR__RECONCILE_INTERVAL_S": "3",
    "QT_GOVERNOR__RISK_CHECK_INTERVAL_S": "1", "QT_GOVERNOR__POLICY_CHECK_INTERVAL_S": "2",
    "QT_APPLY__LEASE_TTL_MS": "3000", "QT_APPLY__SETTLE_INTERVAL_S": "3", "QT_APPLY__COOLDOWN_S": "4",
    "QT_APPLY__ENTRY_MAX_MOVE_FRAC": "0.05",
    "QT_SIGNAL__MIN_CONFIDENCE": "0.5", "QT_SIGNAL__REPEAT_AFTER_KLINES": "3", "QT_SIGNAL__AI_TIMEOUT_MS": "100",
    "QT_MARKETDATA__TIME_FACTOR": "60", "QT_MARKETDATA__TICK_INTERVAL_MS": "200",
    "QT_MARKETDATA__BACKFILL_KLINES": "60",
    "QT_PAPER__MAX_PRICE_AGE_MS": "86400000",
    "QT_BINANCE__TIMEOUT_S": "2", "QT_BINANCE__MAX_RETRIES": "3", "QT_BINANCE__BACKOFF_MAX_MS": "1000",
    "QT_BINANCE__POLL_INTERVAL_S": "1",
}


@dataclass
class Figures:
    """What a run did, printed with its result."""

    seed: int
    exchange: str
    seconds: float
    kills: Counter[str] = field(default_factory=Counter)
    redis_kills: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    poison: Counter[str] = field(default_factory=Counter)
    plans: int = 0
    trades: Counter[str] = field(default_factory=Counter)
    #: reduce-only fills by exit reason (partial harvests and stop moves show here, not in trade.closed)
    exits: Counter[str] = field(default_factory=Counter)
    checks: list[inv.Check] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.checks)

    def report(self) -> str:
        lines = [f"fleet chaos: exchange={self.exchange} seed={self.seed} seconds={self.seconds:.0f}",
                 f"  kills per service: {dict(sorted(self.kills.items()))}",
                 f"  redis kills: {self.redis_kills}",
                 f"  exchange faults: {dict(sorted(self.faults.items()))}",
                 f"  poison injected: {dict(sorted(self.poison.items()))}",
                 f"  plans: {self.plans}  closed trades by reason: {dict(sorted(self.trades.items()))}",
                 f"  exit fills by reason: {dict(sorted(self.exits.items()))}"]
        lines += ["  " + c.line() for c in self.checks]
        return "\n".join(lines)


class Fleet:
    """The processes of a run, restarted when we kill them; a death we did not cause is recorded."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: dict[str, Proc] = {}
        self.killed: set[str] = set()
        self.unexpected: defaultdict[str, list[int]] = defaultdict(list)
        self.due: dict[str, float] = {}
        #: the HTTP answers and metrics read before the fleet was stopped (for the secrets check)
        self.scraped: dict[str, str] = {}

    def start(self, name: str) -> None:
        module, _, instance = name.partition("#")
        env = {**self.env, **({"QT_INSTANCE": instance} if instance else {})}
        log = self.workdir / f"{name.replace('#', '-')}.log"
        self.procs[name] = Proc(["-m", f"services.{module}"], env, log).start()

    def kill(self, name: str, restart_in_s: float) -> None:
        proc = self.procs[name]
        if proc.alive:
            self.killed.add(name)
            proc.kill()
            self.due[name] = time.monotonic() + restart_in_s

    def tend(self) -> None:
        """Restart what is due; note a process that died without being killed (and restart it)."""
        now = time.monotonic()
        for name, proc in self.procs.items():
            if proc.alive:
                continue
            if name in self.killed:
                if now >= self.due.get(name, 0.0):
                    self.killed.discard(name)
                    self.start(name)
                continue
            assert proc.popen is not None
            self.unexpected[name].append(proc.popen.returncode)
            self.start(name)

    def stop(self, names: list[str] | None = None) -> dict[str, int]:
        codes: dict[str, int] = {}
        for name in names or list(self.procs):
            proc = self.procs[name]
            if proc.alive and proc.popen is not None:
                proc.popen.send_signal(15)
        for name in names or list(self.procs):  # one SIGTERM each (as systemd sends), then wait
            popen = self.procs[name].popen
            assert popen is not None
            codes[name] = popen.wait(40)
        return codes

    def logs(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for path in sorted(self.workdir.glob("*.log")):
            found[path.name] = path.read_text(errors="replace")
        return found


def _grouped() -> list[streams.StreamSpec]:
    return [s for s in streams.STREAMS.values() if s.groups and not s.dead_letter_of]


def inject_poison(client: redis.Redis, rng: random.Random, injected: defaultdict[str, set[str]],
                  figures: Figures) -> None:
    """A malformed entry and an oversized one on a grouped stream: both must end in its DLQ."""
    spec = rng.choice(_grouped())
    if rng.random() < 0.5:
        fields = {"v": "1", "garbage": "x" * rng.randint(1, 50)}
        kind = "malformed"
    else:
        fields = {"v": "1", "ts": "1", "source": "chaos", "trace_id": "0" * 16, "blob": "x" * 300_000}
        kind = "oversized"
    entry_id = str(client.xadd(spec.key, fields))  # type: ignore[arg-type]
    injected[spec.dlq.name].add(entry_id)
    figures.poison[f"{spec.name}:{kind}"] += 1


def manual_close(client: redis.Redis, rng: random.Random) -> bool:
    """What ``qt close SYMBOL`` publishes, for a random open position."""
    held = [PositionRecord.from_hash(client.hgetall(keys.position(s))) for s in SYMBOLS
            if client.exists(keys.position(s))]
    if not held:
        return False
    p = rng.choice(held)
    plan_id = exit_plan_id(p.plan_id, ExitReason.MANUAL, 0)
    plan = ApplyPlan(source=Service.QT, trace_id=new_trace_id(), plan_id=plan_id, symbol=p.symbol,
                     action=Action.FULL_CLOSE_PROPOSED, position_plan_id=p.plan_id, reason=ExitReason.MANUAL,
                     steps=[PlanStep(step="CLOSE_FULL", pct=100.0)])
    client.xadd(keys.stream(Stream.APPLY_PLAN), encode(plan))  # type: ignore[arg-type]
    return True


def flatten(url: str) -> None:
    """``qt ess trip --flatten`` then ``qt ess reset``: every position closed by ess_flatten."""

    async def go() -> None:
        r = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            trace = new_trace_id()
            await trip(r, "chaos drill", by="chaos", service=Service.QT, trace_id=trace)
            positions = [PositionRecord.from_hash(await r.hgetall(keys.position(s)))  # type: ignore[misc]
                         for s in SYMBOLS if await r.exists(keys.position(s))]
            for plan in flatten_plans(positions, source=Service.QT, trace_id=trace):
                await r.xadd(keys.stream(Stream.APPLY_PLAN), encode(plan))  # type: ignore[arg-type]
        finally:
            await r.aclose()

    asyncio.run(go())


def rearm(url: str) -> None:
    async def go() -> None:
        r = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            await reset(r, by="chaos", service=Service.QT, trace_id=new_trace_id())
        finally:
            await r.aclose()

    asyncio.run(go())


class MarkMirror(threading.Thread):
    """The fake Binance's marks follow the synthetic market in Redis (so its conditional orders trigger
    where the fleet sees the price)."""

    def __init__(self, url: str, server: FakeBinanceServer) -> None:
        super().__init__(name="mark-mirror", daemon=True)
        self.url = url
        self.server = server
        self.stopped = threading.Event()

    def run(self) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=1)
        while not self.stopped.wait(0.1):
            for symbol in SYMBOLS:
                try:
                    mark = client.hget(keys.market_price(symbol), "mark_price")
                except redis.RedisError:
                    break
                if mark:
                    self.server.fake.set_mark_price(symbol, Decimal(str(mark)))


def exchange_fault(server: FakeBinanceServer, rng: random.Random, figures: Figures) -> None:
    """One fault of the fake Binance, as Binance's own failures look."""
    fake = server.fake
    choice = rng.choice(("latency", "timeout_after_send", "5xx", "429", "-1021", "unknown", "algo_end"))
    path, method = rng.choice(ORDER_PATHS)
    if choice == "latency":
        fake.inject(path, method, "latency", delay_s=rng.uniform(0.5, 1.5))
    elif choice == "timeout_after_send":
        fake.inject(path, method, "timeout", hold_s=3.0, execute=True)
    elif choice == "5xx":
        fake.inject(path, method, "status", status=rng.choice((500, 502, 504)))
    elif choice == "429":
        fake.inject(path, method, "rate_limit", retry_after_s=1)
    elif choice == "-1021":
        fake.inject(path, method, "error", code=-1021, status=400,
                    msg="Timestamp for this request is outside of the recvWindow.")
    elif choice == "unknown":
        fake.inject(path, method, "unknown", execute=True)
    else:
        live = [a for a in fake.algo_orders() if a.get("algoStatus") == "NEW" and a.get("orderType") == "STOP_MARKET"]
        if not live:
            return
        algo = rng.choice(live)
        if rng.random() < 0.5:
            fake.reject_algo(algo["clientAlgoId"])
        else:
            fake.expire_algo(algo["clientAlgoId"], "chaos: expired")
    figures.faults[choice] += 1


def paper_stop_end(url: str, rng: random.Random, figures: Figures) -> None:
    """The paper exchange ends a live stop (expired): nobody hears the event; the settling round's audit
    must find it and protect the position again."""

    async def go() -> None:
        r = redis.asyncio.Redis.from_url(url, decode_responses=True)
        paper = PaperExchange.from_settings(r, fast_settings(url))
        try:
            stops = [c for c in await paper.open_conditionals() if c.kind.value == "STOP_MARKET"]
            if stops:
                stop = rng.choice(stops)
                await paper.expire_conditional(stop.symbol, stop.client_algo_id, "chaos: expired")
                figures.faults["stop_expired"] += 1
        finally:
            await r.aclose()

    asyncio.run(go())


def chaos_run(workdir: Path, *, exchange: str, seconds: float, seed: int, kills_per_service: int,
              redis_kills: int, quiesce_s: float = 120.0) -> Figures:
    """One run; returns its figures with every invariant checked."""
    rng = random.Random(seed)
    figures = Figures(seed=seed, exchange=exchange, seconds=seconds)
    server_redis = EmbeddedRedis(free_port(), workdir / "redis", appendfsync="always").start()
    url = server_redis.url
    fake: FakeBinanceServer | None = None
    mirror: MarkMirror | None = None
    ports = {s: free_port() for s in ("ai_engine", "trading_bot", "position_monitor")}
    env: dict[str, str] = {"REDIS_URL": url, **FLEET_ENV,
                           **{f"QT_HTTP__PORTS__{s.upper()}": str(p) for s, p in ports.items()},
                           "QT_HTTP__AI_ENGINE_URL": f"http://127.0.0.1:{ports['ai_engine']}",
                           **{f"QT_RUNTIME__METRICS_PORTS__{s.upper()}": "0" for s in SERVICES}}
    metrics_ports: dict[str, int] = {}
    if exchange == "binance":
        fake = start_fake_binance(api_key=API_KEY, api_secret=API_SECRET)
        env.update({"QT_EXCHANGE": "binance-testnet", "QT_BINANCE__BASE_URL": fake.base_url,
                    "QT_BINANCE__API_KEY": API_KEY, "QT_BINANCE__API_SECRET": API_SECRET})
        for s in SERVICES:
            if s not in ports:
                metrics_ports[s] = free_port()
                env[f"QT_RUNTIME__METRICS_PORTS__{s.upper()}"] = str(metrics_ports[s])
        mirror = MarkMirror(url, fake)
        mirror.start()
    client = redis.Redis.from_url(url, decode_responses=True)
    fleet = Fleet(workdir, env)
    names = [*SERVICES, "apply_layer#2"]
    injected: defaultdict[str, set[str]] = defaultdict(set)
    try:
        for name in names:
            fleet.start(name)
        # the faults, spread at random over the run (the last fifth is left calm)
        horizon = seconds * 0.8
        events: list[tuple[float, str, str]] = []
        for name in names:
            events += [(rng.uniform(5, horizon), "kill", name) for _ in range(kills_per_service)]
        events += [(rng.uniform(10, horizon), "redis", "") for _ in range(redis_kills)]
        events += [(rng.uniform(5, horizon), "exchange", "") for _ in range(max(4, int(seconds / 4)))]
        events += [(rng.uniform(5, horizon), "poison", "") for _ in range(max(4, int(seconds / 8)))]
        # few manual closes: positions must live long enough to walk the ladder and trail
        events += [(rng.uniform(5, horizon), "close", "") for _ in range(max(1, int(seconds / 60)))]
        events.append((seconds * 0.6, "flatten", ""))
        events.append((seconds * 0.6 + 3, "rearm", ""))
        events.sort()
        started = time.monotonic()
        for at, kind, name in events:
            while time.monotonic() - started < at:
                fleet.tend()
                time.sleep(0.05)
            try:
                if kind == "kill":
                    fleet.kill(name, rng.uniform(0.3, 3.0))
                    figures.kills[name] += 1
                elif kind == "redis":
                    assert server_redis.process is not None
                    server_redis.process.kill()
                    server_redis.process.wait(10)
                    server_redis.process = None
                    time.sleep(rng.uniform(0.5, 2.0))  # the outage itself
                    server_redis.start()
                    figures.redis_kills += 1
                elif kind == "exchange":
                    if fake is not None:
                        exchange_fault(fake, rng, figures)
                    else:
                        paper_stop_end(url, rng, figures)
                elif kind == "poison":
                    inject_poison(client, rng, injected, figures)
                elif kind == "close":
                    if manual_close(client, rng):
                        figures.faults["manual_close"] += 1
                elif kind == "flatten":
                    flatten(url)
                    figures.faults["ess_flatten"] += 1
                elif kind == "rearm":
                    rearm(url)
            except redis.RedisError:
                continue  # Redis was down at that moment: the fault is skipped
        while time.monotonic() - started < seconds:
            fleet.tend()
            time.sleep(0.05)
        _quiesce(fleet, client, fake, quiesce_s)
        if fake is not None:
            fleet.scraped = scrape(ports, metrics_ports)
        codes = fleet.stop()
        for name, code in codes.items():
            if code != 0:
                fleet.unexpected[name].append(code)
        figures.checks = _check(client, url, fake, injected, fleet, figures)
        if fake is not None:
            figures.checks.append(_secrets(client, fleet, ports, metrics_ports))
    finally:
        for proc in fleet.procs.values():
            proc.kill()
        if mirror is not None:
            mirror.stopped.set()
        if fake is not None:
            fake.stop()
        client.close()
        server_redis.stop()
    return figures


def _quiesce(fleet: Fleet, client: redis.Redis, fake: FakeBinanceServer | None, timeout_s: float) -> None:
    """Faults off, everything running; then the market stops (no new intents) and the fleet drains: every
    group caught up, nothing SUBMITTING, every plan answered — the same for three seconds in a row."""
    if fake is not None:
        fake.fake.clear_faults()
    deadline = time.monotonic() + 15
    while fleet.killed and time.monotonic() < deadline:
        fleet.tend()
        time.sleep(0.1)
    for name in ("marketdata", "trading_bot"):
        fleet.procs[name].terminate(timeout_s=40)
        fleet.killed.add(name)
        fleet.due[name] = float("inf")  # they stay down: the market has stopped
    calm_since: float | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.tend()
        quiet = _drained(client)
        now = time.monotonic()
        calm_since = (calm_since or now) if quiet else None
        if calm_since is not None and now - calm_since >= 3:
            return
        time.sleep(0.2)


def _drained(client: redis.Redis) -> bool:
    for spec in _grouped():
        for g in client.xinfo_groups(spec.key) if client.exists(spec.key) else []:
            if int(g["pending"]) or _lag(client, spec.key, g):
                return False
    return not any(client.hget(k, "state") == "SUBMITTING" for k in client.scan_iter(keys.apply_plan_pattern()))


def _lag(client: redis.Redis, key: str, group: dict[str, Any]) -> int:
    last = str(group["last-delivered-id"])
    return len(client.xrange(key, min=f"({last}" if last != "0-0" else "-", count=1))


def _entries(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [f for _, f in client.xrange(keys.stream(stream))]  # type: ignore[misc]


def _decoded(client: redis.Redis, stream: str, contract: type[M]) -> list[M]:
    """The entries of ``stream`` that are its contract (the injected poison is not: the DLQ answers it)."""
    found = []
    for fields in _entries(client, stream):
        try:
            found.append(decode(contract, fields))
        except ContractError:
            continue
    return found


def _check(client: redis.Redis, url: str, fake: FakeBinanceServer | None, injected: dict[str, set[str]],
           fleet: Fleet, figures: Figures) -> list[inv.Check]:
    plans = [p.plan_id for p in _decoded(client, Stream.APPLY_PLAN, ApplyPlan)]
    results = _decoded(client, Stream.APPLY_RESULT, ApplyResult)
    fills = _decoded(client, Stream.EXECUTION_RESULT, ExecutionResult)
    closed = _decoded(client, Stream.TRADE_CLOSED, TradeClosed)
    figures.plans = len(set(plans))
    figures.trades = Counter(t.exit_reason for t in closed)
    figures.exits = Counter(f.reason.value for f in fills if f.reduce_only and f.reason is not None)
    ours: dict[str, Decimal] = {}
    open_stops: dict[str, str] = {}
    for symbol in SYMBOLS:
        fields = client.hgetall(keys.position(symbol))
        if fields:
            p = PositionRecord.from_hash(fields)  # type: ignore[arg-type]
            ours[symbol] = p.signed_qty
            open_stops[symbol] = p.sl_order_id
    theirs, live, main_orders = _exchange_view(url, fake)
    ledgers = {}
    for symbol in SYMBOLS:
        f = client.hgetall(keys.position_ledger(symbol))
        if f:
            ledgers[symbol] = (Decimal(f["realized_pnl"]), Decimal(f["fees"]))
    acct = client.hgetall(keys.ledger_account())
    account = (Decimal(acct["realized_pnl"]), Decimal(acct["fees"])) if acct else None
    open_realized = sum((Decimal(client.hget(keys.ledger_trade(s), "realized_pnl") or "0") for s in SYMBOLS),
                        Decimal(0))
    groups = {}
    for spec in _grouped():
        for g in client.xinfo_groups(spec.key) if client.exists(spec.key) else []:
            groups[(spec.name, str(g["name"]))] = (_lag(client, spec.key, g), int(g["pending"]))
    dead: defaultdict[str, set[str]] = defaultdict(set)
    for spec in _grouped():
        for fields in _entries(client, spec.dlq.name):
            dead[spec.dlq.name].add(fields["origin_id"])
    return [
        inv.one_result_per_plan(plans, results),
        inv.one_order_per_executed_plan(results, main_orders),
        inv.positions_equal_exchange(ours, theirs),
        inv.one_live_stop_each(open_stops, live),
        inv.ledger_matches(fills, ledgers, account),
        inv.closed_trades_sum(closed, account[0] if account else Decimal(0), open_realized),
        inv.groups_drained(groups),
        inv.dlqs_hold_the_poison(injected, dead),
        inv.no_restart_loop(fleet.unexpected),
    ]


def _exchange_view(url: str, fake: FakeBinanceServer | None
                   ) -> tuple[dict[str, Decimal], dict[str, list[str]], list[str]]:
    """(signed position per symbol, live stop ids per symbol, client ids of our market orders)."""
    if fake is not None:
        f = fake.fake
        positions = {s: f.position_amt(s) for s in SYMBOLS if f.position_amt(s) != 0}
        live: defaultdict[str, list[str]] = defaultdict(list)
        for a in f.algo_orders():
            if a.get("algoStatus") == "NEW" and a.get("orderType") == "STOP_MARKET":
                live[a["symbol"]].append(a["clientAlgoId"])
        orders = [o["clientOrderId"] for o in f.orders() if _main(o["clientOrderId"])]
        return positions, dict(live), orders

    async def go() -> tuple[dict[str, Decimal], dict[str, list[str]], list[str]]:
        r = redis.asyncio.Redis.from_url(url, decode_responses=True)
        paper = PaperExchange.from_settings(r, fast_settings(url))
        try:
            held = {s: p.position_amt for s, p in (await paper.positions()).items()}
            stops: defaultdict[str, list[str]] = defaultdict(list)
            for c in await paper.open_conditionals():
                if c.kind.value == "STOP_MARKET":
                    stops[c.symbol].append(c.client_algo_id)
            orders = [str(k) for k in await r.hkeys(keys.paper_orders()) if _main(str(k))]  # type: ignore[misc]
            return held, dict(stops), orders
        finally:
            await r.aclose()

    return asyncio.run(go())


def _main(cid: str) -> bool:
    return cid.startswith("qt-") and not cid.endswith(("-sl", "-tp"))


def _secrets(client: redis.Redis, fleet: Fleet, ports: dict[str, int], metrics_ports: dict[str, int]) -> inv.Check:
    """Every log line, stream entry, metric and HTTP answer searched for the key and the secret (the
    services are stopped: their metrics and APIs were read just before, see :func:`scrape`)."""
    texts = dict(fleet.logs())
    for key in client.scan_iter(keys.stream("*")):
        texts[f"stream {key}"] = repr(client.xrange(key))
    texts.update(fleet.scraped)
    return inv.secrets_absent((API_KEY, API_SECRET), texts)


def scrape(ports: dict[str, int], metrics_ports: dict[str, int]) -> dict[str, str]:
    """The HTTP answers and metrics of the running fleet."""
    found: dict[str, str] = {}
    paths = {"ai_engine": ("/health", "/metrics/"), "trading_bot": ("/health", "/signals", "/metrics/"),
             "position_monitor": ("/health", "/positions", "/pnl", "/trades", "/reconcile", "/metrics/")}
    for service, port in ports.items():
        for path in paths[service]:
            try:
                found[f"{service}{path}"] = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3,
                                                       follow_redirects=True).text
            except httpx.HTTPError as e:
                found[f"{service}{path}"] = f"unreachable: {e}"
    for service, port in metrics_ports.items():
        try:
            found[f"{service} metrics"] = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
        except httpx.HTTPError as e:
            found[f"{service} metrics"] = f"unreachable: {e}"
    return found
