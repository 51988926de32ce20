"""The ``qt`` Typer application; each command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(help="Quantum Trader operator tool.", no_args_is_help=True, add_completion=False)


def main() -> None:
    app()
