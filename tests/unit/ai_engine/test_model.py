"""Features and the logistic model: no look-ahead, labels, learning a pattern, versioned files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from common.contracts import Side
from services.ai_engine.features import (
    FeatureSpec,
    closes_of,
    dataset,
    direction_labels,
    feature_matrix,
    latest_features,
)
from services.ai_engine.model import LogisticModel, load, load_latest, save, train, versions
from services.ai_engine.predictor import ModelStore, predict
from tests.unit.ai_engine.data import momentum_closes

SPEC = FeatureSpec()


def test_feature_rows_use_no_future_closes() -> None:
    """Row t depends on closes up to t only: changing later closes leaves earlier rows unchanged."""
    closes = momentum_closes(200)
    changed = closes.copy()
    changed[150:] *= 1.2
    a, b = feature_matrix(closes, SPEC), feature_matrix(changed, SPEC)
    assert np.array_equal(a[:150], b[:150], equal_nan=True)
    assert not np.allclose(a[150], b[150])


def test_feature_values() -> None:
    """ret_k is log(c_t/c_{t-k}); rows before the warm-up are NaN; the warm-up is 22 closes."""
    closes = momentum_closes(100)
    x = feature_matrix(closes, SPEC)
    assert SPEC.names == ["ret_1", "ret_3", "ret_6", "ret_12", "ema_spread", "rsi", "vol_20"]
    assert x.shape == (100, 7)
    assert x[50, 0] == pytest.approx(math.log(closes[50] / closes[49]))
    assert x[50, 3] == pytest.approx(math.log(closes[50] / closes[38]))
    assert x[50, 6] == pytest.approx(np.std(np.diff(np.log(closes[30:51]))))
    assert SPEC.min_klines == 21
    assert not np.all(np.isfinite(x[SPEC.min_klines - 2]))
    assert np.all(np.isfinite(x[SPEC.min_klines - 1]))
    with pytest.raises(ValueError, match="need at least 21 klines"):
        latest_features(closes[:20], SPEC)


def test_direction_labels() -> None:
    """1 when the close h klines on is higher, 0 when lower, NaN when equal or beyond the data."""
    labels = direction_labels(np.array([1.0, 2.0, 1.5, 1.5, 3.0]), 1)
    assert np.array_equal(labels, np.array([1.0, 0.0, np.nan, 1.0, np.nan]), equal_nan=True)
    assert np.array_equal(direction_labels(np.array([1.0, 2.0, 0.5]), 2), np.array([0.0, np.nan, np.nan]),
                          equal_nan=True)


def test_learns_a_momentum_pattern_on_held_out_data() -> None:
    """On AR(1) momentum returns the model beats a coin well on the held-out tail: accuracy above 0.62
    (theory: 2/3) and log-loss under ln 2."""
    trained = train(momentum_closes(6000), SPEC, horizon=1)
    m = trained.metrics
    assert m["accuracy"] > 0.62
    assert m["accuracy"] > m["baseline_accuracy"] + 0.1
    assert m["log_loss"] < math.log(2) - 0.02
    assert m["test_rows"] == pytest.approx(0.2 * (m["test_rows"] + m["train_rows"]), abs=1)


def test_nothing_to_learn_gives_coin_accuracy() -> None:
    """On independent returns (phi = 0) held-out accuracy stays near 0.5: the test above is not luck."""
    trained = train(momentum_closes(6000, phi=0.0), SPEC, horizon=1)
    assert 0.45 < trained.metrics["accuracy"] < 0.56


def test_fit_recovers_a_known_logistic_rule() -> None:
    """Labels drawn from p = sigmoid(2·x0 − x1) give weights in that ratio (after standardisation)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20_000, 2))
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1])))).astype(float)
    model = LogisticModel.fit(x, y, l2=0.0)
    w = model.weights / model.scale
    assert w[0] == pytest.approx(2.0, rel=0.08)
    assert w[1] == pytest.approx(-1.0, rel=0.08)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    """Saved models get versions 1, 2, ...; loading gives the same predictions, spec and metrics, and
    the JSON says what the model is."""
    closes = momentum_closes(3000)
    trained = train(closes, SPEC, horizon=1, trained_on={"symbol": "BTCUSDT"})
    first, json_path, npz_path = save(tmp_path, trained)
    second, _, _ = save(tmp_path, trained)
    assert (first.version, second.version) == (1, 2)
    assert json_path.name == "ai-logreg-v0001.json" and npz_path.name == "ai-logreg-v0001.npz"
    assert versions(tmp_path) == [1, 2]
    loaded = load(tmp_path, 1)
    x, _ = dataset(closes, SPEC, 1)
    assert np.allclose(loaded.model.predict_proba(x), trained.model.predict_proba(x), rtol=0, atol=1e-12)
    assert loaded.spec == SPEC and loaded.horizon == 1 and loaded.metrics == trained.metrics
    spec = json.loads(json_path.read_text())
    assert spec["name"] == "ai-logreg" and spec["version"] == 1
    assert spec["features"]["names"] == SPEC.names and spec["trained_on"] == {"symbol": "BTCUSDT"}
    assert set(spec["metrics"]) >= {"accuracy", "log_loss", "baseline_accuracy"}
    latest = load_latest(tmp_path)
    assert latest is not None and latest.version == 2


def test_incomplete_version_is_not_served(tmp_path: Path) -> None:
    """A JSON without its npz (a save cut short) is not a version; an empty directory has no model."""
    assert load_latest(tmp_path) is None
    (tmp_path / "ai-logreg-v0007.json").write_text("{}")
    assert versions(tmp_path) == []


def test_predict_and_store_pick_up_new_versions(tmp_path: Path) -> None:
    """The store serves the newest version once it appears; predict gives side by p_up and confidence
    max(p, 1 - p) from kline rows."""
    store = ModelStore(tmp_path)
    assert store.refresh() is False and store.current is None
    trained = train(momentum_closes(3000), SPEC, horizon=1)
    save(tmp_path, trained)
    assert store.refresh() is True and store.current is not None and store.current.version == 1
    assert store.refresh() is False
    rising = [[i, "1", "1", "1", f"{100 + i * 0.1:.2f}", "1"] for i in range(60)]
    prediction = predict(store.current, rising)
    p_up = trained.p_up(latest_features(closes_of(rising), SPEC))
    assert prediction.p_up == pytest.approx(p_up)
    assert prediction.side is (Side.BUY if p_up >= 0.5 else Side.SELL)
    assert prediction.confidence == pytest.approx(max(p_up, 1 - p_up))
    assert prediction.model == "ai-logreg" and prediction.version == 1
