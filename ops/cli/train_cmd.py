"""``qt train``: ai_engine's training (:mod:`services.ai_engine.train`) from the operator's tool."""

from __future__ import annotations

from pathlib import Path

import typer

from ops.cli.context import settings

EX_DATAERR = 65


def train(
    data: Path = typer.Option(..., "--data", help="Binance kline file (JSON or CSV, Binance column order)."),
    out: Path | None = typer.Option(None, "--out", help="Model directory (default: signal.model_dir)."),
    symbol: str = typer.Option("", help="The symbol the file holds (recorded with the model)."),
    interval: str = typer.Option("", help="The klines' interval (default: marketdata.kline_interval)."),
    horizon: int = typer.Option(5, min=1, max=500, help="Label: direction of the close this many klines on."),
    test_fraction: float = typer.Option(0.2, min=0.01, max=0.9, help="Share of the newest rows held out."),
) -> None:
    """Train the direction model (numpy logistic regression) and print its held-out metrics."""
    # imported here: the other qt commands do not need numpy
    from services.ai_engine.train import TrainingError, report, train_file

    conf = settings()
    try:
        result = train_file(conf, data, out=out, symbol=symbol, interval=interval, horizon=horizon,
                            test_fraction=test_fraction)
    except TrainingError as e:
        typer.echo(f"qt train: {e}", err=True)
        raise SystemExit(EX_DATAERR) from None
    for line in report(result, symbol=symbol, interval=interval or conf.marketdata.kline_interval,
                       horizon=horizon):
        typer.echo(line)
