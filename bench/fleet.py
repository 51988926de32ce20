"""What the fleet benchmarks share: a Redis of their own, the market and the plans written as the fleet's
producers write them (one MULTI each, through :func:`~common.bus.effects.queue_ops`), the fleet's
streams followed from the outside, and what the kernel and Redis say the processes do (CPU from
``/proc``, a reader caught up when Redis shows its XREAD blocked)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from bench.procs import cpu_s
from bench.report import Row, format_row
from common import keys, streams
from common.bus.effects import HashSet, Op, Publish, queue_ops
from common.contracts import ApplyPlan, ApplyResult, ExecutionResult, MarketTick, Message, decode, new_trace_id, now_ms
from common.exchange.rules import SymbolRules
from common.market import price_mapping, rules_mapping
from common.policy import Policy
from common.streams import Service, Stream
from ops.redis_server import EmbeddedRedis, free_port


@contextmanager
def private_redis(workdir: Path) -> Iterator[tuple[EmbeddedRedis, redis.Redis]]:
    """A redis-server of the benchmark's own (AOF on, as ``make run``), and a sync client of it."""
    with EmbeddedRedis(free_port(), workdir / "redis") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            yield server, client
        finally:
            client.close()


def commit(client: redis.Redis, ops: Sequence[Op], service: str) -> list[Any]:
    """``ops`` in one MULTI/EXEC, as ``service`` publishes them; the replies (an XADD's is its id)."""
    pipe = client.pipeline(transaction=True)
    queue_ops(pipe, ops, service=service)  # type: ignore[arg-type]  # a sync pipeline queues the same commands
    return list(pipe.execute())


def tick_ops(prices: dict[str, Decimal], ts: int | None = None) -> list[Op]:
    """What marketdata writes for a round of ticks: a ``market.tick`` entry and the price hash per symbol."""
    stamp = now_ms() if ts is None else ts
    ops: list[Op] = []
    for symbol, price in prices.items():
        ops.append(Publish(Stream.MARKET_TICK, MarketTick(source=Service.MARKETDATA, trace_id=new_trace_id(),
                                                          symbol=symbol, price=price, mark_price=price)))
        ops.append(HashSet(keys.market_price(symbol), price_mapping(price, price, stamp)))
    return ops


def publish_ticks(client: redis.Redis, prices: dict[str, Decimal]) -> str:
    """One round of ticks; the ``market.tick`` id of the last one."""
    replies = commit(client, tick_ops(prices), Service.MARKETDATA)
    return str([r for r in replies if isinstance(r, str) and "-" in r][-1])


def publish_plans(client: redis.Redis, plans: Sequence[ApplyPlan], service: str = Service.INTENT_BRIDGE) -> str:
    """Plans in ``apply.plan`` in one MULTI, as ``service`` publishes them; the id of the last one."""
    replies = commit(client, [Publish(Stream.APPLY_PLAN, p) for p in plans], service)
    return str(replies[-1])


def install(client: redis.Redis, rules: dict[str, SymbolRules], policy: Policy) -> None:
    """The exchange's rules as marketdata publishes them, and the policy as the governor loads it."""
    client.hset(keys.exchange_symbols(), mapping=rules_mapping(rules))  # type: ignore[arg-type]
    client.hset(keys.policy_current(), mapping=policy.to_hash())  # type: ignore[arg-type]


def id_ms(entry_id: str) -> int:
    """The milliseconds of a stream entry id (Redis' clock when it took the XADD)."""
    return int(entry_id.split("-", 1)[0])


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest rank at or above it; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": quantile(values, 0.5), "p90": quantile(values, 0.9),
            "p99": quantile(values, 0.99), "max": max(values), "mean": round(statistics.fmean(values), 3)}


# --- following the fleet's streams -------------------------------------------------------------------


@dataclass
class Seen:
    """A decoded entry of a followed stream, with its id."""

    entry_id: str
    message: Message

    @property
    def ms(self) -> int:
        return id_ms(self.entry_id)


class Follower:
    """XREAD of some of the fleet's streams from where they are now (or from ``0``); each :meth:`poll`
    returns what was added since, decoded, and the monotonic time it was read."""

    def __init__(self, client: redis.Redis, names: Sequence[str], *, from_start: bool = False) -> None:
        self.client = client
        self.specs = {streams.get(n).key: streams.get(n) for n in names}
        self.last: dict[str, str] = {}
        for key in self.specs:
            newest: Any = client.xrevrange(key, count=1)
            self.last[key] = "0-0" if from_start or not newest else str(newest[0][0])

    def poll(self, block_ms: int | None = 50) -> list[tuple[str, Seen]]:
        """What was added since the last poll (``block_ms`` None: do not wait)."""
        reply: Any = self.client.xread(self.last, count=1000, block=block_ms)  # type: ignore[arg-type]
        out: list[tuple[str, Seen]] = []
        for key, entries in reply or []:
            spec = self.specs[str(key)]
            for entry_id, fields in entries:
                self.last[str(key)] = str(entry_id)
                out.append((spec.name, Seen(str(entry_id), decode(spec.contract, fields))))
        return out


@dataclass
class Book:
    """What the fleet did to the benchmark's plans, as its streams tell it."""

    plans: dict[str, ApplyPlan] = field(default_factory=dict)
    #: the ``apply.plan`` entry of each plan (its id tells when it was published)
    plan_entries: dict[str, Seen] = field(default_factory=dict)
    #: the first full close published for a position (its entry plan id -> the close's entry)
    close_plans: dict[str, Seen] = field(default_factory=dict)
    results: dict[str, Seen] = field(default_factory=dict)
    #: reduce-only fills by the entry plan of their position
    closes: dict[str, Seen] = field(default_factory=dict)
    #: stop updates published for a position (its entry plan id -> the update plans' ids)
    stop_updates: dict[str, list[str]] = field(default_factory=dict)

    def take(self, seen: list[tuple[str, Seen]]) -> None:
        for name, item in seen:
            message = item.message
            if name == Stream.APPLY_PLAN and isinstance(message, ApplyPlan):
                self.plans[message.plan_id] = message
                self.plan_entries[message.plan_id] = item
                if message.action.value == "FULL_CLOSE_PROPOSED" and message.position_plan_id:
                    self.close_plans.setdefault(message.position_plan_id, item)
                if message.action.value == "UPDATE_STOP" and message.position_plan_id:
                    self.stop_updates.setdefault(message.position_plan_id, []).append(message.plan_id)
            elif name == Stream.APPLY_RESULT and isinstance(message, ApplyResult):
                self.results[message.plan_id] = item
            elif (name == Stream.EXECUTION_RESULT and isinstance(message, ExecutionResult) and message.reduce_only
                  and message.position_plan_id and message.position_plan_id not in self.closes):
                self.closes[message.position_plan_id] = item

    def stop_settled(self, position_plan_id: str) -> bool:
        """exitbrain's first stop update of the position is settled by apply_layer."""
        updates = self.stop_updates.get(position_plan_id, [])
        return bool(updates) and updates[0] in self.results


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll: Callable[[], object] | None = None,
               interval_s: float = 0.005) -> float:
    """Call ``poll`` (or sleep ``interval_s``) until ``check()``; the seconds it took. TimeoutError names
    ``what``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s}s")
        if poll is not None:
            poll()
        else:
            time.sleep(interval_s)
    return time.monotonic() - started


# --- what the processes do ------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of some processes between :meth:`start` and :meth:`stop`, as % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started_at = 0.0
        self.before: dict[str, float] = {}
        self.percent: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self.before = {name: cpu_s(pid) for name, pid in self.pids.items()}
        self.started_at = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started_at
        self.percent = {name: round(100 * (cpu_s(pid) - self.before[name]) / elapsed, 1)
                        for name, pid in self.pids.items()}
        return self.percent


def socket_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets ``pid`` holds (from ``/proc``)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        text = str(target)
        if text.startswith("socket:["):
            inodes.add(text[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[9] in inodes:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


class CaughtUp:
    """Samples ``CLIENT LIST`` in a thread: for each process, how often its XREAD of ``market.tick`` was
    blocked — waiting for new entries, i.e. it had read everything (a reader with a backlog never
    blocks). Only XREADs are counted: a reader that is busy evaluating is neither."""

    def __init__(self, url: str, pids: dict[str, int], interval_s: float = 0.05) -> None:
        self.url = url
        self.pids = pids
        self.interval_s = interval_s
        self.ports = {name: socket_ports(pid) for name, pid in pids.items()}
        self.samples = {name: 0 for name in pids}
        self.blocked = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caught-up", daemon=True)

    def __enter__(self) -> CaughtUp:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            while not self._stop.wait(self.interval_s):
                clients: Any = client.client_list()
                for name, ports in self.ports.items():
                    mine = [c for c in clients if int(str(c.get("addr", ":0")).rsplit(":", 1)[1]) in ports]
                    reads = [c for c in mine if c.get("cmd") == "xread"]
                    if reads:
                        self.samples[name] += 1
                        self.blocked[name] += any("b" in str(c.get("flags", "")) for c in reads)
        finally:
            client.close()

    def share(self) -> dict[str, float | None]:
        """Per process: the share of samples in which its tick XREAD was blocked (None: never seen)."""
        return {name: (round(self.blocked[name] / n, 3) if (n := self.samples[name]) else None)
                for name in self.pids}


class Ticker:
    """The market at 1 Hz: every second, one round of ticks for every symbol at its current price (one
    MULTI, as marketdata commits a round of Binance's ``!markPrice@arr@1s``), in a thread. The prices
    are changed under :attr:`lock`, so a round never carries a price older than one published beside it."""

    def __init__(self, url: str, prices: dict[str, Decimal], period_s: float = 1.0) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.prices = dict(prices)
        self.period_s = period_s
        self.lock = threading.Lock()
        self.rounds = 0
        self.ticks = 0
        self.late_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def set(self, symbol: str, price: Decimal, client: redis.Redis) -> str:
        """Move one symbol now (its own tick, published through ``client``); the tick's id."""
        with self.lock:
            self.prices[symbol] = price
            return publish_ticks(client, {symbol: price})

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self.lock:
                publish_ticks(self.client, self.prices)
                self.rounds += 1
                self.ticks += len(self.prices)
            next_at += self.period_s
            delay = next_at - time.monotonic()
            if delay < 0:
                self.late_s = max(self.late_s, -delay)
                next_at = time.monotonic()
            elif self._stop.wait(delay):
                return


#: what a row-measuring function calls as each of its rows is measured (``make bench`` prints it)
OnRow = Callable[[Row], None]


def emit(rows: list[Row], row: Row, on_row: OnRow | None) -> Row:
    rows.append(row)
    if on_row is not None:
        on_row(row)
    return row


def show(row: Row, details: bool = True) -> None:
    """Print a row as it is measured (and, run alone, its details)."""
    print(format_row(row), flush=True)
    if details:
        print("    " + json.dumps(row.details, default=str, ensure_ascii=False), flush=True)


@contextmanager
def profiled(pids: dict[str, int], label: str) -> Iterator[None]:
    """With ``QT_BENCH_PYSPY`` naming a py-spy binary, record each process while the block runs (collapsed
    stacks, ``<QT_BENCH_PROFILE_DIR or /tmp>/<label>-<name>.txt``: what limits a figure). Else nothing."""
    binary = os.environ.get("QT_BENCH_PYSPY", "")
    if not binary:
        yield
        return
    out_dir = Path(os.environ.get("QT_BENCH_PROFILE_DIR", "/tmp"))
    out_dir.mkdir(parents=True, exist_ok=True)
    recorders = [subprocess.Popen([binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                                   "--output", str(out_dir / f"{label}-{name}.txt"), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in pids.items() if pid]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            try:
                recorder.wait(20)
            except subprocess.TimeoutExpired:
                recorder.kill()
