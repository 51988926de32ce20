"""``qt ess``: the one kill switch — status, trip (with ``--flatten``), reset."""

from __future__ import annotations

import typer
from redis.asyncio import Redis

from common import governance, keys
from common.bus import Publish, commit
from common.config import Settings
from common.contracts import ApplyPlan, new_trace_id, now_ms
from common.ess import Ess
from common.maths.ledger import daily_loss_pct, drawdown_pct, roll_day
from common.store import all_positions, current_policy, read_account, read_ess
from common.streams import Service, Stream
from ops.cli.context import EXIT_PROBLEMS, console, new_app, when, with_redis

app = new_app(help="The kill switch (quantum:ess): entries stop while it is TRIPPED; exits always run.",
                  no_args_is_help=True)


def _when(at_ms: int) -> str:
    return f"{at_ms} ({when(at_ms)})" if at_ms else "-"


def _print_switch(switch: Ess, exists: bool) -> None:
    colour = "red" if switch.tripped else "green"
    console.print(f"state:  [{colour}]{switch.state.value}[/{colour}]"
                  + ("" if exists else "  (no quantum:ess yet: the governor has not run; entries allowed)"))
    console.print(f"reason: {switch.reason or '-'}")
    console.print(f"at:     {_when(switch.at)}")
    console.print(f"by:     {switch.by or '-'}")


@app.command("status")
def status() -> None:
    """State, reason, when and by whom. Exit 1 while TRIPPED."""

    async def go(redis: Redis, _: Settings) -> tuple[Ess, bool]:
        return await read_ess(redis), bool(await redis.exists(keys.ess()))

    switch, exists = with_redis(go)
    _print_switch(switch, exists)
    if switch.tripped:
        raise SystemExit(EXIT_PROBLEMS)


async def _flatten(redis: Redis, trace_id: str) -> list[ApplyPlan]:
    plans = governance.flatten_plans((await all_positions(redis)).values(), source=Service.QT, trace_id=trace_id)
    if plans:
        await commit(redis, [Publish(Stream.APPLY_PLAN, plan) for plan in plans], service=Service.QT)
    return plans


@app.command("trip")
def trip(
    reason: str = typer.Option("operator", "--reason", help="Why (kept in quantum:ess and the event)."),
    flatten: bool = typer.Option(False, "--flatten", help="Also publish a full close of every open position."),
) -> None:
    """Trip the switch (by=operator): apply_layer skips every new entry; with --flatten every open
    position gets a FULL_CLOSE_PROPOSED plan (reason ess_flatten)."""
    trace_id = new_trace_id()

    async def go(redis: Redis, _: Settings) -> tuple[Ess | None, Ess, list[ApplyPlan] | None]:
        switched = await governance.trip(redis, reason, by=governance.OPERATOR, service=Service.QT,
                                         trace_id=trace_id, details={"flatten": flatten})
        plans = await _flatten(redis, trace_id) if flatten else None
        return switched, await read_ess(redis), plans

    switched, now, plans = with_redis(go)
    if switched is not None:
        console.print(f"kill switch [red]TRIPPED[/red] (reason {reason!r}, by {governance.OPERATOR}, "
                      f"trace_id {trace_id})")
    else:
        console.print(f"kill switch already [red]TRIPPED[/red] since {_when(now.at)} by {now.by} "
                      f"(reason {now.reason!r}); left as it is")
    if plans is not None:
        console.print(f"flatten: {len(plans)} close plan(s) published to apply.plan")
        for plan in plans:
            console.print(f"  {plan.symbol}  plan_id {plan.plan_id}  position_plan_id {plan.position_plan_id}")


@app.command("reset")
def reset(
    reason: str = typer.Option("operator reset", "--reason", help="Why (kept in the ESS_RESET event)."),
) -> None:
    """Re-arm the switch (publishes ESS_RESET). Warns when a loss limit is still reached: the governor
    trips it again at its next check unless the limit is raised (``qt policy set``)."""
    trace_id = new_trace_id()

    async def go(redis: Redis, settings: Settings) -> tuple[Ess | None, list[str]]:
        switched = await governance.reset(redis, by=governance.OPERATOR, service=Service.QT, trace_id=trace_id,
                                          reason=reason)
        warnings = []
        account = await read_account(redis)
        if account is not None:
            limits = (await current_policy(redis, settings)).limits
            daily = daily_loss_pct(roll_day(account, now_ms()))
            if daily >= limits.daily_loss_limit_pct:
                warnings.append(f"daily loss {daily:.2f}% >= limit {limits.daily_loss_limit_pct}%")
            if drawdown_pct(account) >= limits.max_drawdown_pct:
                warnings.append(f"drawdown {drawdown_pct(account):.2f}% >= limit {limits.max_drawdown_pct}%")
        return switched, warnings

    switched, warnings = with_redis(go)
    if switched is not None:
        console.print(f"kill switch [green]ARMED[/green] (by {governance.OPERATOR}, trace_id {trace_id})")
    else:
        console.print("kill switch already [green]ARMED[/green]")
    for warning in warnings:
        console.print(f"[yellow]warning: {warning}: the governor will trip it again[/yellow]")
