"""The fleet's services as real processes for the benchmarks, and what the kernel says they cost (RSS and
CPU time from ``/proc``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from common.keys import heartbeat_pattern
from common.streams import Service

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

#: fast loops and no fixed metrics ports (what the end-to-end tests use too)
FAST = {
    "QT_BUS__BLOCK_MS": "100", "QT_BUS__CLAIM_INTERVAL_MS": "200", "QT_BUS__CLAIM_IDLE_MS": "2000",
    "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5", "QT_EXIT__EVALUATE_INTERVAL_S": "1", "QT_EXIT__PNL_INTERVAL_S": "5",
    "QT_MONITOR__SNAPSHOT_INTERVAL_S": "5", "QT_MONITOR__RECONCILE_INTERVAL_S": "30",
    "QT_GOVERNOR__RISK_CHECK_INTERVAL_S": "5", "QT_GOVERNOR__POLICY_CHECK_INTERVAL_S": "10",
    "QT_LOG_LEVEL": "WARNING",
    **{f"QT_RUNTIME__METRICS_PORTS__{s.upper()}": "0" for s in Service.ALL},
}


class Proc:
    """``python -m services.<name>`` (or any module) with its output in a log file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_") and k != "REDIS_URL"}
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}, **self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO, env=env, stdout=out,
                                          stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout_s)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""


@contextmanager
def services(names: list[str], env: dict[str, str], logs: Path) -> Iterator[dict[str, Proc]]:
    """Start ``names`` as ``services.<name>``; SIGTERM them all at the end."""
    procs: dict[str, Proc] = {}
    with ExitStack() as stack:
        for name in names:
            proc = Proc(f"services.{name}", {**FAST, **env}, logs / f"{name}.log").start()
            procs[name] = proc
            stack.callback(proc.kill)
        yield procs
        for proc in procs.values():
            proc.stop()


def rss_kib(pid: int) -> int:
    """Resident set size of one process (KiB); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except (OSError, IndexError, ValueError):
        return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    with open(f"/proc/{pid}/stat") as f:
        after = f.read().rsplit(")", 1)[1].split()
    return (int(after[11]) + int(after[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:
            kids = []
        found.extend(kids)
        todo.extend(kids)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> float:
    """Poll ``check`` until true; the seconds it took (TimeoutError naming ``what`` after ``timeout_s``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s}s")
        time.sleep(interval_s)
    return time.monotonic() - started


def heartbeats_ready(client: object, names: list[str]) -> bool:
    """Every service named has its heartbeat key (it is set before the service's setup runs)."""
    keys = client.keys(heartbeat_pattern())  # type: ignore[attr-defined]
    up = {str(k).split(":")[2] for k in keys}
    return set(names) <= up


def json_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
