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
    redis_acl: bool = typer.Option(False, "--redis-acl",
                                   help="Log each service in to Redis as its own ACL user (qt redis-acl)."),
    binance: bool = typer.Option(False, "--binance",
                                 help="Open outbound network and load the API credentials for the units "
                                      "that talk to Binance."),
) -> None:
    """Render deploy/systemd/ for PREFIX and USER into DEST (then: systemctl daemon-reload;
    systemctl enable --now quantum-trader.target)."""
    options = deploy.InstallOptions(prefix=str(prefix), user=user, redis_acl=redis_acl, binance=binance)
    try:
        files = deploy.render_all(options)
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        raise SystemExit(2) from None
    for path in deploy.write_all(files, dest):
        console.print(str(path))
    console.print(f"{len(files)} files; next: systemctl daemon-reload && systemctl enable --now {deploy.TARGET}")
