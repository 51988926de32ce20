"""``qt wiring`` (the wiring map, generated, with its findings) and ``qt status`` (one screen)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import httpx
import typer
from redis.asyncio import Redis
from rich.table import Table

from common import keys
from common.config import Settings
from common.contracts import ReconcileEvent, decode
from common.redis_client import xrange
from common.store import all_positions, current_policy, read_ess
from common.streams import Service, Stream
from ops.cli.context import EXIT_PROBLEMS, age, console, when, with_redis
from ops.deploy import unit_name
from ops.wiring import Finding, Thresholds, WiringSnapshot, collect, findings


def _markdown(snap: WiringSnapshot, found: list[Finding]) -> str:
    # Redis 6.2's XINFO STREAM has no entries-added (7.0 added it): the column is left out there
    added = any(v.entries_added is not None for v in snap.streams)
    lines = ["# Quantum Trader wiring map", "", f"taken at {when(snap.taken_at)} ({snap.taken_at} epoch ms)", "",
             "## Services", "", "| service | instances | healthy |", "|---|---|---|"]
    for s in snap.services:
        lines.append(f"| {s.name} | {', '.join(s.instances) or '— (no heartbeat)'} | "
                     f"{'yes' if s.instances and s.healthy else 'no'} |")
    columns = ["stream", "length", *(["added"] if added else []), "producers", "group", "consumers", "pending",
               "lag", "last entry"]
    lines += ["", "## Streams", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for v in snap.streams:
        name = v.name if v.registered else f"{v.name} (not registered)"
        head = [name, str(v.length), *(["-" if v.entries_added is None else str(v.entries_added)] if added else []),
                ", ".join(v.producers) or "-"]
        rows = [["-", "-", "-", "-"]] if not v.groups else [
            [g.name if g.registered else f"{g.name} (not registered)", str(len(g.consumers)), str(g.pending),
             str(g.lag)] for g in v.groups]
        lines += ["| " + " | ".join([*head, *row, age(v.last_entry_age_ms)]) + " |" for row in rows]
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
    units = [unit_name(s) for s in Service.ALL]
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


def monitor_health_url(settings: Settings) -> str | None:
    """position_monitor's ``/health`` (None when it serves no HTTP)."""
    port = settings.http.ports.get(Service.POSITION_MONITOR, 0)
    if not port:
        return None
    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{port}/health"


async def monitor_health(settings: Settings, timeout_s: float = 2.0) -> tuple[dict[str, Any] | None, str]:
    """position_monitor's ``/health`` answer, or None and why not."""
    url = monitor_health_url(settings)
    if url is None:
        return None, "position_monitor serves no HTTP (http.ports.position_monitor = 0)"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
            response.raise_for_status()
            body = response.json()
            return (body, url) if isinstance(body, dict) else (None, f"{url} answered {body!r}")
    except (httpx.HTTPError, ValueError) as e:
        return None, f"{url} did not answer: {type(e).__name__}: {e}"


def reconcile_line(health: dict[str, Any] | None, why: str, now: int) -> str:
    """``last reconcile: <local time> (<age> ago), open drifts <n>`` from position_monitor's /health."""
    if health is None:
        return f"last reconcile: unknown ({why})"
    at = health.get("last_reconcile_at")
    if not at:
        return "last reconcile: none yet (position_monitor has not finished a pass)"
    return (f"last reconcile: {when(int(at))} ({age(now - int(at))} ago), open drifts "
            f"{health.get('open_drifts', '?')}")


def status() -> None:
    """One screen: services, streams with lag and pending, open positions, kill switch, the last reconcile
    (position_monitor's /health) and the newest reconcile event. Exit 1 when a service is down, the kill
    switch is tripped or the wiring has findings (a non-empty dead-letter stream among them)."""

    async def go(redis: Redis, settings: Settings) -> dict[str, Any]:
        snap = await collect(redis, await current_policy(redis, settings))
        last = await xrange(redis, keys.stream(Stream.RECONCILE_EVENTS), count=1, reverse=True)
        health, why = await monitor_health(settings)
        return {"snap": snap, "found": findings(snap), "ess": await read_ess(redis),
                "positions": await all_positions(redis), "health": health, "why": why,
                "reconcile": decode(ReconcileEvent, last[0][1]) if last else None}

    data = with_redis(go)
    snap: WiringSnapshot = data["snap"]
    units = _systemd_states()
    table = Table(title="services", title_justify="left")
    for col in ("service", "state", "instances"):
        table.add_column(col)
    for s in snap.services:
        unit = units.get(unit_name(s.name))
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
    console.print(reconcile_line(data["health"], data["why"], snap.taken_at))
    rec = data["reconcile"]
    console.print("last reconcile event: " + (f"{rec.kind.value} {rec.symbol} redis={rec.redis_qty} "
                                              f"exchange={rec.exchange_qty} at {when(rec.ts)}" if rec else "none"))
    found: list[Finding] = data["found"]
    console.print(f"findings: {len(found)}" + "".join(f"\n  {f.kind} {f.subject}: {f.detail}" for f in found),
                  soft_wrap=True)
    if found or ess.tripped:
        raise typer.Exit(EXIT_PROBLEMS)
