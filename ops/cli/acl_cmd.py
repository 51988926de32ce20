"""``qt redis-acl``: the Redis ACL file of the fleet (one user per service), from the stream registry."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import typer

from ops import acl
from ops.cli.context import console, settings


def password_file(directory: Path, user: str) -> Path:
    """Where the password of ``user`` lives: the credential the unit's 10-redis-acl.conf drop-in loads
    (``/etc/credstore/quantum-<user>.redis``)."""
    return directory / f"quantum-{user}.redis"


def load_or_create_passwords(directory: Path) -> tuple[dict[str, str], list[str]]:
    """The password of every ACL user from ``directory``; a missing one is generated and written
    (mode 0600). Returns (user -> password, users whose password was created)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    found: dict[str, str] = {}
    created: list[str] = []
    for user in acl.users():
        path = password_file(directory, user)
        if path.is_file():
            found[user] = path.read_text(encoding="utf-8").strip()
            continue
        found[user] = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(found[user] + "\n")
        created.append(user)
    return found, created


def redis_acl(
    out: Path | None = typer.Option(None, "--out", help="Write the ACL file here (default: stdout)."),
    dialect: str = typer.Option("6.2", "--redis", help="Server version: 6.2 (the bundled one) or 7."),
    password_dir: Path | None = typer.Option(
        None, "--password-dir",
        help="Read each user's password from DIR/quantum-<user>.redis (created when missing, 0600); "
             "without it the users are on but nobody can log in until a password is set."),
    instance: list[str] = typer.Option(
        [], "--instance", help="Heartbeat instance <host>[-<n>] a service runs as (Redis 6.2; repeatable; "
                               "default: this host's)."),
) -> None:
    """Generate the Redis ACL file: each service may read what it consumes and write only what it
    produces and owns; a `qt` operator and an `admin` user; the default user off."""
    if dialect not in ("6.2", "7"):
        console.print(f"[red]--redis must be 6.2 or 7, not {dialect}[/red]")
        raise SystemExit(2)
    conf = settings()
    instances = instance or [f"{conf.host}-{conf.instance}" if conf.instance else conf.host]
    passwords: dict[str, str] = {}
    if password_dir is not None:
        passwords, created = load_or_create_passwords(password_dir)
        if created:
            console.print(f"created passwords for {', '.join(created)} in {password_dir}", style="dim")
    text = acl.render("7" if dialect == "7" else "6.2", passwords=passwords, instances=instances)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.chmod(0o640)
    console.print(f"wrote {out}: {len(acl.users()) + 1} users (dialect {dialect})")
