"""``qt train`` as an operator runs it: the held-out numbers beside the majority-class baseline, a refusal
(exit 1, one line) for a model that does not beat it, and ``--force`` to save it anyway, recorded."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.cli.qt import qt
from tests.unit.ai_engine.data import drift_closes, write_kline_file

UNUSED_REDIS = "redis://127.0.0.1:1/0"  # qt train needs none


def test_below_the_baseline_is_refused_unless_forced(tmp_path: Path) -> None:
    """Drifting prices with nothing to learn: the numbers are printed, one line on stderr says why the
    model was not made current, exit 1, no file. With --force: exit 0, v1 saved with ``forced: true``."""
    data = write_kline_file(tmp_path / "XRP_USDT_USDT-5m-futures.json", drift_closes(3000), interval_ms=300_000)
    out = tmp_path / "models"

    refused = qt(UNUSED_REDIS, "train", "--data", str(data), "--out", str(out), "--horizon", "1")

    assert refused.returncode == 1
    assert refused.stdout.startswith("trained ai-logreg (not saved) on 3000 klines of XRPUSDT (5m, horizon 1)\n")
    assert "majority class" in refused.stdout and "log_loss" in refused.stdout
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert refused.stderr.startswith("qt train: not saved: the model does not beat the majority-class baseline")
    assert "--force" in refused.stderr
    assert not out.exists()

    forced = qt(UNUSED_REDIS, "train", "--data", str(data), "--out", str(out), "--horizon", "1", "--force")

    assert forced.returncode == 0, forced.stderr
    assert "trained ai-logreg v1 on 3000 klines of XRPUSDT (5m, horizon 1)" in forced.stdout
    spec = json.loads((out / "ai-logreg-v0001.json").read_text())
    assert spec["forced"] is True and spec["trained_on"]["interval"] == "5m"
    assert spec["metrics"]["accuracy"] <= spec["metrics"]["baseline_accuracy"]


def test_a_file_that_cannot_be_read_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("open_time,open\n1,2\n")
    done = qt(UNUSED_REDIS, "train", "--data", str(tmp_path / "bad.csv"), "--symbol", "BTCUSDT")
    assert done.returncode == 65 and "columns" in done.stderr
