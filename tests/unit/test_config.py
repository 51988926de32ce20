"""Settings: defaults from config/default.toml, env overrides, credentials, and exit 78 when wrong."""

from __future__ import annotations

import json
import os
import pty
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


def _run_worker(env_extra: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"PYTHONPATH": str(REPO), **env_extra})
    return subprocess.run([sys.executable, "-m", "tests.integration.bus_worker", "hop1"], env=env, cwd=REPO,
                          text=True, timeout=60, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_bad_setting_stops_the_process_with_one_json_line_and_exit_78() -> None:
    """A service started with a wrong setting writes one JSON object (the shape of every log line) naming
    the setting and the variable it came from, and exits 78 (EX_CONFIG)."""
    done = _run_worker({"QT_BUS__MAX_DELIVERIES": "lots"}, capture_output=True)
    assert done.returncode == EX_CONFIG
    assert done.stderr.strip() == ""
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert (line["service"], line["event"], line["level"], line["setting"], line["variable"],
            line["exit_code"]) == ("intent_bridge", "configuration_error", "error", "bus.max_deliveries",
                                   "QT_BUS__MAX_DELIVERIES", 78)
    assert "lots" in line["problem"] and isinstance(line["ts"], int) and line["ts"] > 1_700_000_000_000


def test_on_a_terminal_the_line_is_a_sentence() -> None:
    """With stderr on a terminal the operator reads one plain sentence there instead."""
    master, slave = pty.openpty()
    try:
        done = _run_worker({"QT_NOPE__X": "1"}, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert done.returncode == EX_CONFIG and done.stdout == ""
    text = out.decode().strip()
    assert len(text.splitlines()) == 1
    assert text.startswith("intent_bridge: configuration error: QT_NOPE__X: no settings section 'nope'")


@pytest.mark.parametrize("name", ["QT_NOPE__X", "qt_nope__x", "QT_EXCHANGE__X", "QT_SIGNALS__MIN_CONFIDENCE"])
def test_unknown_section_is_refused_like_an_unknown_key(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """An environment variable naming a section that does not exist is refused, naming the variable (an
    unknown key of a known section always was)."""
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == name and caught.value.variable == name
    assert "no settings section" in caught.value.problem and "signal" in caught.value.problem


def test_unknown_section_stops_the_process_with_exit_78() -> None:
    """QT_NOPE__X=1 stops a service at start: exit 78, the JSON line naming the variable."""
    done = _run_worker({"QT_NOPE__X": "1"}, capture_output=True)
    assert done.returncode == EX_CONFIG
    line = json.loads(done.stdout.strip())
    assert line["setting"] == "QT_NOPE__X" and line["variable"] == "QT_NOPE__X"


def test_the_demo_profile_runs_only_on_paper_with_the_synthetic_market(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/demo.toml layers over the defaults on paper + synthetic; with a real exchange or market it is
    refused (its settings trade far too eagerly for real money). default.toml keeps the careful values."""
    default = load_settings()
    monkeypatch.setenv("QT_CONFIG", str(REPO / "config" / "demo.toml"))
    demo = load_settings()
    assert (default.profile, demo.profile) == ("", "demo")
    assert (default.signal.min_confidence, default.apply.cooldown_s, default.exit.max_hold_s) == (0.55, 900, 0)
    assert demo.signal.min_confidence < default.signal.min_confidence and demo.exit.max_hold_s > 0
    assert demo.bus == default.bus and demo.binance == default.binance
    monkeypatch.setenv("QT_MARKET_SOURCE", "binance")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == "<settings>" and "profile=demo" in caught.value.problem
    monkeypatch.delenv("QT_MARKET_SOURCE")
    monkeypatch.setenv("QT_EXCHANGE", "binance-testnet")
    monkeypatch.setenv("QT_BINANCE__API_KEY", "k")
    monkeypatch.setenv("QT_BINANCE__API_SECRET", "s")
    with pytest.raises(ConfigurationError):
        load_settings()


def test_an_error_in_the_settings_as_a_whole_does_not_echo_the_redis_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binance without keys is an error of the settings as a whole; its message once quoted the start of the
    whole input — REDIS_URL with its password. Only a single, non-secret setting's value is echoed."""
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@10.0.0.5:6380/2")
    monkeypatch.setenv("QT_EXCHANGE", "binance")
    for name in ("QT_BINANCE__API_KEY", "QT_BINANCE__API_SECRET", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)
