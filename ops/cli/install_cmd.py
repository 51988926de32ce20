"""``qt install``: the systemd units of the fleet rendered for an install prefix and a user."""

from __future__ import annotations

from pathlib import Path

import typer

from ops import deploy
from ops.cli.context import console


def install(
    prefix: Path = typer.Option(..., "--prefix", help="The install tree: the repository with its .venv."),
    user: str = typer.Option(deploy.DEFAULT_USER, "--user", help="The system user the services run as."),
    dest: Path = typer.Option(Path("/etc/systemd/system"), "--dest", help="Where the units are written."),
    redis_acl: bool = typer.Option(
        False, "--redis-acl",
        help="Needed when Redis enforces ACL users (qt redis-acl): a 10-redis-acl.conf drop-in per unit sets "
             f"QT_REDIS_USERNAME and loads the password credential from {deploy.CREDSTORE}/quantum-<service>.redis."),
    binance: bool = typer.Option(
        False, "--binance",
        help="Needed for exchange=binance or binance-testnet (or market_source=binance): a 20-binance.conf "
             f"drop-in for {', '.join(deploy.BINANCE_SERVICES)} opens outbound network and loads the API key "
             f"and secret credentials from {deploy.CREDSTORE}/quantum.binance-api-key and "
             "quantum.binance-api-secret."),
) -> None:
    """Render deploy/systemd/ for PREFIX and USER into DEST (then: systemctl daemon-reload;
    systemctl enable --now quantum-trader.target).

    The base units load no credentials: on Binance add --binance, with a Redis that enforces ACLs add
    --redis-acl (each writes the drop-in that loads that secret with LoadCredential=); on the paper
    exchange with an open local Redis neither is needed."""
    options = deploy.InstallOptions(prefix=str(prefix), user=user, redis_acl=redis_acl, binance=binance)
    try:
        files = deploy.render_all(options)
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        raise SystemExit(2) from None
    for path in deploy.write_all(files, dest):
        console.print(str(path))
    console.print(f"{len(files)} files; next: systemctl daemon-reload && systemctl enable --now {deploy.TARGET}")
    if not (binance or redis_acl):
        console.print("no drop-ins: the units load no credentials (on Binance: --binance; Redis with ACLs: "
                      "--redis-acl)")
