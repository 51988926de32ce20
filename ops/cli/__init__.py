"""``qt``: the operator's tool."""

from ops.cli.app import app, main

__all__ = ["app", "main"]
