"""The model being served: picked up from the model directory (newest version), and asked for a side. A
model saved with ``qt train --force`` (it does not beat the majority-class baseline) is served with a
warning in the log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from common.contracts import Side
from services.ai_engine.features import closes_of, latest_features
from services.ai_engine.model import TrainedModel, load, versions

log = structlog.get_logger()


@dataclass(frozen=True)
class Prediction:
    side: Side
    confidence: float
    p_up: float
    model: str
    version: int
    horizon: int


def predict(trained: TrainedModel, klines: Sequence[Sequence[Any]]) -> Prediction:
    """The side the model expects over its horizon after the last kline; confidence = max(p, 1 − p).
    ValueError when the klines are malformed or too few."""
    p_up = trained.p_up(latest_features(closes_of(klines), trained.spec))
    side = Side.BUY if p_up >= 0.5 else Side.SELL
    return Prediction(side=side, confidence=max(p_up, 1.0 - p_up), p_up=p_up, model=trained.name,
                      version=trained.version, horizon=trained.horizon)


class ModelStore:
    """The newest complete model of a directory; :meth:`refresh` picks up one written later."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.current: TrainedModel | None = None
        self.last_error = ""

    def refresh(self) -> bool:
        """Load a newer version if there is one; True when the served model changed. A version that
        cannot be read is logged and skipped (the one in service stays)."""
        found = versions(self.directory)
        if not found or (self.current is not None and found[-1] <= self.current.version):
            return False
        newest = found[-1]
        try:
            self.current = load(self.directory, newest)
        except (OSError, ValueError, KeyError) as e:
            if self.last_error != str(e):
                log.error("model_unreadable", directory=str(self.directory), version=newest, error=str(e))
            self.last_error = str(e)
            return False
        self.last_error = ""
        log.info("model_loaded", name=self.current.name, version=newest, horizon=self.current.horizon,
                 accuracy=self.current.metrics.get("accuracy"))
        if self.current.forced:
            judged = self.current.evaluation
            log.warning("model_forced", name=self.current.name, version=newest, accuracy=judged.accuracy,
                        baseline_accuracy=judged.baseline_accuracy, log_loss=judged.log_loss,
                        baseline_log_loss=judged.baseline_log_loss,
                        hint="saved with qt train --force: it does not beat the majority-class baseline")
        return True
