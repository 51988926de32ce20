"""What ``make run`` costs in memory: ``qt run`` started as ``make run`` starts it (every service of the
Procfile under its launcher, the paper exchange, the synthetic market), on a Redis of the benchmark's
own, measured from ``/proc`` and ``INFO memory``.

- idle: the default four symbols, once every service has its heartbeat and ``settle_s`` more;
- 580 symbols (the whole USD-M list; rules generated, ``QT_PAPER__RULES_FILE``), one tick per symbol a
  second and real-time 1m klines (``tick_interval_ms = 1000``, ``time_factor = 1``), after marketdata's
  start-up backfill of ``backfill_klines`` (200) closed klines per symbol — 116,000 klines — and
  ``settle_s`` of live market.

The launcher is every process of ``qt run``'s tree that is neither a service (``-m services.<name>``) nor
a redis-server (Redis runs apart here: ``qt run`` uses the one that answers at ``REDIS_URL``). Redis's RSS
is set against ``used_memory`` (what it holds, by its own count) after the backfill.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.fleet import OnRow, emit, private_redis, show, wait_until
from bench.procs import REPO, children, cmdline, heartbeats_ready, rss_kib
from bench.report import Row, header
from bench.universe import ALL_MARKET, symbol_names, write_rules
from common import keys
from common.streams import Service, Stream
from ops.redis_server import free_port

MIB = 1024


def peak_kib(pid: int) -> int:
    """The process's peak RSS (``VmHWM``, KiB); 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def service_of(pid: int) -> str | None:
    args = cmdline(pid)
    for i, arg in enumerate(args[:-1]):
        if arg == "-m" and args[i + 1].startswith("services."):
            return args[i + 1].removeprefix("services.")
    return None


def qt_run_env(url: str, extra: dict[str, str]) -> dict[str, str]:
    """``make run``'s environment on a Redis of our own: free HTTP ports, no metrics listeners."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_") and k != "REDIS_URL"}
    ports = {s: free_port() for s in (Service.AI_ENGINE, Service.POSITION_MONITOR, Service.TRADING_BOT)}
    env.update({"REDIS_URL": url, "PYTHONUNBUFFERED": "1", "QT_LOG_LEVEL": "WARNING",
                "QT_HTTP__AI_ENGINE_URL": f"http://127.0.0.1:{ports[Service.AI_ENGINE]}",
                **{f"QT_HTTP__PORTS__{s.upper()}": str(p) for s, p in ports.items()},
                **{f"QT_RUNTIME__METRICS_PORTS__{s.upper()}": "0" for s in Service.ALL}, **extra})
    return env


def snapshot(root: int) -> dict[str, Any]:
    """RSS (and peak) of every process under ``root``, split into services and launcher."""
    tree = [root, *children(root)]
    services: dict[str, dict[str, float]] = {}
    launcher: dict[str, float] = {}
    for pid in tree:
        name = service_of(pid)
        args = cmdline(pid)
        if any("redis-server" in a for a in args[:1]):
            continue
        rss = rss_kib(pid) / MIB
        if name is not None:
            services[name] = {"rss_mib": round(rss, 1), "peak_mib": round(peak_kib(pid) / MIB, 1), "pid": pid}
        elif rss:
            launcher[f"{pid} {' '.join(args)[:80]}"] = round(rss, 1)
    return {"services": services, "launcher": launcher,
            "services_mib": round(sum(s["rss_mib"] for s in services.values()), 1),
            "launcher_mib": round(sum(launcher.values()), 1)}


def redis_memory(client: redis.Redis) -> dict[str, Any]:
    info: Any = client.info("memory")
    fields = ("used_memory", "used_memory_rss", "used_memory_peak", "used_memory_dataset", "mem_fragmentation_ratio",
              "mem_allocator", "allocator_frag_ratio")
    out = {k: info.get(k) for k in fields if k in info}
    for k in ("used_memory", "used_memory_rss", "used_memory_peak", "used_memory_dataset"):
        if k in out:
            out[k.replace("used_memory", "mib")] = round(int(out[k]) / 1024 / 1024, 1)
    return out


def run_fleet(workdir: Path, extra: dict[str, str], ready: Callable[[redis.Redis], bool], settle_s: float
              ) -> dict[str, Any]:
    """``qt run`` on a Redis of our own until ``ready(client)`` and ``settle_s`` more; what it costs."""
    with private_redis(workdir) as (server, client):
        log = (workdir / "qt-run.log").open("wb")
        started = time.monotonic()
        qt = subprocess.Popen([sys.executable, "-m", "ops.cli", "run"], cwd=REPO, env=qt_run_env(server.url, extra),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: heartbeats_ready(client, list(Service.ALL)), 180, "every service's heartbeat",
                       interval_s=0.2)
            up_s = time.monotonic() - started
            wait_until(lambda: ready(client), 300, "fleet ready", interval_s=0.2)
            ready_s = time.monotonic() - started
            time.sleep(settle_s)  # the measured steady state, not a synchronisation
            figures = snapshot(qt.pid)
            figures.update(redis=redis_memory(client), redis_pid_rss_mib=round(
                rss_kib(server.process.pid) / MIB, 1) if server.process else None,
                heartbeats_s=round(up_s, 1), ready_s=round(ready_s, 1), settle_s=settle_s,
                klines_stream_len=client.xlen(keys.stream(Stream.MARKET_KLINES)))
        finally:
            _stop(qt)
            log.close()
    return figures


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 40.0) -> None:
    """SIGTERM to ``qt run`` (it stops the fleet), then its whole session if anything is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    for pid in [proc.pid, *children(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait(10)


def measure(workdir: Path, settle_s: float = 10.0, on_row: OnRow | None = None) -> list[Row]:
    """Rows ``rss_services_idle``, ``rss_launcher``, ``rss_services_580``, ``rss_redis_580``."""
    rows: list[Row] = []
    idle = run_fleet(workdir / "idle", {}, ticking, settle_s)
    emit(rows, Row("rss_services_idle", "RSS of the ten services, idle (4 symbols)", idle["services_mib"], "MiB",
                   details={"services": idle["services"], "heartbeats_s": idle["heartbeats_s"]}), on_row)
    symbols = symbol_names(ALL_MARKET)
    write_rules(workdir / "rules.json", ALL_MARKET)
    market = {"QT_SYMBOLS": ",".join(symbols), "QT_PAPER__RULES_FILE": str(workdir / "rules.json"),
              "QT_MARKETDATA__TICK_INTERVAL_MS": "1000", "QT_MARKETDATA__TIME_FACTOR": "10"}
    full = run_fleet(workdir / "all", market, ticking, settle_s)
    emit(rows, Row("rss_launcher", "RSS of the launcher (qt run, less services)", full["launcher_mib"], "MiB", "",
                   None, "< 50 MiB", full["launcher_mib"] < 50,
                   {"processes": full["launcher"], "idle_run": idle["launcher"]}), on_row)
    emit(rows, Row("rss_services_580", f"RSS of the ten services, {ALL_MARKET} symbols", full["services_mib"], "MiB",
                   "", None, "< 450 MiB together", full["services_mib"] < 450,
                   {"services": full["services"], "ready_s": full["ready_s"], "settle_s": settle_s,
                    "market": market | {"QT_SYMBOLS": f"{ALL_MARKET} symbols"}}), on_row)
    mem = full["redis"]
    rss_mib, used_mib = float(mem.get("mib_rss", 0)), float(mem.get("mib", 0))
    emit(rows, Row("rss_redis_580", f"Redis RSS after the {ALL_MARKET}-symbol backfill", rss_mib, "MiB",
                   "used_memory", used_mib, "RSS ≤ 2x used_memory", bool(used_mib) and rss_mib <= 2 * used_mib,
                   {**mem, "klines_stream_len": full["klines_stream_len"], "idle": idle["redis"]}), on_row)
    return rows


def ticking(client: redis.Redis) -> bool:
    """marketdata's live ticks have begun (its start-up backfill is written): Redis may be busy with that
    backfill's one transaction for a while, so a slow answer is a no."""
    try:
        return bool(client.xlen(keys.stream(Stream.MARKET_TICK)) > 0)
    except (redis.TimeoutError, redis.ConnectionError):
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(header())
    with tempfile.TemporaryDirectory(prefix="qt-bench-") as tmp:
        measure(Path(tmp), args.settle_s, on_row=show)


if __name__ == "__main__":
    main(sys.argv[1:])
