"""Training: ai_engine's own entry point (``python -m services.ai_engine.train --data FILE``), and what
``qt train`` calls.

:func:`fit` is the pure part — klines in, a model and its held-out evaluation out, nothing written —
which the backtest's walk-forward calls on each window. :func:`train_file` reads a kline file (its
interval from the file: the name or the klines' spacing), fits, and saves the model as the next
version in ``signal.model_dir`` (or ``out``), which makes it the one ai_engine serves — only when it
beats the majority-class baseline on the held-out tail, or when forced (then recorded as ``forced``
in the model's JSON, and ai_engine warns when it serves it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Settings, settings_or_exit
from common.kline_files import KlineFileError, load_klines, parse_file_name
from common.klines import Kline
from services.ai_engine.features import FeatureSpec
from services.ai_engine.model import Evaluation, TrainedModel, model_dir, save, train

EX_DATAERR = 65
#: exit status when the model does not beat the baseline and was not saved
EXIT_BELOW_BASELINE = 1
#: the symbol recorded for a file whose name does not say it (and none was given)
UNNAMED_SYMBOL = "UNKNOWN"


class TrainingError(ValueError):
    """The klines cannot be trained on (unreadable, too short, degenerate): nothing was written."""


def feature_spec(settings: Settings) -> FeatureSpec:
    """The features a model trained for this configuration uses (the signal's EMA periods)."""
    return FeatureSpec(ema_fast=settings.signal.ema_fast, ema_slow=settings.signal.ema_slow)


def fit(klines: Sequence[Kline], *, spec: FeatureSpec | None = None, horizon: int = 5, test_fraction: float = 0.2,
        trained_on: dict[str, Any] | None = None) -> tuple[TrainedModel, Evaluation]:
    """Fit the direction model on the head of ``klines`` (oldest first) and measure it on the held-out tail
    (``test_fraction`` of the rows, the newest) beside the majority-class baseline. Pure: nothing is saved
    or made current. ``trained_on`` is recorded with the model (symbol, interval, count and open times of
    the klines by default). TrainingError when there are too few klines or they are degenerate."""
    if not klines:
        raise TrainingError("no klines to train on")
    closes = np.array([float(k.close) for k in klines], dtype=np.float64)
    recorded = {"symbol": klines[0].symbol, "interval": klines[0].interval, "klines": len(klines),
                "first_open_time": klines[0].open_time, "last_open_time": klines[-1].open_time}
    recorded.update(trained_on or {})
    try:
        trained = train(closes, spec or FeatureSpec(), horizon, test_fraction=test_fraction, trained_on=recorded)
    except (ValueError, np.linalg.LinAlgError) as e:
        raise TrainingError(f"cannot train on {len(klines)} klines: {e}") from e
    return trained, trained.evaluation


@dataclass(frozen=True)
class Trained:
    """A model trained from a file: saved (version and files set) or, below the baseline and not forced,
    not saved (``saved`` False, no files)."""

    model: TrainedModel
    evaluation: Evaluation
    klines: int
    symbol: str
    interval: str
    horizon: int
    json_path: Path | None = None
    npz_path: Path | None = None

    @property
    def saved(self) -> bool:
        return self.json_path is not None


def train_file(settings: Settings, data: Path, *, out: Path | None = None, symbol: str = "", interval: str = "",
               horizon: int = 5, test_fraction: float = 0.2, force: bool = False) -> Trained:
    """Train on ``data`` and save the model when it beats the majority-class baseline (or ``force``, which
    is then recorded in the model); TrainingError when the file cannot be trained on. ``symbol`` and
    ``interval`` default to what the file says (its name; the interval else from the klines' spacing)."""
    if not symbol and parse_file_name(data) is None:
        symbol = UNNAMED_SYMBOL
    try:
        klines = load_klines(data, symbol, interval)
    except KlineFileError as e:
        raise TrainingError(str(e)) from e
    if not klines:
        raise TrainingError(f"{data}: no klines")
    symbol, interval = klines[0].symbol, klines[0].interval
    trained, evaluation = fit(klines, spec=feature_spec(settings), horizon=horizon, test_fraction=test_fraction,
                              trained_on={"symbol": "" if symbol == UNNAMED_SYMBOL else symbol, "data": str(data)})
    result = Trained(trained, evaluation, len(klines), symbol, interval, horizon)
    if not evaluation.beats_baseline and not force:
        return result
    if not evaluation.beats_baseline:
        trained = replace(trained, forced=True)
    directory = out if out is not None else model_dir(settings.signal.model_dir)
    saved, json_path, npz_path = save(directory, trained)
    return replace(result, model=saved, json_path=json_path, npz_path=npz_path)


def report(result: Trained) -> list[str]:
    """What a person reads about a trained model: its held-out metrics beside the majority-class baseline,
    and where it was saved (if it was)."""
    m, e = result.model, result.evaluation
    of = f" of {result.symbol}" if result.symbol and result.symbol != UNNAMED_SYMBOL else ""
    name = f"{m.name} v{m.version}" if result.saved else f"{m.name} (not saved)"
    lines = [
        f"trained {name} on {result.klines} klines{of} ({result.interval}, horizon {result.horizon})",
        f"accuracy {e.accuracy:.4f}  (± {e.accuracy_error:.4f}; held-out tail, {e.test_rows} rows; "
        f"majority class {e.baseline_accuracy:.4f})",
        f"log_loss {e.log_loss:.4f}  (majority class {e.baseline_log_loss:.4f})",
        f"train    accuracy {e.train_accuracy:.4f}, log_loss {e.train_log_loss:.4f} ({e.train_rows} rows)",
        f"baseline {'beaten' if e.beats_baseline else 'NOT beaten'} (needs higher accuracy and lower log_loss)",
    ]
    if result.saved:
        if m.forced:
            lines.append("forced   saved with --force although it does not beat the baseline (recorded in its "
                         "JSON; ai_engine warns when serving it)")
        lines += [f"model    {result.npz_path}", f"spec     {result.json_path}"]
    return lines


def refusal(result: Trained) -> str:
    """The one line saying why a model was not made current."""
    e = result.evaluation
    return (f"not saved: the model does not beat the majority-class baseline on the held-out tail "
            f"(accuracy {e.accuracy:.4f} vs {e.baseline_accuracy:.4f}, log_loss {e.log_loss:.4f} vs "
            f"{e.baseline_log_loss:.4f}); --force saves it anyway")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.ai_engine.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Binance kline file (JSON, CSV or zip)")
    parser.add_argument("--out", type=Path, default=None, help="model directory (default: signal.model_dir)")
    parser.add_argument("--symbol", default="", help="the symbol the file holds (default: from its name)")
    parser.add_argument("--interval", default="", help="the klines' interval (default: from the file)")
    parser.add_argument("--horizon", type=int, default=5, help="label: direction of the close this many klines on")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of the newest rows held out")
    parser.add_argument("--force", action="store_true", help="save even when it does not beat the baseline")
    args = parser.parse_args(argv)
    settings = settings_or_exit("ai_engine")
    try:
        result = train_file(settings, args.data, out=args.out, symbol=args.symbol, interval=args.interval,
                            horizon=args.horizon, test_fraction=args.test_fraction, force=args.force)
    except TrainingError as e:
        print(f"train: {e}", file=sys.stderr)
        raise SystemExit(EX_DATAERR) from None
    print("\n".join(report(result)))
    if not result.saved:
        print(f"train: {refusal(result)}", file=sys.stderr)
        raise SystemExit(EXIT_BELOW_BASELINE)


if __name__ == "__main__":
    main()
