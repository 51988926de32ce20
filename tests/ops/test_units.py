"""The systemd units: templates from ops.deploy, rendering, and systemd-analyze's verdicts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import CREDENTIAL_FILES, load_settings
from common.streams import Service
from ops import deploy
from tests.integration.cli.qt import qt

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            found.setdefault(name, []).append(value)
    return found


def install(tmp: Path, **options: bool) -> Path:
    """Render the units for a prefix under ``tmp`` holding a stand-in python (verify needs ExecStart)."""
    prefix = tmp / "opt" / "quantum-trader"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    python = prefix / ".venv" / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    dest = tmp / "units"
    deploy.write_all(deploy.render_all(deploy.InstallOptions(str(prefix), "quantum", **options)), dest)
    return dest


def test_checked_in_units_are_the_templates() -> None:
    """deploy/systemd/ holds one unit per service and the target, exactly as ops.deploy writes them."""
    on_disk = {p.name: p.read_text() for p in deploy.TEMPLATE_DIR.iterdir() if p.is_file()}
    assert on_disk == deploy.template_files()
    assert sorted(on_disk) == sorted([f"quantum-{s}.service" for s in Service.ALL] + ["quantum-trader.target"])


@pytest.mark.parametrize("service", Service.ALL)
def test_unit_directives(service: str) -> None:
    """Each unit: notify with watchdog, restart with a start limit, its own log identity, the target."""
    d = directives(deploy.unit_template(service))
    assert d["Type"] == ["notify"] and d["WatchdogSec"] == ["30"] and d["Restart"] == ["on-failure"]
    assert d["StartLimitIntervalSec"] == ["300"] and d["StartLimitBurst"] == ["5"]
    assert "PYTHONUNBUFFERED=1" in d["Environment"]
    assert d["SyslogIdentifier"] == [f"quantum-{service}"]
    assert d["ExecStart"] == [f"@PREFIX@/.venv/bin/python -m services.{service}"]
    assert d["WorkingDirectory"] == ["@PREFIX@"] and d["User"] == ["@USER@"] and d["Group"] == ["@USER@"]
    assert d["PartOf"] == ["quantum-trader.target"] and d["WantedBy"] == ["quantum-trader.target"]
    assert int(d["TimeoutStopSec"][0]) > load_settings().runtime.stop_timeout_s
    assert d["IPAddressDeny"] == ["any"] and d["IPAddressAllow"] == ["localhost"]
    assert d["MemoryDenyWriteExecute"] == ["yes"] and d["CapabilityBoundingSet"] == [""]
    assert f"quantum-{service}.service" in directives(deploy.target_template())["Wants"][0].split()


def test_render_fills_prefix_and_user_and_adds_drop_ins() -> None:
    """Rendering leaves no placeholder; drop-ins: Redis login for every unit, network for Binance's."""
    files = deploy.render_all(deploy.InstallOptions("/opt/qt", "trader", redis_acl=True, binance=True))
    assert not any("@PREFIX@" in t or "@USER@" in t for t in files.values())
    assert "ExecStart=/opt/qt/.venv/bin/python -m services.apply_layer" in files["quantum-apply_layer.service"]
    assert "User=trader" in files["quantum-governor.service"]
    network = sorted(n.split(".service")[0] for n in files if n.endswith("20-binance.conf"))
    assert network == ["quantum-apply_layer", "quantum-marketdata", "quantum-position_monitor"]
    acl_dropin = files["quantum-trading_bot.service.d/10-redis-acl.conf"]
    assert "QT_REDIS_USERNAME=trading_bot" in acl_dropin and "QT_REDIS_PASSWORD:" in acl_dropin
    assert len([n for n in files if n.endswith("10-redis-acl.conf")]) == len(Service.ALL)
    for bad in (deploy.InstallOptions("relative"), deploy.InstallOptions("/home/me/qt"),
                deploy.InstallOptions("/opt/qt", "root"), deploy.InstallOptions("/opt/q t")):
        with pytest.raises(ValueError):
            deploy.render_all(bad)


def test_qt_install_writes_the_units(tmp_path: Path, redis_url: str) -> None:
    """`qt install --prefix --user --dest` writes every unit and the target, rendered."""
    result = qt(redis_url, "install", "--prefix", "/opt/qt", "--user", "trader", "--dest", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(deploy.template_files())
    assert "WorkingDirectory=/opt/qt" in (tmp_path / "quantum-exitbrain.service").read_text()
    refused = qt(redis_url, "install", "--prefix", "/home/x", "--dest", str(tmp_path / "no"))
    assert refused.returncode == 2 and "ProtectHome" in refused.stdout


@needs_analyze
@pytest.mark.parametrize("binance", [False, True])
def test_every_unit_scores_at_most_2(tmp_path: Path, binance: bool) -> None:
    """`systemd-analyze security --offline=true` scores every unit at 2.0 or lower (with the Binance
    drop-in too)."""
    dest = install(tmp_path, redis_acl=True, binance=binance)
    scores = {}
    for service in Service.ALL:
        unit = deploy.unit_name(service)
        out = subprocess.run([str(ANALYZE), "security", "--offline=true", unit], cwd=dest, capture_output=True,
                             text=True, timeout=60)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
        assert match, out.stdout + out.stderr
        scores[service] = float(match.group(1))
    print("systemd-analyze security scores:", scores)
    assert max(scores.values()) <= 2.0, scores


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the rendered units and the target."""
    dest = install(tmp_path, redis_acl=True, binance=True)
    units = sorted(str(p) for p in dest.iterdir() if p.is_file())
    out = subprocess.run([str(ANALYZE), "verify", *units], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr.strip() == "" and out.stdout.strip() == "", out.stderr


MDWE_CHECK = """
import ctypes, mmap, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(4)
except OSError:
    pass
import numpy, hiredis, fastapi, uvicorn, redis, pydantic, prometheus_client
import services.apply_layer.__main__, common.maths.indicators, common.exchange.binance
a = numpy.random.default_rng(1).normal(size=(100, 100))
print(round(float(numpy.linalg.det(a @ a.T)) > 0))
"""


def test_stack_runs_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes is safe: with the kernel's MDWE on (what the unit asks systemd
    for), numpy and the service imports work, and a W+X mapping is refused."""
    out = subprocess.run([sys.executable, "-c", MDWE_CHECK], capture_output=True, text=True, timeout=120,
                         cwd=deploy.REPO_ROOT)
    if out.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_units_are_ordered_after_the_target_so_a_stop_waits_for_them() -> None:
    """Every unit is PartOf= and After= quantum-trader.target (stop jobs run in the reverse of the start
    order: the services stop first and the target's stop job waits for them); the target itself orders
    after no service (that would be a cycle, and is what made `systemctl stop` return at once)."""
    target = directives(deploy.target_template())
    assert not any(deploy.unit_name(s) in " ".join(target.get("After", [])) for s in Service.ALL)
    assert "Before" not in target
    for service in Service.ALL:
        d = directives(deploy.unit_template(service))
        after = " ".join(d["After"]).split()
        assert deploy.TARGET in after and d["PartOf"] == [deploy.TARGET], service
        assert deploy.TARGET not in " ".join(d.get("Before", [])), service


@needs_analyze
def test_systemd_analyze_finds_no_ordering_cycle_with_the_target(tmp_path: Path) -> None:
    """Verifying the target with its units (a start transaction of each) reports no ordering cycle."""
    dest = install(tmp_path, redis_acl=True, binance=True)
    units = [str(dest / deploy.TARGET), *(str(dest / deploy.unit_name(s)) for s in Service.ALL)]
    out = subprocess.run([str(ANALYZE), "verify", *units], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cycle" not in (out.stdout + out.stderr).lower()


def load_credentials(unit_texts: list[str]) -> dict[str, str]:
    """LoadCredential=ID:PATH of the given unit and drop-in texts: ID -> PATH."""
    found: dict[str, str] = {}
    for text in unit_texts:
        for value in directives(text).get("LoadCredential", []):
            ident, _, path = value.partition(":")
            found[ident] = path
    return found


def test_qt_install_help_says_which_drop_in_a_deployment_needs(redis_url: str) -> None:
    """`qt install --help`: the base units load no credentials; --binance for Binance, --redis-acl for a
    Redis with ACL users, each naming its credential files."""
    done = qt(redis_url, "install", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "The base units load no credentials: on Binance add --binance, with a Redis that enforces ACLs add " \
           "--redis-acl" in text
    assert "Needed for exchange=binance or binance-testnet" in text and "quantum.binance-api-key" in text
    assert "Needed when Redis enforces ACL users" in text and "quantum-<service>.redis" in text


@pytest.mark.parametrize("service", deploy.BINANCE_SERVICES)
def test_a_rendered_unit_with_credentials_reads_its_keys(tmp_path: Path, service: str) -> None:
    """End to end from the rendered files: the credentials the unit and its drop-ins load (LoadCredential=
    IDs, files under $CREDENTIALS_DIRECTORY as systemd hands them over) and its Environment= lines reach
    the settings the service reads at start, by the unit's own interpreter and working directory."""
    files = deploy.render_all(deploy.InstallOptions(str(deploy.REPO_ROOT), "quantum", redis_acl=True,
                                                    binance=True))
    unit = files[deploy.unit_name(service)]
    dropins = [text for name, text in files.items() if name.startswith(f"{deploy.unit_name(service)}.d/")]
    assert "LoadCredential" not in unit  # the base unit loads none: the drop-ins do
    creds = load_credentials(dropins)
    assert set(creds) == {"QT_BINANCE__API_KEY", "QT_BINANCE__API_SECRET", "QT_REDIS_PASSWORD"}
    assert set(creds) <= set(CREDENTIAL_FILES)
    secrets = {"QT_BINANCE__API_KEY": "unitKEY-9f1e", "QT_BINANCE__API_SECRET": "unitSECRET-77aa",
               "QT_REDIS_PASSWORD": f"pw-{service}"}
    store = tmp_path / "credentials"
    store.mkdir()
    for ident in creds:
        (store / ident).write_text(secrets[ident] + "\n")
    d = directives(unit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_") and k != "CREDENTIALS_DIRECTORY"}
    for text in (unit, *dropins):
        for assignment in directives(text).get("Environment", []):
            name, _, value = assignment.partition("=")
            env[name] = value
    env.update({"CREDENTIALS_DIRECTORY": str(store), "QT_EXCHANGE": "binance-testnet"})
    python = d["ExecStart"][0].split()[0]
    probe = ("import json; from common.config import settings_or_exit; s = settings_or_exit('probe'); "
             "print(json.dumps([s.binance.api_key.get_secret_value(), s.binance.api_secret.get_secret_value(), "
             "s.redis_username, s.redis_password.get_secret_value()]))")
    done = subprocess.run([python, "-c", probe], cwd=d["WorkingDirectory"][0], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == ["unitKEY-9f1e", "unitSECRET-77aa", service, f"pw-{service}"]
    # without the credentials the Binance settings refuse to start (exit 78), naming what is missing
    del env["CREDENTIALS_DIRECTORY"]
    refused = subprocess.run([python, "-c", probe], cwd=d["WorkingDirectory"][0], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 78 and "api_key" in refused.stdout
