"""ai_engine as a real process: 503 before a model, then ``qt train`` (a subprocess) writes one and the
running engine serves predictions from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from ops.redis_server import free_port
from tests.helpers import poll_sync
from tests.integration.processes import REPO, Proc
from tests.unit.ai_engine.data import momentum_closes, write_kline_file


def rows(closes: list[float]) -> list[list[str]]:
    return [[str(i * 60_000), f"{c:.4f}", f"{c + 0.01:.4f}", f"{c - 0.01:.4f}", f"{c:.4f}", "1"]
            for i, c in enumerate(closes)]


def test_not_ready_then_trained_then_predicting(redis_url: str, tmp_path: Path) -> None:
    """Without a model: /health says ready false, model null and /predict answers 503 "not ready".
    ``qt train`` prints held-out accuracy and log-loss and writes the versioned npz + JSON; the running
    engine picks the model up and predicts BUY after a run-up and SELL after a drop (momentum)."""
    port = free_port()
    models = tmp_path / "models"
    base = f"http://127.0.0.1:{port}"
    proc = Proc(["-m", "services.ai_engine"],
                {"REDIS_URL": redis_url, "QT_HTTP__PORTS__AI_ENGINE": str(port),
                 "QT_SIGNAL__MODEL_DIR": str(models), "QT_SIGNAL__MODEL_RELOAD_S": "0.2"},
                tmp_path / "ai_engine.log").start()
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        poll_sync(up, timeout_s=30)
        health = httpx.get(f"{base}/health", timeout=2).json()
        assert health["ready"] is False and health["model"] is None and health["service"] == "ai_engine"
        flat = rows([100.0 + 0.01 * (i % 3) for i in range(60)])
        body = {"symbol": "BTCUSDT", "interval": "1m", "klines": flat}
        refused = httpx.post(f"{base}/predict", json=body, timeout=2)
        assert refused.status_code == 503 and refused.json() == {"detail": "not ready"}

        data = write_kline_file(tmp_path / "klines.json", momentum_closes(5000, seed=11))
        done = subprocess.run([sys.executable, "-m", "ops.cli", "train", "--data", str(data), "--out",
                               str(models), "--symbol", "BTCUSDT", "--interval", "1m", "--horizon", "1"],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "REDIS_URL": redis_url})
        assert done.returncode == 0, done.stderr
        accuracy = float(re.search(r"^accuracy (\d\.\d+)", done.stdout, re.M).group(1))  # type: ignore[union-attr]
        log_loss = float(re.search(r"^log_loss (\d\.\d+)", done.stdout, re.M).group(1))  # type: ignore[union-attr]
        assert accuracy > 0.6 and log_loss < 0.68
        assert "trained ai-logreg v1 on 5000 klines of BTCUSDT" in done.stdout
        assert sorted(p.name for p in models.iterdir()) == ["ai-logreg-v0001.json", "ai-logreg-v0001.npz"]

        def ready() -> bool:
            return httpx.post(f"{base}/predict", json=body, timeout=2).status_code == 200

        poll_sync(ready, timeout_s=15)
        run_up = rows([100.0] * 50 + [100.0 + 0.3 * i for i in range(1, 11)])
        drop = rows([100.0] * 50 + [100.0 - 0.3 * i for i in range(1, 11)])
        up_answer = httpx.post(f"{base}/predict", json={**body, "klines": run_up}, timeout=2).json()
        down_answer = httpx.post(f"{base}/predict", json={**body, "klines": drop}, timeout=2).json()
        assert up_answer["side"] == "BUY" and down_answer["side"] == "SELL"
        assert up_answer["model"] == "ai-logreg" and up_answer["version"] == 1 and up_answer["horizon"] == 1
        assert 0.5 <= up_answer["confidence"] <= 1.0
        assert up_answer["confidence"] == max(up_answer["p_up"], 1 - up_answer["p_up"])
        short = httpx.post(f"{base}/predict", json={**body, "klines": flat[:10]}, timeout=2)
        assert short.status_code == 422 and "need at least 21 klines" in short.json()["detail"]
        health = httpx.get(f"{base}/health", timeout=2).json()
        assert health["ready"] is True and health["model"]["version"] == 1
        assert abs(health["model"]["metrics"]["accuracy"] - accuracy) < 1e-4  # printed with 4 decimals
        assert proc.terminate() == 0
    finally:
        proc.kill()
        if proc.popen is not None and proc.popen.returncode not in (0, None):
            print(proc.log())
