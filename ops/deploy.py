"""The systemd units of the fleet (DESIGN §9): one hardened ``quantum-<service>.service`` per process of
:data:`common.streams.Service.ALL` and ``quantum-trader.target`` that starts and stops them as one.

The units in ``deploy/systemd/`` are templates with two placeholders, ``@PREFIX@`` (the install tree:
the repository with its ``.venv``) and ``@USER@`` (the system user the fleet runs as); :func:`render_all`
fills them in for ``qt install``. :func:`unit_template` is the one source of every unit's text; a test
checks the files in ``deploy/systemd/`` against it.

The base units load no credentials (no ``LoadCredential=``). Two optional drop-ins
(``quantum-<service>.service.d/*.conf``) are rendered beside the units, and a deployment needs the one
for each secret it uses:

- ``10-redis-acl.conf`` (``--redis-acl``): the service logs in to Redis as its own ACL user
  (``qt redis-acl``), its password loaded as the ``QT_REDIS_PASSWORD`` credential from
  ``/etc/credstore/quantum-<service>.redis``;
- ``20-binance.conf`` (``--binance``, only the units that talk to Binance): outbound network and the
  API key and secret as credentials from ``/etc/credstore/``.

Why one static user (``User=``) and not ``DynamicUser=``: the install tree and ``config/`` stay
readable by that user's group only (no world-readable settings), the same user owns nothing else on
the host, and the units share no writable path anyway (``ProtectSystem=strict``; state is in Redis,
logs in the journal). A dynamic user would need the install tree world-readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from common.config import REPO_ROOT
from common.streams import Service

TEMPLATE_DIR = REPO_ROOT / "deploy" / "systemd"
TARGET = "quantum-trader.target"
PREFIX_MARK = "@PREFIX@"
USER_MARK = "@USER@"
DEFAULT_USER = "quantum"
#: where the units find their secrets (systemd's credential store, root-only)
CREDSTORE = "/etc/credstore"
#: non-secret settings for the whole fleet, and per service (both optional)
ENV_DIR = "/etc/quantum-trader"

#: the units that talk to Binance when ``exchange``/``market_source`` say so
BINANCE_SERVICES: tuple[str, ...] = (Service.MARKETDATA, Service.APPLY_LAYER, Service.POSITION_MONITOR)

#: above the runner's SIGTERM drain (``runtime.stop_timeout_s`` = 20 s) plus its cleanups
TIMEOUT_STOP_S = 30
WATCHDOG_S = 30

_DESCRIPTIONS: dict[str, str] = {
    Service.MARKETDATA: "market data (ticks, klines, market state)",
    Service.AI_ENGINE: "AI engine (predictions over HTTP)",
    Service.TRADING_BOT: "trading bot (trade intents)",
    Service.INTENT_BRIDGE: "intent bridge (intents to entry plans)",
    Service.GOVERNOR: "governor (policy and kill switch)",
    Service.APPLY_LAYER: "apply layer (the one executor)",
    Service.EXITBRAIN: "exit brain (exit plans and stop updates)",
    Service.HARVEST_PROPOSAL: "harvest proposals",
    Service.HARVEST_BRAIN: "harvest brain (ledger, closed trades)",
    Service.POSITION_MONITOR: "position monitor (snapshots and reconciliation)",
}

_HARDENING = """\
# --- hardening: `systemd-analyze security --offline=true` scores this unit at or below 2.0
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateUsers=yes
PrivateIPC=yes
PrivateMounts=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
KeyringMode=private
RemoveIPC=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# numpy and the rest of the stack do not JIT: no page needs to be writable and executable
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
UMask=0077
# Redis and the HTTP ports are local; the Binance units get a drop-in (20-binance.conf) that opens it
IPAddressDeny=any
IPAddressAllow=localhost
"""


def unit_name(service: str) -> str:
    return f"quantum-{service}.service"


def unit_template(service: str) -> str:
    """The text of ``quantum-<service>.service`` with the ``@PREFIX@`` and ``@USER@`` placeholders."""
    if service not in Service.ALL:
        raise ValueError(f"not a service of the fleet: {service!r}")
    return f"""\
# Quantum Trader: {service}. A template: `qt install --prefix DIR --user NAME` fills in {PREFIX_MARK} and {USER_MARK}.
[Unit]
Description=Quantum Trader {_DESCRIPTIONS[service]}
Documentation=file:{PREFIX_MARK}/README.md
PartOf={TARGET}
# ordered after the target: stopping it stops this unit first, so `systemctl stop {TARGET}` returns once
# every service has drained (a target is otherwise ordered after what it wants and stops at once)
After=network-online.target redis-server.service {TARGET}
Wants=network-online.target
# five failed starts in five minutes: stop trying, an operator must look
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={PREFIX_MARK}/.venv/bin/python -m services.{service}
WorkingDirectory={PREFIX_MARK}
User={USER_MARK}
Group={USER_MARK}
Environment=PYTHONUNBUFFERED=1
Environment=PYTHONDONTWRITEBYTECODE=1
# settings that are not secrets (REDIS_URL, QT_EXCHANGE, QT_SYMBOLS, ...); secrets come as credentials
EnvironmentFile=-{ENV_DIR}/quantum-trader.env
EnvironmentFile=-{ENV_DIR}/quantum-{service}.env
SyslogIdentifier=quantum-{service}
Restart=on-failure
RestartSec=2
# exit 78 is a wrong setting: a restart cannot fix it
RestartPreventExitStatus=78
# READY=1 once Redis answers and the groups exist; WATCHDOG=1 while every loop makes progress
WatchdogSec={WATCHDOG_S}
TimeoutStartSec=120
# the runner drains for at most runtime.stop_timeout_s (20 s) after SIGTERM
TimeoutStopSec={TIMEOUT_STOP_S}
KillMode=mixed

{_HARDENING}
[Install]
WantedBy={TARGET}
"""


def target_template() -> str:
    wants = " ".join(unit_name(s) for s in Service.ALL)
    return f"""\
# Quantum Trader: the whole fleet. `systemctl start|stop|restart {TARGET}` acts on every service
# (each unit is PartOf= this target). Each unit is ordered After= this target, so a stop of the target
# waits until every service has stopped (its drain included); a start returns once the target is up and
# the services' start jobs are queued (`qt status` shows when they are ready).
[Unit]
Description=Quantum Trader fleet
Wants={wants}
After=network-online.target redis-server.service

[Install]
WantedBy=multi-user.target
"""


def redis_acl_dropin(service: str) -> str:
    """The drop-in that logs ``service`` in to Redis as its own ACL user."""
    return f"""\
# Log in to Redis as the ACL user of this service (`qt redis-acl`).
[Service]
Environment=QT_REDIS_USERNAME={service}
LoadCredential=QT_REDIS_PASSWORD:quantum-{service}.redis
"""


def binance_dropin() -> str:
    """The drop-in of a unit that talks to Binance: outbound network and the API credentials."""
    return f"""\
# This unit talks to Binance: outbound network, and the API key and secret from {CREDSTORE}/.
[Service]
IPAddressAllow=any
LoadCredential=QT_BINANCE__API_KEY:quantum.binance-api-key
LoadCredential=QT_BINANCE__API_SECRET:quantum.binance-api-secret
"""


def template_files() -> dict[str, str]:
    """File name -> template text of every unit and the target."""
    files = {unit_name(s): unit_template(s) for s in Service.ALL}
    files[TARGET] = target_template()
    return files


@dataclass(frozen=True)
class InstallOptions:
    prefix: str
    user: str = DEFAULT_USER
    redis_acl: bool = False
    binance: bool = False


def _check(options: InstallOptions) -> None:
    prefix = PurePosixPath(options.prefix)
    if not prefix.is_absolute():
        raise ValueError(f"--prefix must be an absolute path: {options.prefix!r}")
    if any(c.isspace() for c in options.prefix) or "%" in options.prefix:
        raise ValueError(f"--prefix must not hold spaces or '%': {options.prefix!r}")
    if prefix.parts[1:2] in (("home",), ("root",)) or str(prefix).startswith("/run/user"):
        raise ValueError(f"--prefix {options.prefix} is under a home directory, which ProtectHome=yes "
                         "hides from the services: install under /opt or /srv")
    user = options.user
    if not user or not all(c.isalnum() or c in "_-" for c in user) or user[0] == "-" or user == "root":
        raise ValueError(f"--user must be a plain system user name other than root: {user!r}")


def render(text: str, options: InstallOptions) -> str:
    return text.replace(PREFIX_MARK, options.prefix.rstrip("/") or "/").replace(USER_MARK, options.user)


def render_all(options: InstallOptions) -> dict[str, str]:
    """Relative path -> text of every file to install: the units, the target, and the drop-ins asked
    for. ValueError names a bad prefix or user."""
    _check(options)
    files = {name: render(text, options) for name, text in template_files().items()}
    for service in Service.ALL:
        if options.redis_acl:
            files[f"{unit_name(service)}.d/10-redis-acl.conf"] = redis_acl_dropin(service)
        if options.binance and service in BINANCE_SERVICES:
            files[f"{unit_name(service)}.d/20-binance.conf"] = binance_dropin()
    return files


def write_all(files: dict[str, str], dest: Path) -> list[Path]:
    """Write ``files`` under ``dest`` (mode 0644: units hold no secrets); the paths written."""
    written = []
    for name, text in sorted(files.items()):
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
        written.append(path)
    return written
