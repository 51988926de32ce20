"""``qt train``: ai_engine's training (:mod:`services.ai_engine.train`) from the operator's tool."""

from __future__ import annotations

from pathlib import Path

import typer

from ops.cli.context import settings

EX_DATAERR = 65


def train(
    data: Path = typer.Option(..., "--data", help="Binance kline file (JSON, CSV or a data.binance.vision zip)."),
    out: Path | None = typer.Option(None, "--out", help="Model directory (default: signal.model_dir)."),
    symbol: str = typer.Option("", help="The symbol the file holds (default: from the file name)."),
    interval: str = typer.Option("", help="The klines' interval (default: from the file name or the klines' "
                                          "spacing)."),
    horizon: int = typer.Option(5, min=1, max=500, help="Label: direction of the close this many klines on."),
    test_fraction: float = typer.Option(0.2, min=0.01, max=0.9, help="Share of the newest rows held out."),
    force: bool = typer.Option(False, "--force", help="Save (make current) even a model that does not beat the "
                                                      "majority-class baseline; recorded in its metadata."),
) -> None:
    """Train the direction model (numpy logistic regression), print its held-out accuracy and log-loss beside
    the majority-class baseline, and make it the current model only when it beats that baseline (exit 1
    otherwise, unless --force)."""
    # imported here: the other qt commands do not need numpy
    from services.ai_engine.train import EXIT_BELOW_BASELINE, TrainingError, refusal, report, train_file

    conf = settings()
    try:
        result = train_file(conf, data, out=out, symbol=symbol, interval=interval, horizon=horizon,
                            test_fraction=test_fraction, force=force)
    except TrainingError as e:
        typer.echo(f"qt train: {e}", err=True)
        raise SystemExit(EX_DATAERR) from None
    for line in report(result):
        typer.echo(line)
    if not result.saved:
        typer.echo(f"qt train: {refusal(result)}", err=True)
        raise SystemExit(EXIT_BELOW_BASELINE)
