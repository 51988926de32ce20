"""Training judged against the majority-class baseline: the pure ``fit``, the refusal to save a model that
does not beat the baseline, ``force`` recorded in the model, the warning when a forced model is served,
and the interval taken from the file instead of a default."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from common.config import load_settings
from services.ai_engine.features import FeatureSpec
from services.ai_engine.model import Evaluation, load, majority_baseline, versions
from services.ai_engine.predictor import ModelStore
from services.ai_engine.train import TrainingError, fit, refusal, report, train_file
from tests.unit.ai_engine.data import drift_closes, klines_of, momentum_closes, write_kline_file


def test_majority_baseline_is_fitted_on_the_head() -> None:
    """Head 2 ups of 3: the baseline says up with p = 2/3. On a tail of 1 up and 3 downs that is accuracy
    1/4 and log-loss −(ln 2/3 + 3 ln 1/3)/4 (the tail's own majority is not peeked at)."""
    acc, loss = majority_baseline(np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    assert acc == pytest.approx(0.25)
    assert loss == pytest.approx(-(math.log(2 / 3) + 3 * math.log(1 / 3)) / 4)
    assert majority_baseline(np.array([1.0, 0.0]), np.array([1.0, 0.0]))[0] == pytest.approx(0.5)  # tie: up


def test_beating_needs_both_accuracy_and_log_loss() -> None:
    def judged(acc: float, loss: float) -> Evaluation:
        return Evaluation(accuracy=acc, log_loss=loss, baseline_accuracy=0.55, baseline_log_loss=0.69, test_rows=100)

    assert judged(0.56, 0.68).beats_baseline
    assert not judged(0.55, 0.68).beats_baseline  # a tie is not better
    assert not judged(0.60, 0.70).beats_baseline
    assert judged(0.5, 0.6).accuracy_error == pytest.approx(0.05)


def test_fit_is_pure_and_measures_the_held_out_tail() -> None:
    """fit on klines returns an unsaved model (version 0) and its evaluation — the same numbers as the
    model's metrics — and records what the klines were; momentum beats the baseline by a wide margin."""
    klines = klines_of(momentum_closes(4000), "ETHUSDT", "15m")
    model, evaluation = fit(klines, spec=FeatureSpec(), horizon=1, test_fraction=0.25)
    assert model.version == 0 and not model.forced
    assert evaluation == model.evaluation
    assert evaluation.beats_baseline and evaluation.accuracy > evaluation.baseline_accuracy + 0.1
    assert evaluation.test_rows == pytest.approx(0.25 * (evaluation.test_rows + evaluation.train_rows), abs=1)
    assert model.trained_on == {"symbol": "ETHUSDT", "interval": "15m", "klines": 4000,
                                "first_open_time": klines[0].open_time, "last_open_time": klines[-1].open_time}
    with pytest.raises(TrainingError, match="too few rows"):
        fit(klines[:23], horizon=1)
    with pytest.raises(TrainingError, match="no klines"):
        fit([])


def test_a_model_that_does_not_beat_the_baseline_is_not_saved(tmp_path: Path) -> None:
    """On drifting prices with nothing to learn the model can only match "always up": it is not saved,
    the report says so beside the numbers, and nothing is in the model directory."""
    data = write_kline_file(tmp_path / "drift.json", drift_closes())
    out = tmp_path / "models"

    result = train_file(load_settings(), data, out=out, symbol="BTCUSDT", horizon=1)

    assert not result.saved and not result.evaluation.beats_baseline
    assert result.evaluation.accuracy <= result.evaluation.baseline_accuracy
    assert result.evaluation.baseline_accuracy > 0.65
    assert versions(out) == [] and not out.exists()
    lines = report(result)
    assert lines[0] == "trained ai-logreg (not saved) on 4000 klines of BTCUSDT (1m, horizon 1)"
    assert "NOT beaten" in lines[4]
    assert refusal(result).startswith("not saved: the model does not beat the majority-class baseline")


def test_force_saves_it_and_records_it(tmp_path: Path) -> None:
    """--force saves the model below the baseline with ``forced: true`` in its JSON, read back by load;
    a model that beats the baseline is not marked forced even with force."""
    out = tmp_path / "models"
    drift = write_kline_file(tmp_path / "drift.json", drift_closes())
    forced = train_file(load_settings(), drift, out=out, horizon=1, force=True)
    assert forced.saved and forced.model.version == 1 and forced.model.forced
    assert json.loads((out / "ai-logreg-v0001.json").read_text())["forced"] is True
    assert load(out, 1).forced
    assert any(line.startswith("forced ") for line in report(forced))

    momentum = write_kline_file(tmp_path / "momentum.json", momentum_closes(4000))
    honest = train_file(load_settings(), momentum, out=out, horizon=1, force=True)
    assert honest.model.version == 2 and not honest.model.forced
    assert json.loads((out / "ai-logreg-v0002.json").read_text())["forced"] is False


def test_serving_a_forced_model_logs_a_warning(tmp_path: Path) -> None:
    """The store logs model_forced (a warning, with the numbers) once when it picks up a forced model, and
    nothing of the kind for an honest one."""
    out = tmp_path / "models"
    train_file(load_settings(), write_kline_file(tmp_path / "m.json", momentum_closes(3000)), out=out, horizon=1)
    store = ModelStore(out)
    with capture_logs() as logs:
        assert store.refresh()
    assert [e["event"] for e in logs] == ["model_loaded"]

    train_file(load_settings(), write_kline_file(tmp_path / "d.json", drift_closes()), out=out, horizon=1,
               force=True)
    with capture_logs() as logs:
        assert store.refresh()
        assert not store.refresh()
    warnings = [e for e in logs if e["event"] == "model_forced"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning" and warnings[0]["version"] == 2
    assert warnings[0]["accuracy"] <= warnings[0]["baseline_accuracy"]


def test_interval_comes_from_the_file_not_a_default(tmp_path: Path) -> None:
    """A 5m file with a plain name is 5m from its spacing (the configured kline_interval is 1m); a
    Binance archive gives symbol and interval by its name; both are recorded with the model."""
    settings = load_settings()
    assert settings.marketdata.kline_interval == "1m"
    plain = write_kline_file(tmp_path / "klines.json", momentum_closes(3000), interval_ms=300_000)
    result = train_file(settings, plain, out=tmp_path / "a", horizon=1)
    assert result.interval == "5m" and result.model.trained_on["interval"] == "5m"
    assert result.model.trained_on["symbol"] == ""
    assert "(5m, horizon 1)" in report(result)[0]

    rows = json.loads(plain.read_text())
    csv = "\n".join(",".join(str(cell) for cell in row) for row in rows) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("SOLUSDT-5m-2023-11.csv", csv)
    (tmp_path / "SOLUSDT-5m-2023-11.zip").write_bytes(buffer.getvalue())
    archived = train_file(settings, tmp_path / "SOLUSDT-5m-2023-11.zip", out=tmp_path / "b", horizon=1)
    assert (archived.symbol, archived.interval) == ("SOLUSDT", "5m")
    assert archived.model.trained_on["symbol"] == "SOLUSDT"
    assert archived.evaluation == result.evaluation  # the same klines, the same model
