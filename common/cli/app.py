"""The ``qt`` Typer application; each command group lives in its own module."""

from __future__ import annotations

import typer

from common.cli import redis_cmd, streams_cmd

app = typer.Typer(help="Quantum Trader operator tool.", no_args_is_help=True, add_completion=False)
app.add_typer(streams_cmd.app, name="streams")
app.command("redis")(redis_cmd.redis)
app.command("run")(redis_cmd.run)


def main() -> None:
    app()
