"""The ``qt`` Typer application; each command group lives in its own module."""

from __future__ import annotations

from ops.cli import (
    acl_cmd,
    backtest_cmd,
    books_cmd,
    contract_cmd,
    data_cmd,
    ess_cmd,
    install_cmd,
    policy_cmd,
    redis_cmd,
    streams_cmd,
    trace_cmd,
    train_cmd,
    wiring_cmd,
)
from ops.cli.context import new_app

app = new_app(help="Quantum Trader operator tool.", no_args_is_help=True, add_completion=False)
app.add_typer(streams_cmd.app, name="streams")
app.add_typer(ess_cmd.app, name="ess")
app.add_typer(policy_cmd.app, name="policy")
app.command("redis")(redis_cmd.redis)
app.command("run")(redis_cmd.run)
app.command("train")(train_cmd.train)
app.command("backtest")(backtest_cmd.backtest)
app.add_typer(data_cmd.app, name="data")
app.command("status")(wiring_cmd.status)
app.command("wiring")(wiring_cmd.wiring)
app.command("trace")(trace_cmd.trace)
app.command("positions")(books_cmd.positions)
app.command("pnl")(books_cmd.pnl)
app.command("trades")(books_cmd.trades)
app.command("close")(books_cmd.close)
app.command("contract-check")(contract_cmd.contract_check)
app.command("install")(install_cmd.install)
app.command("redis-acl")(acl_cmd.redis_acl)


def main() -> None:
    app()
