"""Starting the fleet's processes in tests: real ``python -m`` processes with their own environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Proc:
    """A child process with its output in a log file (read it when a test fails)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("QT_") and k != "REDIS_URL"}
        full_env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
        full_env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("ab")
        self.popen = subprocess.Popen([sys.executable, *self.args], cwd=REPO, env=full_env, stdout=out,
                                      stderr=subprocess.STDOUT)
        out.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.popen and self.alive:
            self.popen.kill()
            self.popen.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.popen is not None
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
