"""``qt policy``: the policy in force (``quantum:policy:current``) — show it, or set a new version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from redis.asyncio import Redis

from common import governance
from common.config import ConfigurationError, Settings
from common.contracts import new_trace_id
from common.policy import Limits, Policy, load_policy_file, parse_policy
from common.store import current_policy
from common.streams import Service
from ops.cli.context import console, settings, with_redis

app = typer.Typer(help="The risk policy in force: allowlist and limits.", no_args_is_help=True)

EXIT_INVALID = 2
LIMIT_NAMES = tuple(Limits.model_fields)


def _print_policy(policy: Policy, record: governance.PolicyRecord | None) -> None:
    if record is None:
        console.print(f"version:    {policy.version}  (from {policy_file_name()}: no policy published yet)")
    else:
        console.print(f"version:    {policy.version}")
        console.print(f"origin:     {record.origin or '-'}")
        console.print(f"updated_at: {policy.updated_at}")
    console.print(f"allowlist:  {', '.join(policy.allowlist) or '-'}  ({len(policy.allowlist)} symbols)")
    for name, value in policy.limits.model_dump(mode="json").items():
        console.print(f"{name + ':':<26}{value}")


def policy_file_name() -> str:
    return str(settings().config_file(settings().policy_file))


@app.command("show")
def show() -> None:
    """Version, origin, allowlist and every limit of the policy in force."""

    async def go(redis: Redis, conf: Settings) -> tuple[Policy, governance.PolicyRecord | None]:
        return await current_policy(redis, conf), await governance.read_policy_record(redis)

    policy, record = with_redis(go)
    _print_policy(policy, record)


def _with_change(base: Policy, key: str, value: str) -> Policy:
    data: dict[str, Any] = {"allowlist": list(base.allowlist), "limits": base.limits.model_dump(mode="json")}
    if key == "allowlist":
        data["allowlist"] = [s.strip() for s in value.split(",") if s.strip()]
    elif key in LIMIT_NAMES:
        data["limits"][key] = value
    else:
        raise ConfigurationError(key, f"not a policy setting (one of allowlist, {', '.join(LIMIT_NAMES)})")
    return parse_policy(data, "qt policy set")


@app.command("set")
def set_(
    key: str = typer.Argument(None, help=f"A limit ({', '.join(LIMIT_NAMES)}) or allowlist (comma-separated)."),
    value: str = typer.Argument(None, help="Its new value."),
    file: Path = typer.Option(None, "--file", help="A whole policy file (policy.toml format)."),
) -> None:
    """Validate and publish a new policy version (POLICY_UPDATED). It holds until config/policy.toml
    itself changes (the governor then publishes the file again)."""
    if (file is None) == (key is None) or (key is not None and value is None):
        console.print("[red]give either --file F, or KEY VALUE[/red]")
        raise SystemExit(EXIT_INVALID)
    trace_id = new_trace_id()

    async def go(redis: Redis, conf: Settings) -> tuple[Policy, Policy | None]:
        before = await current_policy(redis, conf)
        wanted = load_policy_file(file) if file is not None else _with_change(before, key, value)
        record = await governance.read_policy_record(redis)
        # the first publication remembers the policy file's version, so the governor does not take the
        # file for a change and revert this
        file_version = None
        if record is None or not record.file_version:
            try:
                file_version = load_policy_file(conf.config_file(conf.policy_file)).version
            except ConfigurationError:
                file_version = ""
        published = await governance.publish_policy(redis, wanted, origin=governance.ORIGIN_OPERATOR,
                                                    service=Service.QT, trace_id=trace_id,
                                                    file_version=file_version)
        return before, published

    try:
        before, published = with_redis(go)
    except ConfigurationError as e:
        console.print(f"[red]invalid policy: {e}[/red]")
        raise SystemExit(EXIT_INVALID) from None
    if published is None:
        console.print(f"policy unchanged: version {before.version} is already in force")
        return
    console.print(f"policy {before.version} -> {published.version} published (POLICY_UPDATED, trace_id {trace_id})")
    changes = _diff(before, published)
    for line in changes:
        console.print(f"  {line}")


def _diff(before: Policy, after: Policy) -> list[str]:
    lines = []
    if before.allowlist != after.allowlist:
        lines.append(f"allowlist: {json.dumps(list(before.allowlist), ensure_ascii=False)} -> "
                     f"{json.dumps(list(after.allowlist), ensure_ascii=False)}")
    old, new = before.limits.model_dump(mode="json"), after.limits.model_dump(mode="json")
    lines.extend(f"{name}: {old[name]} -> {new[name]}" for name in LIMIT_NAMES if old[name] != new[name])
    return lines
