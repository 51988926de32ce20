"""The direction model: logistic regression in numpy, and its versioned files.

A model is two files in the model directory: ``ai-logreg-v0003.npz`` (standardisation and weights)
and ``ai-logreg-v0003.json`` (name, version, feature spec, label horizon, training metrics, and
``forced`` when it was saved although it does not beat the majority-class baseline). The JSON is
written last, by rename, so a reader never sees a half-written model; the newest version with both
files is the one served (the current model).

A model is judged on the held-out tail against the majority-class baseline, fitted on the training
head as the model is: always answering the head's more frequent direction (accuracy), with the head's
share of ups as the probability (log-loss). It beats the baseline when it is better on both.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.config import REPO_ROOT
from common.contracts.base import now_ms
from services.ai_engine.features import FeatureSpec, FloatArray, dataset

MODEL_NAME = "ai-logreg"
_FILE_RE = re.compile(rf"^{re.escape(MODEL_NAME)}-v(\d{{4,}})\.json$")
_EPS = 1e-12


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0)))
    return out


@dataclass(frozen=True)
class LogisticModel:
    """``p(up) = sigmoid(w·((x − mean)/scale) + b)``."""

    weights: FloatArray
    bias: float
    mean: FloatArray
    scale: FloatArray

    @classmethod
    def fit(cls, x: FloatArray, y: FloatArray, *, l2: float = 1e-3, max_iter: int = 50,
            tol: float = 1e-8) -> LogisticModel:
        """Fit by Newton's method (IRLS) with an L2 penalty on the weights (not the bias)."""
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError("x must be (n, k) and y (n,), n > 0")
        if not np.all(np.isin(y, (0.0, 1.0))):
            raise ValueError("labels must be 0 or 1")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < _EPS] = 1.0
        z = np.column_stack([(x - mean) / scale, np.ones(len(x))])
        n, k = z.shape
        theta = np.zeros(k)
        penalty = np.full(k, l2 * n)
        penalty[-1] = 0.0
        for _ in range(max_iter):
            p = _sigmoid(z @ theta)
            gradient = z.T @ (p - y) + penalty * theta
            hessian = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(penalty) + _EPS * np.eye(k)
            step = np.linalg.solve(hessian, gradient)
            theta -= step
            if float(np.max(np.abs(step))) < tol:
                break
        return cls(weights=theta[:-1].copy(), bias=float(theta[-1]), mean=mean, scale=scale)

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """``p(up)`` per row (a 1-d row gives a 0-d array)."""
        return _sigmoid(((x - self.mean) / self.scale) @ self.weights + self.bias)


def accuracy(y: FloatArray, p: FloatArray) -> float:
    """Share of rows where ``p >= 0.5`` agrees with the label."""
    return float(np.mean((p >= 0.5) == (y == 1.0))) if len(y) else math.nan


def log_loss(y: FloatArray, p: FloatArray) -> float:
    """Mean binary cross-entropy (probabilities clipped away from 0 and 1)."""
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))) if len(y) else math.nan


@dataclass(frozen=True)
class Evaluation:
    """A model measured on the held-out tail beside the majority-class baseline (and on its own head)."""

    accuracy: float
    log_loss: float
    baseline_accuracy: float
    baseline_log_loss: float
    test_rows: int
    train_accuracy: float = math.nan
    train_log_loss: float = math.nan
    train_rows: int = 0

    @property
    def beats_baseline(self) -> bool:
        """Better than the baseline on the held-out tail in both accuracy and log-loss."""
        return self.accuracy > self.baseline_accuracy and self.log_loss < self.baseline_log_loss

    @property
    def accuracy_error(self) -> float:
        """The standard error of the held-out accuracy, ``sqrt(a(1 − a)/n)``: a model can beat the baseline
        by luck by about this much."""
        if self.test_rows <= 0 or math.isnan(self.accuracy):
            return math.nan
        return math.sqrt(self.accuracy * (1.0 - self.accuracy) / self.test_rows)

    def metrics(self) -> dict[str, float]:
        """As a model's ``metrics`` (what its JSON holds)."""
        return {"accuracy": self.accuracy, "log_loss": self.log_loss, "baseline_accuracy": self.baseline_accuracy,
                "baseline_log_loss": self.baseline_log_loss, "test_rows": float(self.test_rows),
                "train_accuracy": self.train_accuracy, "train_log_loss": self.train_log_loss,
                "train_rows": float(self.train_rows)}

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> Evaluation:
        """From a model's ``metrics``; NaN for what an older model's JSON does not hold."""
        def get(name: str) -> float:
            return float(metrics.get(name, math.nan))

        return cls(accuracy=get("accuracy"), log_loss=get("log_loss"), baseline_accuracy=get("baseline_accuracy"),
                   baseline_log_loss=get("baseline_log_loss"), test_rows=int(metrics.get("test_rows", 0)),
                   train_accuracy=get("train_accuracy"), train_log_loss=get("train_log_loss"),
                   train_rows=int(metrics.get("train_rows", 0)))


@dataclass(frozen=True)
class TrainedModel:
    """A model with what it needs to be served and judged: its spec, horizon and metrics."""

    model: LogisticModel
    spec: FeatureSpec
    horizon: int
    version: int = 0
    name: str = MODEL_NAME
    created_at: int = field(default_factory=now_ms)
    #: what it was trained on: symbol, interval, data file, row counts
    trained_on: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: saved (``qt train --force``) although it does not beat the majority-class baseline
    forced: bool = False

    def p_up(self, row: FloatArray) -> float:
        return float(self.model.predict_proba(row))

    @property
    def evaluation(self) -> Evaluation:
        return Evaluation.from_metrics(self.metrics)

    def describe(self) -> dict[str, Any]:
        """The JSON spec of this model (what ``/health`` and the JSON file say)."""
        return {"name": self.name, "version": self.version, "created_at": self.created_at,
                "horizon": self.horizon, "features": self.spec.to_dict(), "trained_on": self.trained_on,
                "metrics": self.metrics, "forced": self.forced}


def train_test_split(x: FloatArray, y: FloatArray, test_fraction: float
                     ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The head for training, the tail (the most recent rows) held out: no look-ahead across the cut."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be within (0, 1)")
    cut = round(len(y) * (1.0 - test_fraction))
    if cut < 1 or cut >= len(y):
        raise ValueError(f"too few rows ({len(y)}) to hold out {test_fraction:.0%}")
    return x[:cut], y[:cut], x[cut:], y[cut:]


def evaluate(model: LogisticModel, x: FloatArray, y: FloatArray) -> dict[str, float]:
    """Accuracy and log-loss of ``model`` on the rows ``x``, ``y``."""
    p = model.predict_proba(x)
    return {"accuracy": accuracy(y, p), "log_loss": log_loss(y, p), "rows": float(len(y))}


def majority_baseline(y_train: FloatArray, y_test: FloatArray) -> tuple[float, float]:
    """``(accuracy, log_loss)`` on ``y_test`` of the majority-class baseline fitted on ``y_train``: always
    the head's more frequent direction (up on a tie, as ``p >= 0.5`` is), and its share of ups as p."""
    prior = float(np.mean(y_train)) if len(y_train) else 0.5
    guess = np.full(len(y_test), prior)
    return accuracy(y_test, np.where(guess >= 0.5, 1.0, 0.0)), log_loss(y_test, guess)


# --- files -----------------------------------------------------------------------------------------


def _stem(version: int) -> str:
    return f"{MODEL_NAME}-v{version:04d}"


def versions(directory: Path) -> list[int]:
    """The complete model versions in ``directory`` (JSON and npz both present), ascending."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _FILE_RE.match(path.name)
        if match and path.with_suffix(".npz").is_file():
            found.append(int(match.group(1)))
    return sorted(found)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(directory: Path, trained: TrainedModel) -> tuple[TrainedModel, Path, Path]:
    """Write ``trained`` as the next version in ``directory``; the saved model and its two files."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = versions(directory)
    version = (existing[-1] if existing else 0) + 1
    saved = replace(trained, version=version)
    npz_path = directory / f"{_stem(version)}.npz"
    json_path = directory / f"{_stem(version)}.json"
    m = saved.model
    _atomic_write(npz_path, lambda out: np.savez(out, weights=m.weights, bias=np.array([m.bias]),
                                                 mean=m.mean, scale=m.scale))
    text = json.dumps(saved.describe(), indent=2, sort_keys=True) + "\n"
    _atomic_write(json_path, lambda out: out.write(text.encode("utf-8")))
    return saved, json_path, npz_path


def load(directory: Path, version: int) -> TrainedModel:
    """One saved version; ValueError when its files do not agree with each other."""
    spec_data = json.loads((directory / f"{_stem(version)}.json").read_text(encoding="utf-8"))
    with np.load(directory / f"{_stem(version)}.npz") as arrays:
        model = LogisticModel(weights=arrays["weights"].astype(np.float64), bias=float(arrays["bias"][0]),
                              mean=arrays["mean"].astype(np.float64), scale=arrays["scale"].astype(np.float64))
    spec = FeatureSpec.from_dict(spec_data["features"])
    if not len(model.weights) == len(model.mean) == len(model.scale) == len(spec.names):
        raise ValueError(f"model v{version}: weights do not match its {len(spec.names)} features")
    return TrainedModel(model=model, spec=spec, horizon=int(spec_data["horizon"]), version=int(spec_data["version"]),
                        name=str(spec_data["name"]), created_at=int(spec_data["created_at"]),
                        trained_on=dict(spec_data.get("trained_on", {})),
                        metrics={k: float(v) for k, v in spec_data.get("metrics", {}).items()},
                        forced=bool(spec_data.get("forced", False)))


def load_latest(directory: Path) -> TrainedModel | None:
    """The newest complete version in ``directory``, or None when there is none."""
    found = versions(directory)
    return load(directory, found[-1]) if found else None


def train(closes: FloatArray, spec: FeatureSpec, horizon: int, *, test_fraction: float = 0.2,
          l2: float = 1e-3, trained_on: dict[str, Any] | None = None) -> TrainedModel:
    """Fit on the head of the series and measure on the held-out tail beside the majority-class baseline;
    the metrics describe exactly the model returned (it is not refitted on the tail)."""
    x, y = dataset(closes, spec, horizon)
    x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction)
    model = LogisticModel.fit(x_train, y_train, l2=l2)
    held_out = evaluate(model, x_test, y_test)
    in_sample = evaluate(model, x_train, y_train)
    base_accuracy, base_log_loss = majority_baseline(y_train, y_test)
    judged = Evaluation(accuracy=held_out["accuracy"], log_loss=held_out["log_loss"],
                        baseline_accuracy=base_accuracy, baseline_log_loss=base_log_loss, test_rows=len(y_test),
                        train_accuracy=in_sample["accuracy"], train_log_loss=in_sample["log_loss"],
                        train_rows=len(y_train))
    return TrainedModel(model=model, spec=spec, horizon=horizon, trained_on=dict(trained_on or {}),
                        metrics=judged.metrics())


def model_dir(configured: str) -> Path:
    """``signal.model_dir`` as a path: relative names are under the repository root."""
    path = Path(configured)
    return path if path.is_absolute() else REPO_ROOT / path
