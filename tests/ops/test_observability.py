"""deploy/prometheus and deploy/grafana: every service scraped, every metric a rule or a panel uses is
exported by the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from common.config import REPO_ROOT, load_settings
from common.streams import Service

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "quantum-trader.json"
#: what Prometheus and prometheus_client's default collectors export, not the fleet's code
STANDARD = {"up", "process_start_time_seconds"}
METRIC = re.compile(r"\b(qt_[a-z0-9_]+|process_[a-z_]+|up)\b")


def exported_metrics() -> set[str]:
    """Every series name the code exports: the names given to Counter/Gauge/Histogram in common/ and
    services/, with the suffixes prometheus_client adds."""
    names: set[str] = set()
    for path in [*(REPO_ROOT / "common").rglob("*.py"), *(REPO_ROOT / "services").rglob("*.py")]:
        for kind_name in re.finditer(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(qt_[a-z0-9_]+)\"",
                                     path.read_text(encoding="utf-8")):
            kind, name = kind_name.groups()
            if kind == "Counter":
                base = name.removesuffix("_total")
                names |= {base + "_total", base + "_created"}
            elif kind in ("Histogram", "Summary"):
                names |= {name, name + "_bucket", name + "_count", name + "_sum"}
            else:
                names.add(name)
    return names


def rule_expressions() -> list[str]:
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    return [line.split("expr:", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("expr:")]


def panel_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def used(expressions: list[str]) -> set[str]:
    found = set()
    for expr in expressions:
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        found |= set(METRIC.findall(without_strings))
    return found


def test_every_service_is_scraped_on_its_port() -> None:
    """prometheus.yml has one job per service, at the port the settings give it (metrics or HTTP)."""
    settings = load_settings()
    ports = {**settings.runtime.metrics_ports, **settings.http.ports}
    text = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    jobs = re.findall(r"job_name: (\w+)\s+static_configs:\s+- targets: \[\"127\.0\.0\.1:(\d+)\"\]", text)
    assert {job: int(port) for job, port in jobs} == {s: ports[s] for s in Service.ALL}
    assert "rule_files:\n  - alerts.yml" in text


def test_alert_rules_cover_the_issue() -> None:
    """Service down, lag, DLQ growth, kill switch, reconcile drift, restarts and Redis reconnects."""
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    alerts = re.findall(r"- alert: (\w+)", text)
    assert {"ServiceDown", "ConsumerLag", "DeadLetterGrowth", "KillSwitchTripped", "ReconcileDrift",
            "ServiceRestarting", "RedisReconnects"} <= set(alerts)
    assert len(alerts) == len(set(alerts)) == len(rule_expressions())


def test_rules_and_panels_use_only_exported_metrics() -> None:
    """Every metric name in an alert expression or a dashboard panel is exported by the code."""
    exported = exported_metrics()
    assert {"qt_bus_lag", "qt_bus_dead_lettered_total", "qt_apply_plan_seconds_bucket"} <= exported
    rules, panels = used(rule_expressions()), used(panel_expressions())
    assert {"qt_bus_lag", "qt_bus_dead_lettered_total", "qt_governor_ess_tripped", "qt_reconcile_drift",
            "qt_bus_redis_reconnects_total", "up"} <= rules
    assert sorted((rules | panels) - exported - STANDARD) == []


def test_dashboard_is_a_grafana_dashboard() -> None:
    """The dashboard parses, has a stable uid, unique panel ids, and a query in every panel."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "quantum-trader" and dashboard["title"] == "Quantum Trader"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 15
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in dashboard["panels"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` accepts alerts.yml and `promtool check config` the scrape config."""
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        out = subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr

