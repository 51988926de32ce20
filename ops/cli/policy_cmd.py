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
from common.exchange.rules import SymbolRules, load_rules_file
from common.policy import Limits, Policy, load_policy_file, parse_policy
from common.store import current_policy, read_symbol_rules
from common.streams import Service
from ops.cli.context import console, new_app, settings, when, with_redis

app = new_app(help="The risk policy in force: allowlist and limits.", no_args_is_help=True)

EXIT_INVALID = 2
LIMIT_NAMES = tuple(Limits.model_fields)


def _print_policy(policy: Policy, record: governance.PolicyRecord | None) -> None:
    if record is None:
        console.print(f"version:    {policy.version}  (from {policy_file_name()}: no policy published yet)")
    else:
        console.print(f"version:    {policy.version}")
        console.print(f"origin:     {record.origin or '-'}")
        console.print(f"updated_at: {when(policy.updated_at)} ({policy.updated_at})")
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


class Refused(Exception):
    """The policy is valid but would not do what the operator wants: published only with --force."""


async def exchange_rules(redis: Redis, conf: Settings) -> dict[str, SymbolRules]:
    """The symbols the exchange lists: ``quantum:exchange:symbols`` as marketdata last published it (what
    intent_bridge intersects the allowlist with); before that, on the paper exchange, its rules file."""
    rules = await read_symbol_rules(redis)
    if rules or conf.exchange != "paper":
        return rules
    try:
        return load_rules_file(conf.config_file(conf.paper.rules_file))
    except (OSError, ValueError, KeyError):
        return {}


def allowlist_problems(allowlist: tuple[str, ...], rules: dict[str, SymbolRules]) -> list[str]:
    """Why the allowlist would not trade as written: symbols the exchange does not list, or lists but not
    as TRADING (intent_bridge trades the allowlist intersected with the tradable symbols)."""
    if not allowlist:
        return []
    if not rules:
        return ["the exchange's symbols are not known yet (quantum:exchange:symbols is empty: marketdata has "
                "not run), so the allowlist cannot be checked"]
    unknown = [s for s in allowlist if s not in rules]
    halted = [f"{s} ({rules[s].status})" for s in allowlist if s in rules and not rules[s].tradable]
    problems = []
    if unknown:
        problems.append(f"not listed by the exchange: {', '.join(unknown)}")
    if halted:
        problems.append(f"listed but not TRADING: {', '.join(halted)}")
    return problems


@app.command("set", context_settings={"ignore_unknown_options": True})
def set_(
    key: str = typer.Argument(None, help=f"A limit ({', '.join(LIMIT_NAMES)}) or allowlist (comma-separated)."),
    value: str = typer.Argument(None, help="Its new value (a negative number is a value too: -5)."),
    file: Path = typer.Option(None, "--file", help="A whole policy file (policy.toml format)."),
    force: bool = typer.Option(False, "--force", help="Publish an allowlist naming symbols the exchange does not "
                               "list (or before their list is known)."),
) -> None:
    """Validate and publish a new policy version (POLICY_UPDATED). It holds until config/policy.toml
    itself changes (the governor then publishes the file again). A changed allowlist must name symbols the
    exchange lists as TRADING (else exit 2, unless --force); an empty one is published with a warning:
    it stops every new entry."""
    if (file is None) == (key is None) or (key is not None and value is None):
        console.print("[red]give either --file F, or KEY VALUE[/red]")
        raise SystemExit(EXIT_INVALID)
    if value is not None and value.startswith("--"):
        console.print(f"[red]no such option: {value}[/red]")
        raise SystemExit(EXIT_INVALID)
    trace_id = new_trace_id()

    async def go(redis: Redis, conf: Settings) -> tuple[Policy, Policy | None, list[str]]:
        before = await current_policy(redis, conf)
        wanted = load_policy_file(file) if file is not None else _with_change(before, key, value)
        problems = []
        if wanted.allowlist != before.allowlist:
            problems = allowlist_problems(wanted.allowlist, await exchange_rules(redis, conf))
            if problems and not force:
                raise Refused("; ".join(problems))
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
        return before, published, problems

    try:
        before, published, problems = with_redis(go)
    except ConfigurationError as e:
        console.print(f"[red]invalid policy: {e}[/red]")
        raise SystemExit(EXIT_INVALID) from None
    except Refused as e:
        console.print(f"[red]refused: {e}; nothing published (--force publishes it anyway)[/red]")
        raise SystemExit(EXIT_INVALID) from None
    for problem in problems:
        console.print(f"[yellow]warning (--force): {problem}[/yellow]")
    if published is None:
        console.print(f"policy unchanged: version {before.version} is already in force")
        return
    console.print(f"policy {before.version} -> {published.version} published (POLICY_UPDATED, trace_id {trace_id})")
    changes = _diff(before, published)
    for line in changes:
        console.print(f"  {line}")
    if not published.allowlist:
        console.print("[yellow]warning: the allowlist is empty: no new position opens on any symbol (exits "
                      "still run)[/yellow]")


def _diff(before: Policy, after: Policy) -> list[str]:
    lines = []
    if before.allowlist != after.allowlist:
        lines.append(f"allowlist: {json.dumps(list(before.allowlist), ensure_ascii=False)} -> "
                     f"{json.dumps(list(after.allowlist), ensure_ascii=False)}")
    old, new = before.limits.model_dump(mode="json"), after.limits.model_dump(mode="json")
    lines.extend(f"{name}: {old[name]} -> {new[name]}" for name in LIMIT_NAMES if old[name] != new[name])
    return lines
