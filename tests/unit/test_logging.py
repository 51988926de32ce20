"""Logs are JSON events on one line each, with the bound context and no secrets."""

from __future__ import annotations

import io
import json

from pydantic import SecretStr

from common.logging import MASK, bound, configure_logging, get_logger


def test_json_line_with_service_event_level_ts_and_bound_fields() -> None:
    """One JSON object per line with service, event, level, ts (epoch ms) and the bound trace/plan/symbol."""
    out = io.StringIO()
    configure_logging("apply_layer", stream=out)
    log = get_logger()
    with bound(trace_id="0123456789abcdef", plan_id="fedcba9876543210", symbol="币安人生USDT"):
        log.info("plan_executed", latency_ms=12)
    log.warning("outside")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["service"] == "apply_layer" and first["event"] == "plan_executed" and first["level"] == "info"
    assert isinstance(first["ts"], int) and first["ts"] > 1_600_000_000_000
    assert first["symbol"] == "币安人生USDT" and first["plan_id"] == "fedcba9876543210"
    assert first["latency_ms"] == 12
    assert "plan_id" not in second and second["service"] == "apply_layer"


def test_secrets_are_masked() -> None:
    """Values of secret-looking keys and SecretStr never reach the line."""
    out = io.StringIO()
    configure_logging("qt", stream=out)
    get_logger().info("connected", api_secret="s3cr3t", token="t0k3n", key=SecretStr("abc"))
    line = out.getvalue()
    assert "s3cr3t" not in line and "t0k3n" not in line and "abc" not in line
    assert json.loads(line)["api_secret"] == MASK
