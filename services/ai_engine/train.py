"""Training: ai_engine's own entry point (``python -m services.ai_engine.train --data FILE``), and what
``qt train`` calls. It fits the direction model on a kline file, measures it on the file's held-out
tail, and writes it as the next version in ``signal.model_dir`` (or ``out``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.config import Settings, settings_or_exit
from common.kline_files import KlineFileError, load_klines
from services.ai_engine.features import FeatureSpec
from services.ai_engine.model import TrainedModel, model_dir, save
from services.ai_engine.model import train as fit

EX_DATAERR = 65


class TrainingError(ValueError):
    """The file cannot be trained on (unreadable, too short, degenerate): nothing was written."""


@dataclass(frozen=True)
class Trained:
    """A model written: the model as saved, its two files, and how many klines it learnt from."""

    model: TrainedModel
    json_path: Path
    npz_path: Path
    klines: int


def train_file(settings: Settings, data: Path, *, out: Path | None = None, symbol: str = "", interval: str = "",
               horizon: int = 5, test_fraction: float = 0.2) -> Trained:
    """Train on ``data`` and save the model; TrainingError when the file cannot be trained on."""
    interval = interval or settings.marketdata.kline_interval
    try:
        klines = load_klines(data, symbol or "UNKNOWN", interval)
    except KlineFileError as e:
        raise TrainingError(str(e)) from e
    closes = np.array([float(k.close) for k in klines], dtype=np.float64)
    spec = FeatureSpec(ema_fast=settings.signal.ema_fast, ema_slow=settings.signal.ema_slow)
    try:
        trained = fit(closes, spec, horizon, test_fraction=test_fraction,
                      trained_on={"symbol": symbol, "interval": interval, "data": str(data), "klines": len(klines)})
    except (ValueError, np.linalg.LinAlgError) as e:
        raise TrainingError(f"cannot train on {data}: {e}") from e
    directory = out if out is not None else model_dir(settings.signal.model_dir)
    saved, json_path, npz_path = save(directory, trained)
    return Trained(saved, json_path, npz_path, len(klines))


def report(result: Trained, *, symbol: str, interval: str, horizon: int) -> list[str]:
    """What a person reads about a trained model: its held-out metrics beside the majority-class baseline."""
    m = result.model.metrics
    return [
        f"trained {result.model.name} v{result.model.version} on {result.klines} klines"
        f"{' of ' + symbol if symbol else ''} ({interval}, horizon {horizon})",
        f"accuracy {m['accuracy']:.4f}  (held-out tail, {int(m['test_rows'])} rows; "
        f"majority class {m['baseline_accuracy']:.4f})",
        f"log_loss {m['log_loss']:.4f}",
        f"train    accuracy {m['train_accuracy']:.4f}, log_loss {m['train_log_loss']:.4f} "
        f"({int(m['train_rows'])} rows)",
        f"model    {result.npz_path}",
        f"spec     {result.json_path}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.ai_engine.train", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="Binance kline file (JSON or CSV)")
    parser.add_argument("--out", type=Path, default=None, help="model directory (default: signal.model_dir)")
    parser.add_argument("--symbol", default="", help="the symbol the file holds (recorded with the model)")
    parser.add_argument("--interval", default="", help="the klines' interval (default: marketdata.kline_interval)")
    parser.add_argument("--horizon", type=int, default=5, help="label: direction of the close this many klines on")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of the newest rows held out")
    args = parser.parse_args(argv)
    settings = settings_or_exit("ai_engine")
    try:
        result = train_file(settings, args.data, out=args.out, symbol=args.symbol, interval=args.interval,
                            horizon=args.horizon, test_fraction=args.test_fraction)
    except TrainingError as e:
        print(f"train: {e}", file=sys.stderr)
        raise SystemExit(EX_DATAERR) from None
    interval = args.interval or settings.marketdata.kline_interval
    print("\n".join(report(result, symbol=args.symbol, interval=interval, horizon=args.horizon)))


if __name__ == "__main__":
    main()
