"""The launcher of ``qt run`` (ops/launcher.py): direct children with prefixed output, a Ctrl-C that drains
each one and exits 0, a death reported with its exit code, a small process of its own; and a real
``qt run`` stopped by SIGINT."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.launcher import ProcfileError, read_procfile
from ops.redis_server import answers, free_port

REPO = Path(__file__).resolve().parents[2]
DUMMY = '''
import os, signal, sys, time
name, drain, exit_after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
stop = False
def term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
print(f"ready pid={os.getpid()} ppid={os.getppid()}", flush=True)
print("to stderr", file=sys.stderr, flush=True)
started = time.monotonic()
while not stop:
    if exit_after and time.monotonic() - started > exit_after:
        sys.exit(3)
    time.sleep(0.02)
time.sleep(drain)
print(f"{name} drained", flush=True)
'''


class Running:
    """A launcher process and the lines it printed so far (read by a thread)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=env)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, count: int = 1, timeout_s: float = 60) -> list[str]:
        """Poll until ``count`` lines contain ``text`` (deadline ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while sum(text in line for line in self.lines) < count:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {count} x {text!r} within {timeout_s}s:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"output ended before {count} x {text!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
        return [line for line in self.lines if text in line]

    def finish(self, timeout_s: float = 60) -> int:
        rc = self.process.wait(timeout_s)
        while (line := self._queue.get(timeout=timeout_s)) is not None:
            self.lines.append(line)
        return rc


@pytest.fixture
def procfile_dir(tmp_path: Path) -> Path:
    (tmp_path / "dummy.py").write_text(DUMMY)
    return tmp_path


def launch(directory: Path, procfile: str, *extra: str) -> Running:
    (directory / "Procfile").write_text(procfile)
    return Running([sys.executable, "-m", "ops.launcher", "--procfile", str(directory / "Procfile"), "--cwd",
                    str(directory), *extra], directory)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ctrl_c_drains_each_process_and_exits_0(procfile_dir: Path) -> None:
    """Each Procfile process is a direct child (no shell between: its parent is the launcher) whose lines,
    stderr too, carry its name; SIGINT is announced once, each process gets SIGTERM, drains, and is reported
    `drained and stopped (rc 0)`; the launcher exits 0. Its own RSS stays small."""
    run = launch(procfile_dir, "# the fleet\nalpha: python dummy.py alpha 0.3 0\n\n"
                               "beta_longer: python dummy.py beta_longer 0.6 0\n")
    try:
        ready = run.wait_for("| ready pid=", 2)
        assert run.wait_for("| to stderr", 2)
        launcher_pid = run.process.pid
        assert all(line.endswith(f"ppid={launcher_pid}") for line in ready), ready
        assert any(line.startswith("alpha       | ready") for line in ready)
        rss = rss_kib(launcher_pid)
        print(f"launcher RSS: {rss / 1024:.1f} MiB")
        assert rss < 40 * 1024
        run.process.send_signal(signal.SIGINT)
        rc = run.finish()
    finally:
        if run.process.poll() is None:
            run.process.kill()
    out = "\n".join(run.lines)
    assert rc == 0, out
    assert sum("SIGINT received" in line for line in run.lines) == 1
    for name in ("alpha", "beta_longer"):
        drained = run.lines.index(f"{name:<11} | {name} drained")
        stopped = run.lines.index(f"{'qt run':<11} | {name} drained and stopped (rc 0)")
        assert drained < stopped
    assert "rc=-15" not in out and "Error" not in out


def test_a_process_that_dies_is_reported_with_its_rc_and_the_others_are_stopped(procfile_dir: Path) -> None:
    """A child exiting on its own is reported with its exit code; the launcher stops the others (drained,
    rc 0) and exits 1 by itself."""
    run = launch(procfile_dir, "steady: python dummy.py steady 0.1 0\ncrash: python dummy.py crash 0 0.5\n")
    rc = run.finish()
    out = "\n".join(run.lines)
    assert rc == 1, out
    assert "qt run | crash exited unexpectedly (rc 3): stopping the others" in out
    assert "qt run | steady drained and stopped (rc 0)" in out


def test_a_process_that_does_not_drain_in_time_is_killed(procfile_dir: Path) -> None:
    """Past --stop-timeout a process is SIGKILLed and reported so; the run is not clean (exit 1)."""
    run = launch(procfile_dir, "slow: python dummy.py slow 30 0\n", "--stop-timeout", "0.5")
    try:
        run.wait_for("| ready pid=")
        run.process.send_signal(signal.SIGTERM)
        rc = run.finish()
    finally:
        if run.process.poll() is None:
            run.process.kill()
    out = "\n".join(run.lines)
    assert rc == 1, out
    assert "slow did not stop within 0.5 s: SIGKILL" in out and "slow stopped badly (killed by SIGKILL)" in out


def test_the_launcher_imports_the_standard_library_only() -> None:
    """No pydantic, redis, typer, fastapi, rich in the launcher's process."""
    code = ("import sys, ops.launcher; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'redis', 'typer', 'fastapi', 'rich', 'structlog', 'numpy', 'common'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_procfile_errors(tmp_path: Path) -> None:
    """A line that is not `name: command`, a name twice or no process at all is refused; `python` is this
    interpreter."""
    path = tmp_path / "Procfile"
    path.write_text("web: python -m http.server 0\n")
    assert read_procfile(path)[0].argv == (sys.executable, "-m", "http.server", "0")
    for bad in ("no command here\n", "a: x\na: y\n", "# only a comment\n", "two words: x\n"):
        path.write_text(bad)
        with pytest.raises(ProcfileError):
            read_procfile(path)


@pytest.fixture
def qt_run_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "dummy.py").write_text(DUMMY)
    yield tmp_path


def test_qt_run_stops_with_exit_0_and_stops_its_redis(qt_run_dir: Path) -> None:
    """`qt run` with nothing at REDIS_URL: it starts the embedded Redis, creates the groups and becomes the
    launcher (same pid); a real service (governor) and a dummy come up; SIGINT: each drained and stopped
    (rc 0), Redis stopped, exit 0, and nothing answers at the URL any more."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    (qt_run_dir / "Procfile").write_text(f"governor: python -m services.governor\n"
                                         f"dummy: python {qt_run_dir / 'dummy.py'} dummy 0.1 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"REDIS_URL": url, "PYTHONPATH": str(REPO), "QT_RUNTIME__METRICS_PORTS__GOVERNOR": "0"})
    run = Running([sys.executable, "-m", "ops.cli", "run", "--procfile", str(qt_run_dir / "Procfile"),
                   "--redis-dir", str(qt_run_dir / "redis")], REPO, env)
    try:
        run.wait_for("started the embedded Redis")
        run.wait_for("consumer groups ready")
        run.wait_for('"event": "service_ready"', timeout_s=90)
        assert answers(url)
        run.process.send_signal(signal.SIGINT)
        rc = run.finish(timeout_s=90)
    finally:
        if run.process.poll() is None:
            run.process.kill()
    out = "\n".join(run.lines)
    assert rc == 0, out
    assert sum("SIGINT received" in line for line in run.lines) == 1
    assert "governor drained and stopped (rc 0)" in out and "dummy drained and stopped (rc 0)" in out
    assert "redis-server (pid" in out and "stopped (rc 0)" in out.split("redis-server (pid")[1]
    assert not answers(url)
    assert (qt_run_dir / "redis" / "appendonly.aof").exists() or any((qt_run_dir / "redis").iterdir())


def test_qt_run_profile_names_a_file_of_the_config_directory() -> None:
    """`--profile NAME` is config/NAME.toml (exit 2 when there is none, or when QT_CONFIG is set too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"PYTHONPATH": str(REPO), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    missing = subprocess.run([sys.executable, "-m", "ops.cli", "run", "--profile", "nope"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no profile nope" in missing.stdout
    both = subprocess.run([sys.executable, "-m", "ops.cli", "run", "--profile", "demo"], cwd=REPO,
                          env={**env, "QT_CONFIG": str(REPO / "config" / "demo.toml")}, capture_output=True, text=True,
                          timeout=60)
    assert both.returncode == 2 and "give one" in both.stdout
