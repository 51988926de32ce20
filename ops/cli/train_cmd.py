"""``qt train``: train ai_engine's direction model on a Binance kline file and write it, versioned, to
``signal.model_dir`` (or ``--out``). Metrics are measured on the held-out tail of the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    # imported here: the other qt commands do not need numpy or the services' modules
    from services.ai_engine.features import FeatureSpec
    from services.ai_engine.model import model_dir, save
    from services.ai_engine.model import train as fit
    from services.marketdata.replay import KlineFileError, load_klines

    conf = settings()
    interval = interval or conf.marketdata.kline_interval
    try:
        klines = load_klines(data, symbol or "UNKNOWN", interval)
    except KlineFileError as e:
        typer.echo(f"qt train: {e}", err=True)
        raise SystemExit(EX_DATAERR) from None
    closes = np.array([float(k.close) for k in klines], dtype=np.float64)
    spec = FeatureSpec(ema_fast=conf.signal.ema_fast, ema_slow=conf.signal.ema_slow)
    try:
        trained = fit(closes, spec, horizon, test_fraction=test_fraction,
                      trained_on={"symbol": symbol, "interval": interval, "data": str(data),
                                  "klines": len(klines)})
    except (ValueError, np.linalg.LinAlgError) as e:
        typer.echo(f"qt train: cannot train on {data}: {e}", err=True)
        raise SystemExit(EX_DATAERR) from None
    directory = out if out is not None else model_dir(conf.signal.model_dir)
    saved, json_path, npz_path = save(directory, trained)
    m = saved.metrics
    typer.echo(f"trained {saved.name} v{saved.version} on {len(klines)} klines"
               f"{' of ' + symbol if symbol else ''} ({interval}, horizon {horizon})")
    typer.echo(f"accuracy {m['accuracy']:.4f}  (held-out tail, {int(m['test_rows'])} rows; "
               f"majority class {m['baseline_accuracy']:.4f})")
    typer.echo(f"log_loss {m['log_loss']:.4f}")
    typer.echo(f"train    accuracy {m['train_accuracy']:.4f}, log_loss {m['train_log_loss']:.4f} "
               f"({int(m['train_rows'])} rows)")
    typer.echo(f"model    {npz_path}")
    typer.echo(f"spec     {json_path}")
