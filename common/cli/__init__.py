"""``qt``: the operator's tool."""

from common.cli.app import app, main

__all__ = ["app", "main"]
