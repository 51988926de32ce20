"""The fleet launcher behind ``qt run``: one small Python process for the processes of a Procfile.

Each Procfile line ``name: command`` becomes a direct child (``command`` split like a shell would, run
without one; ``python`` is this interpreter), in its own session so that a Ctrl-C reaches the launcher
only. Every line a child prints (stdout and stderr) is printed with the child's name in front.

Ctrl-C (SIGINT), SIGTERM or SIGHUP: the launcher says so once, sends SIGTERM to each child, waits for
each to drain (at most ``--stop-timeout`` seconds, then SIGKILL), prints one line per child — ``<name>
drained and stopped (rc 0)`` —, stops the Redis server it was handed (``--redis-pid``, a child of the
``qt run`` that became this process) and exits 0. A second signal kills what is still running. A child
that dies on its own is reported with its exit code, and the others are stopped the same way; the
launcher then exits 1.

It imports the standard library only (no pydantic, redis, typer): its own memory stays a few MiB.

    python -m ops.launcher --procfile Procfile [--cwd DIR] [--redis-pid PID] [--stop-timeout SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: the name the launcher's own lines carry
OWN_NAME = "qt run"
#: bytes read from a child's output at a time (a line may be longer: it is joined)
CHUNK = 65_536
_COLOURS = ("36", "33", "32", "35", "34", "91", "92", "93", "94", "95", "96")


class ProcfileError(ValueError):
    """A Procfile line that is not ``name: command``."""


@dataclass(frozen=True)
class Entry:
    """One process of the Procfile."""

    name: str
    argv: tuple[str, ...]


def read_procfile(path: Path) -> list[Entry]:
    """The entries of a Procfile (``name: command`` per line; blank lines and ``#`` comments skipped)."""
    entries: list[Entry] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name = name.strip()
        if not sep or not name or not command.strip() or any(c.isspace() for c in name):
            raise ProcfileError(f"{path}:{number}: not 'name: command': {raw!r}")
        if any(e.name == name for e in entries):
            raise ProcfileError(f"{path}:{number}: {name} is listed twice")
        argv = shlex.split(command)
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        entries.append(Entry(name, tuple(argv)))
    if not entries:
        raise ProcfileError(f"{path}: no processes")
    return entries


@dataclass
class Child:
    entry: Entry
    colour: str
    process: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    #: True once the launcher asked it to stop (SIGTERM)
    stopped: bool = False
    killed: bool = False
    #: True once its unexpected end was reported
    reported: bool = False
    rc: int | None = None
    partial: bytes = field(default=b"")


class Launcher:
    """The children of one run and the lines about them; :meth:`run` is the whole run."""

    def __init__(self, entries: list[Entry], *, cwd: Path, stop_timeout_s: float, redis_pid: int | None,
                 write: Callable[[bytes], None] | None = None, colour: bool | None = None) -> None:
        self.children = [Child(e, _COLOURS[i % len(_COLOURS)]) for i, e in enumerate(entries)]
        self.cwd = cwd
        self.stop_timeout_s = stop_timeout_s
        self.redis_pid = redis_pid
        self._write = write or self._stdout
        self.colour = sys.stdout.isatty() if colour is None else colour
        self.width = max(len(OWN_NAME), *(len(e.name) for e in entries))
        self.stopping = asyncio.Event()
        self.signalled = False
        self.failed = False

    @staticmethod
    def _stdout(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def _prefix(self, name: str, colour: str) -> bytes:
        label = f"{name:<{self.width}} | "
        return (f"\x1b[{colour}m{label}\x1b[0m" if self.colour else label).encode()

    def say(self, text: str) -> None:
        """One line of the launcher's own."""
        self._write(self._prefix(OWN_NAME, "1") + text.encode() + b"\n")

    def _lines(self, child: Child, data: bytes, *, final: bool = False) -> None:
        data = child.partial + data
        *lines, child.partial = data.split(b"\n")
        if final and child.partial:
            lines.append(child.partial)
            child.partial = b""
        if lines:
            prefix = self._prefix(child.entry.name, child.colour)
            self._write(b"".join(prefix + line.rstrip(b"\r") + b"\n" for line in lines))

    async def _read(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        while chunk := await child.process.stdout.read(CHUNK):
            self._lines(child, chunk)
        self._lines(child, b"", final=True)

    async def _start(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.entry.argv, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        child.reader = asyncio.create_task(self._read(child))
        self.say(f"{child.entry.name} started (pid {child.process.pid}): {shlex.join(child.entry.argv)}")

    def on_signal(self, sig: signal.Signals) -> None:
        if not self.signalled:
            self.signalled = True
            running = sum(1 for c in self.children if c.process is not None and c.rc is None)
            plural = "" if running == 1 else "es"
            self.say(f"{sig.name} received: stopping {running} process{plural} (SIGTERM, each drains)")
            self.stopping.set()
            return
        self.say(f"{sig.name} again: killing what is still running")
        for child in self.children:
            if child.process is not None and child.rc is None:
                child.killed = True
                _signal(child.process, signal.SIGKILL)

    async def _watch(self, child: Child) -> None:
        """Wait for the child; one that ends before it was asked to stops the run."""
        assert child.process is not None
        rc = await child.process.wait()
        if child.reader is not None:
            await child.reader
        child.rc = rc
        if not child.stopped and not self.stopping.is_set():
            self.failed = True
            child.reported = True
            self.say(f"{child.entry.name} exited unexpectedly ({_describe(rc)}): stopping the others")
            self.stopping.set()

    async def _stop(self, child: Child, watch: asyncio.Task[None]) -> None:
        assert child.process is not None
        if child.rc is None:
            child.stopped = True
            _signal(child.process, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(watch), self.stop_timeout_s)
            except TimeoutError:
                self.say(f"{child.entry.name} did not stop within {self.stop_timeout_s:g} s: SIGKILL")
                child.killed = True
                _signal(child.process, signal.SIGKILL)
        await watch
        rc = child.rc if child.rc is not None else -1
        if rc == 0 and child.stopped:
            self.say(f"{child.entry.name} drained and stopped (rc 0)")
        elif child.stopped:
            self.say(f"{child.entry.name} stopped badly ({_describe(rc)})")
        elif not child.reported:
            self.say(f"{child.entry.name} had exited before the stop ({_describe(rc)})")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.on_signal, sig)
        watches: dict[str, asyncio.Task[None]] = {}
        try:
            for child in self.children:
                if self.stopping.is_set():
                    break
                try:
                    await self._start(child)
                except OSError as e:
                    self.failed = True
                    self.say(f"{child.entry.name} could not start: {e}")
                    self.stopping.set()
                    break
                watches[child.entry.name] = asyncio.create_task(self._watch(child))
            await self.stopping.wait()
            started = [c for c in self.children if c.entry.name in watches]
            await asyncio.gather(*(self._stop(c, watches[c.entry.name]) for c in started))
        finally:
            self._stop_redis()
        clean = all(c.rc == 0 for c in self.children if c.process is not None)
        return 0 if self.signalled and clean and not self.failed else 1

    def _stop_redis(self) -> None:
        if self.redis_pid is None:
            return
        rc = stop_pid(self.redis_pid, self.stop_timeout_s)
        self.say(f"redis-server (pid {self.redis_pid}) stopped ({_describe(rc) if rc is not None else 'gone'})")


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:
        pass


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"rc {rc}"


def stop_pid(pid: int, timeout_s: float) -> int | None:
    """SIGTERM ``pid`` (a child of this process: the embedded Redis) and reap it; SIGKILL after
    ``timeout_s``. Its exit code (negative: a signal), or None when it was gone already."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: wait for it to be gone
            if not Path(f"/proc/{pid}").exists():
                return None
            done, status = 0, 0
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None
            deadline = time.monotonic() + timeout_s
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--procfile", type=Path, required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd())
    parser.add_argument("--redis-pid", type=int, default=None, help="a Redis server to stop after the fleet")
    parser.add_argument("--stop-timeout", type=float, default=25.0, help="seconds a process may drain")
    args = parser.parse_args(argv)
    try:
        entries = read_procfile(args.procfile)
    except (OSError, ProcfileError) as e:
        print(f"{OWN_NAME}: {e}", file=sys.stderr)
        if args.redis_pid is not None:
            stop_pid(args.redis_pid, args.stop_timeout)
        return 2
    launcher = Launcher(entries, cwd=args.cwd, stop_timeout_s=args.stop_timeout, redis_pid=args.redis_pid)
    return asyncio.run(launcher.run())


if __name__ == "__main__":
    sys.exit(main())
