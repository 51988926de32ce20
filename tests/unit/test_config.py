"""Settings: defaults from config/default.toml, env overrides, credentials, and exit 78 when wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.config import EX_CONFIG, ConfigurationError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("QT_") or key in ("REDIS_URL", "CREDENTIALS_DIRECTORY"):
            monkeypatch.delenv(key)


def test_defaults_come_from_default_toml() -> None:
    """With nothing set, the settings are the documented defaults."""
    s = load_settings()
    assert s.exchange == "paper" and s.market_source == "synthetic"
    assert s.bus.max_deliveries == 5 and s.bus.claim_idle_ms == 30_000
    assert str(s.redis_url) == "redis://127.0.0.1:6379/0"
    assert s.runtime.metrics_ports["apply_layer"] == 9105


def test_environment_overrides_nested_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """QT_ variables (nested with __), a comma-separated QT_SYMBOLS and REDIS_URL override the file."""
    monkeypatch.setenv("QT_BUS__MAX_DELIVERIES", "7")
    monkeypatch.setenv("QT_SYMBOLS", "BTCUSDT, 币安人生USDT")
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:6380/2")
    s = load_settings()
    assert s.bus.max_deliveries == 7
    assert s.symbols == ("BTCUSDT", "币安人生USDT")
    assert s.redis_url.port == 6380


def test_secrets_from_systemd_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY/<name> supplies secrets, held as SecretStr (never printed)."""
    (tmp_path / "QT_BINANCE__API_KEY").write_text("key-123\n")
    (tmp_path / "QT_BINANCE__API_SECRET").write_text("sec-456")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("QT_EXCHANGE", "binance-testnet")
    s = load_settings()
    assert s.binance.api_key.get_secret_value() == "key-123"
    assert "sec-456" not in repr(s)


def test_settings_are_frozen() -> None:
    """Nobody changes a setting after start."""
    s = load_settings()
    with pytest.raises(ValidationError):
        s.exchange = "binance"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"QT_BUS__MAX_DELIVERIES": "lots"}, "bus.max_deliveries"),
        ({"QT_EXCHANGE": "kraken"}, "exchange"),
        ({"QT_MARKET_SOURCE": "replay:"}, "market_source"),
        ({"QT_EXCHANGE": "binance"}, "<settings>"),
        ({"QT_BUS__NO_SUCH_THING": "1"}, "bus.no_such_thing"),
    ],
)
def test_bad_setting_names_it(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], setting: str) -> None:
    """A wrong value raises ConfigurationError naming the setting."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == setting


def test_bad_setting_stops_the_process_with_one_line_and_exit_78() -> None:
    """A service started with a wrong setting prints one line naming it and exits 78 (EX_CONFIG)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"QT_BUS__MAX_DELIVERIES": "lots", "PYTHONPATH": str(REPO)})
    done = subprocess.run([sys.executable, "-m", "tests.integration.bus_worker", "hop1"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_CONFIG
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("intent_bridge: configuration error: bus.max_deliveries:")
