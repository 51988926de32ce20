"""``qt wiring`` (the wiring map, generated, with its findings) and ``qt status`` (one screen)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import typer
from redis.asyncio import Redis
from rich.table import Table

from common import keys
from common.config import Settings
from common.contracts import ReconcileEvent, decode
from common.redis_client import xrange
from common.store import all_positions, current_policy, read_ess
from common.streams import Service, Stream
from ops.cli.context import EXIT_PROBLEMS, age, console, with_redis
from ops.wiring import Finding, Thresholds, WiringSnapshot, collect, findings


def _markdown(snap: WiringSnapshot, found: list[Finding]) -> str:
    lines = ["# Quantum Trader wiring map", "", f"taken at {snap.taken_at} (epoch ms)", "", "## Services", "",
             "| service | instances | healthy |", "|---|---|---|"]
    for s in snap.services:
        lines.append(f"| {s.name} | {', '.join(s.instances) or '— (no heartbeat)'} | "
                     f"{'yes' if s.instances and s.healthy else 'no'} |")
    lines += ["", "## Streams", "", "| stream | length | added | producers | group | consumers | pending | lag "
              "| last entry |", "|---|---|---|---|---|---|---|---|---|"]
    for v in snap.streams:
        name = v.name if v.registered else f"{v.name} (not registered)"
        added = "-" if v.entries_added is None else str(v.entries_added)
        producers = ", ".join(v.producers) or "-"
        if not v.groups:
            lines.append(f"| {name} | {v.length} | {added} | {producers} | - | - | - | - | "
                         f"{age(v.last_entry_age_ms)} |")
        for g in v.groups:
            gname = g.name if g.registered else f"{g.name} (not registered)"
            lines.append(f"| {name} | {v.length} | {added} | {producers} | {gname} | {len(g.consumers)} | "
                         f"{g.pending} | {g.lag} | {age(v.last_entry_age_ms)} |")
    lines += ["", "## Keys", "", "| pattern | count |", "|---|---|"]
    lines += [f"| `{pattern}` | {count} |" for pattern, count in snap.key_counts.items()]
    lines += ["", f"## Findings ({len(found)})", ""]
    lines += [f"- **{f.kind}** {f.subject}: {f.detail}" for f in found] or ["none"]
    return "\n".join(lines)


def wiring(
    fmt: str = typer.Option("md", "--format", help="md or json"),
    max_lag: int = typer.Option(1000, help="A group lagging more than this is a finding."),
    max_consumers: int = typer.Option(4, help="More consumers than this in a group is a finding."),
    idle_pending_s: float = typer.Option(0.0, help="A consumer idle this long with pending entries is a finding "
                                         "(default: twice bus.claim_idle_ms, at least 120 s)."),
) -> None:
    """The wiring map from the registry and live Redis, with findings; exit 1 when there are findings."""

    async def go(redis: Redis, settings: Settings) -> tuple[WiringSnapshot, list[Finding]]:
        snap = await collect(redis, await current_policy(redis, settings))
        idle_ms = int(idle_pending_s * 1000) if idle_pending_s else max(120_000, settings.bus.claim_idle_ms * 2)
        t = Thresholds(max_lag=max_lag, max_consumers=max_consumers, idle_pending_ms=idle_ms)
        return snap, findings(snap, t)

    snap, found = with_redis(go)
    if fmt == "json":
        print(json.dumps({"wiring": snap.as_dict(), "findings": [f.__dict__ for f in found]}, ensure_ascii=False,
                         indent=1))
    else:
        print(_markdown(snap, found))
    if found:
        raise typer.Exit(EXIT_PROBLEMS)


def _systemd_states() -> dict[str, str]:
    if not shutil.which("systemctl"):
        return {}
    units = [f"quantum-{s.replace('_', '-')}.service" for s in Service.ALL]
    try:
        done = subprocess.run(["systemctl", "show", "--property=Id,ActiveState", *units], capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states: dict[str, str] = {}
    for block in done.stdout.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("Id") and fields.get("ActiveState") and fields["ActiveState"] != "inactive":
            states[fields["Id"]] = fields["ActiveState"]
    return states


def status() -> None:
    """One screen: services, streams with lag and pending, open positions, kill switch, last reconcile.
    Exit 1 when a service is down, the kill switch is tripped or the wiring has findings."""

    async def go(redis: Redis, settings: Settings) -> dict[str, Any]:
        snap = await collect(redis, await current_policy(redis, settings))
        last = await xrange(redis, keys.stream(Stream.RECONCILE_EVENTS), count=1, reverse=True)
        return {"snap": snap, "found": findings(snap), "ess": await read_ess(redis),
                "positions": await all_positions(redis),
                "reconcile": decode(ReconcileEvent, last[0][1]) if last else None}

    data = with_redis(go)
    snap: WiringSnapshot = data["snap"]
    units = _systemd_states()
    table = Table(title="services", title_justify="left")
    for col in ("service", "state", "instances"):
        table.add_column(col)
    for s in snap.services:
        unit = units.get(f"quantum-{s.name.replace('_', '-')}.service")
        state = unit or ("up" if s.instances and s.healthy else "unhealthy" if s.instances else "down")
        table.add_row(s.name, state, ", ".join(s.instances) or "-")
    console.print(table)
    grouped = Table(title="streams", title_justify="left")
    for col in ("stream", "group", "length", "pending", "lag"):
        grouped.add_column(col)
    for v in snap.streams:
        for g in v.groups:
            grouped.add_row(v.name, g.name, str(v.length), str(g.pending), str(g.lag))
    console.print(grouped)
    positions = data["positions"]
    console.print(f"open positions: {len(positions)}" + "".join(
        f"\n  {p.symbol} {p.side.value} {p.quantity} @ {p.entry_price} (plan {p.plan_id})"
        for p in positions.values()))
    ess = data["ess"]
    console.print(f"kill switch: {ess.state.value}" + (f" ({ess.reason}, by {ess.by})" if ess.tripped else ""))
    rec = data["reconcile"]
    console.print("last reconcile: " + (f"{rec.kind.value} {rec.symbol} redis={rec.redis_qty} "
                                        f"exchange={rec.exchange_qty} at {rec.ts}" if rec else "none"))
    found: list[Finding] = data["found"]
    console.print(f"findings: {len(found)}" + "".join(f"\n  {f.kind} {f.subject}: {f.detail}" for f in found))
    if found or ess.tripped:
        raise typer.Exit(EXIT_PROBLEMS)
