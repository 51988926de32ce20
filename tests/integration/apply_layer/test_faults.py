"""Regression tests for the execution faults an outside review found (each failed on the code before its
fix): portfolio limits across concurrent lanes, dead-lettered SUBMITTING plans, the exchange take-profit
below the ladder, head-of-line blocking across symbols, entries beyond their own levels, and entries
booked onto a position the exchange had already closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from common import keys
from common.bus import commit
from common.contracts import Decision, ExitReason, FillKind, Side
from common.exchange.base import ConditionalKind, ConditionalStatus, client_order_id
from common.exit_levels import LadderParams, base_fractions, levels_of
from common.ids import hex16
from common.policy import Limits, Policy
from common.streams import Stream
from services.apply_layer.settle import settle_round
from tests.helpers import poll, run
from tests.integration.apply_layer.faulty import Script, faulty
from tests.integration.apply_layer.harness import FAST_BUS, D, Harness, running
from tests.plans import close, entry

FOUR = {"BTCUSDT": ("50000", "0.01"), "ETHUSDT": ("3000", "0.15"), "SOLUSDT": ("150", "3"),
        "XRPUSDT": ("0.6000", "800")}  # each about 450-500 USDT of notional


async def _policy(h: Harness, **limits: object) -> None:
    base = {"max_open_positions": 10, "max_margin_per_trade_usd": D("1000"),
            "max_total_notional_usd": D("100000"), "max_leverage": 20}
    base.update(limits)
    policy = Policy(allowlist=tuple(FOUR), limits=Limits(**base))  # type: ignore[arg-type]
    await h.redis.hset(keys.policy_current(), mapping=policy.to_hash())


def _four_entries(tag: str) -> tuple:  # type: ignore[type-arg]
    return tuple(entry(f"{tag}-{s}", symbol=s, price=p, qty=q) for s, (p, q) in FOUR.items())


# --- fault 1: portfolio limits and concurrent lanes ------------------------------------------------------


def _limits_hold(redis_url: str, tag: str, **limits: object) -> None:
    plans = _four_entries(tag)

    async def scenario() -> None:
        # the policy is in place before the four arrive together; every order takes 50 ms, so the lanes
        # overlap: without the portfolio guard each would read the hashes before any commit
        h0 = Harness(redis_url)
        await _policy(h0, **limits)
        await h0.redis.aclose()
        script = Script(latency_s=0.05)
        async with running(redis_url, prices={s: p for s, (p, _) in FOUR.items()}, wrap=faulty(script),
                           before=plans, cooldown_s=0) as h:
            results = [await h.result(p) for p in plans]
            executed = [r for r in results if r.decision is Decision.EXECUTE]
            assert len(executed) == 1, [(r.symbol, r.decision.value, r.error) for r in results]
            assert len(await h.paper.positions()) == 1 and len(script.sent) == 1

    run(scenario())


def test_one_batch_of_entries_cannot_pass_max_open_positions(redis_url: str) -> None:
    """Four entries for four symbols in one read, max_open_positions=1: exactly one executes, three are
    SKIP risk_limit:max_open_positions, one order reaches the exchange."""
    _limits_hold(redis_url, "open", max_open_positions=1)


def test_one_batch_of_entries_cannot_pass_max_total_notional(redis_url: str) -> None:
    """The same four with max_total_notional_usd=600 (each about 500): exactly one executes."""
    _limits_hold(redis_url, "notional", max_total_notional_usd=D("600"))


# --- fault 2: a dead-lettered SUBMITTING plan is settled while the service runs ------------------------------


def test_dead_lettered_submitting_entry_is_booked_and_protected_by_the_settling_round(redis_url: str) -> None:
    """The entry filled but its outcome could not be read (every get_order failed) until it was
    dead-lettered. While apply_layer keeps running, the settling round books it once the exchange
    answers: one EXECUTE result, the position hash, its stop on the exchange."""
    plan = entry("lost-answer")
    cid = client_order_id(plan.plan_id)
    script = Script(unknown_after_send={cid}, get_order_failures=1_000_000)
    bus = FAST_BUS.model_copy(update={"max_deliveries": 2, "retry_initial_ms": 10, "retry_max_ms": 20})

    async def scenario() -> None:
        async with running(redis_url, wrap=faulty(script), bus=bus, settle_interval_s=0.2,
                           submitting_max_age_s=0.1) as h:
            await h.send(plan)

            async def dead_lettered() -> bool:
                return bool(await h.redis.xlen(keys.dlq_stream(Stream.APPLY_PLAN)))

            await poll(dead_lettered, timeout_s=15)
            assert await h.results(plan.plan_id) == [] and await h.position() is None
            assert (await h.paper.positions())["BTCUSDT"].position_amt == D("0.01")  # untracked on the exchange
            script.get_order_failures = 0  # the exchange answers again
            [result] = [await h.result(plan)]
            assert (result.decision, result.filled_qty) == (Decision.EXECUTE, D("0.01"))
            position = await h.position()
            assert position is not None and position.plan_id == plan.plan_id and position.quantity == D("0.01")
            stop = await h.paper.get_conditional("BTCUSDT", position.sl_order_id)
            assert stop.status is ConditionalStatus.NEW and stop.quantity == D("0.01")
            assert script.sent == [cid]  # never sent twice
            assert len(await h.results(plan.plan_id)) == 1

    run(scenario())


def test_dead_lettered_submitting_exit_books_its_realized_fill(redis_url: str) -> None:
    """An exit whose answer was lost and dead-lettered: the settling round books the EXIT fill (the realized
    loss reaches execution.result, so the ledger and the governor see it) and deletes the hash."""
    opened = entry("exit-lost-open")
    exit_plan = close("exit-lost", opened.plan_id)
    script = Script(unknown_after_send={client_order_id(exit_plan.plan_id)}, get_order_failures=1_000_000)
    bus = FAST_BUS.model_copy(update={"max_deliveries": 2, "retry_initial_ms": 10, "retry_max_ms": 20})

    async def scenario() -> None:
        async with running(redis_url, wrap=faulty(script), bus=bus, settle_interval_s=0.2,
                           submitting_max_age_s=0.1) as h:
            await h.send(opened)
            await h.result(opened)
            await h.set_price("BTCUSDT", "49500")
            await h.send(exit_plan)

            async def dead_lettered() -> bool:
                return bool(await h.redis.xlen(keys.dlq_stream(Stream.APPLY_PLAN)))

            await poll(dead_lettered, timeout_s=15)
            assert await h.paper.positions() == {}
            script.get_order_failures = 0
            result = await h.result(exit_plan)
            assert result.decision is Decision.EXECUTE
            exits = [f for f in await h.fills() if f.kind is FillKind.EXIT]
            assert len(exits) == 1 and exits[0].qty == D("0.01") and exits[0].position_after == 0
            assert await h.position() is None

    run(scenario())


def test_a_plan_dead_lettered_with_no_record_gets_its_result_at_once(redis_url: str) -> None:
    """A plan whose handling fails before anything is recorded (the rules cannot be decoded: a bug) gets
    its one result, ERROR dead_lettered, in the same commit as its dead letter."""
    plan = entry("no-record", symbol="ETHUSDT", price="3000", qty="0.1")
    bus = FAST_BUS.model_copy(update={"max_deliveries": 2, "retry_initial_ms": 10, "retry_max_ms": 20})

    async def scenario() -> None:
        async with running(redis_url, prices={"ETHUSDT": "3000"}, bus=bus) as h:
            async def broken(*_: object) -> None:
                raise ValueError("unreadable rules")

            h.executor._entry_facts = broken  # type: ignore[assignment,method-assign]
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.error) == (Decision.ERROR, "dead_lettered")
            assert await h.redis.xlen(keys.dlq_stream(Stream.APPLY_PLAN)) == 1

    run(scenario())


def test_an_exchange_outage_before_the_send_never_dead_letters_a_stop_loss(redis_url: str) -> None:
    """The exchange cannot be read for a while (the rules re-read answers 503, 30 times): a stop-loss
    close waits and tries again — not counted as deliveries — and executes once the exchange answers; it
    is never dead-lettered."""
    opened = entry("outage-open")
    exit_plan = close("outage-close", opened.plan_id, reason="stop_loss")
    script = Script()
    bus = FAST_BUS.model_copy(update={"max_deliveries": 2, "retry_initial_ms": 10, "retry_max_ms": 20})

    async def scenario() -> None:
        async with running(redis_url, wrap=faulty(script), bus=bus) as h:
            await h.send(opened)
            await h.result(opened)
            script.rules_failures = 30
            await h.send(exit_plan)
            result = await h.result(exit_plan)
            assert result.decision is Decision.EXECUTE and script.rules_failures == 0
            assert not await h.redis.xlen(keys.dlq_stream(Stream.APPLY_PLAN))
            assert await h.position() is None

    run(scenario())


def test_a_plan_dead_lettered_before_its_send_still_gets_its_one_result(redis_url: str) -> None:
    """An entry whose send fails every time (a bug, not an outage) is dead-lettered after max_deliveries —
    and still gets its one result, ERROR dead_lettered: from the settling round, which finds no order on
    the exchange for its SUBMITTING record."""
    plan = entry("broken", symbol="ETHUSDT", price="3000", qty="0.1")
    script = Script(broken_for={"ETHUSDT"})
    bus = FAST_BUS.model_copy(update={"max_deliveries": 2, "retry_initial_ms": 10, "retry_max_ms": 20})

    async def scenario() -> None:
        async with running(redis_url, prices={"ETHUSDT": "3000"}, wrap=faulty(script), bus=bus,
                           settle_interval_s=0.2, submitting_max_age_s=0.1) as h:
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.error) == (Decision.ERROR, "dead_lettered")
            assert await h.redis.xlen(keys.dlq_stream(Stream.APPLY_PLAN)) == 1
            assert len(await h.results(plan.plan_id)) == 1 and await h.paper.positions() == {}

    run(scenario())


# --- fault 3: the exchange take-profit sits at TP3 only --------------------------------------------------------


def test_the_exchange_take_profit_sits_at_the_ladders_last_level(redis_url: str) -> None:
    """After an entry the exchange holds a quantity stop for the whole position and a take-profit at TP3
    — above TP2 and above the intent's own target — so the ladder's partial levels are not pre-empted."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            plan = entry("tp3", leverage=3)
            await h.send(plan)
            await h.result(plan)
            position = await h.position()
            assert position is not None
            tp = await h.paper.get_conditional("BTCUSDT", position.tp_order_id)
            stop = await h.paper.get_conditional("BTCUSDT", position.sl_order_id)
            params = LadderParams.from_settings(h.settings)
            prices, _ = levels_of(position, *base_fractions(position, params), params)
            assert tp.kind is ConditionalKind.TAKE_PROFIT_MARKET and tp.close_position
            # base_tp = (52000 - 50010) / 50010 = 0.039792; at 3x LSF = 1/(1+ln 4) = 0.419057; TP3 = base_tp ·
            # (1.8 + LSF/4) = 0.075795 → 50010 · 1.075795 = 53800.5 (TP1 52038.0, TP2 52815.0)
            assert tp.trigger_price == D("53800.5")
            assert tp.trigger_price > prices.tp2 > prices.tp1 and tp.trigger_price > plan.take_profit  # type: ignore[operator]
            assert (stop.kind, stop.close_position, stop.quantity) == (ConditionalKind.STOP_MARKET, False, D("0.01"))

    run(scenario())


# --- fault 6: a failing lane does not hold up the others ------------------------------------------------------


def test_a_failing_xrp_close_does_not_hold_up_a_btc_stop_loss(redis_url: str) -> None:
    """XRP's close keeps failing (the exchange refuses its orders); BTC's stop-loss close, published after
    it, executes at once while XRP is still being retried (not yet dead-lettered)."""
    script = Script()
    bus = FAST_BUS.model_copy(update={"retry_initial_ms": 2000, "retry_max_ms": 4000})
    xrp_open = entry("hol-xrp", symbol="XRPUSDT", price="0.6000", qty="800")
    btc_open = entry("hol-btc")

    async def scenario() -> None:
        async with running(redis_url, prices={"BTCUSDT": "50000", "XRPUSDT": "0.6000"}, wrap=faulty(script),
                           bus=bus, cooldown_s=0) as h:
            await h.send(xrp_open, btc_open)
            await h.result(xrp_open)
            await h.result(btc_open)
            script.fail_orders_of.add("XRPUSDT")
            xrp_close = close("hol-xrp-close", xrp_open.plan_id, symbol="XRPUSDT")
            btc_close = close("hol-btc-close", btc_open.plan_id, reason="stop_loss")
            await h.send(xrp_close)
            await h.send(btc_close)
            started = time.monotonic()
            result = await h.result(btc_close)
            assert result.decision is Decision.EXECUTE and time.monotonic() - started < 1.5
            assert await h.results(xrp_close.plan_id) == []
            assert not await h.redis.xlen(keys.dlq_stream(Stream.APPLY_PLAN))
            script.fail_orders_of.clear()  # XRP's exchange recovers: its close goes through in order
            assert (await h.result(xrp_close)).decision is Decision.EXECUTE

    run(scenario())


# --- fault 8: an entry the market has left behind ------------------------------------------------------------


def test_an_entry_beyond_its_own_stop_or_far_from_its_price_is_skipped(redis_url: str) -> None:
    """Mark 48,000 under the plan's stop 48,500: SKIP price_beyond_levels. Mark 50,600 (+1.2 % from the
    plan's 50,000, under its take-profit): SKIP price_moved. No order is sent for either."""

    async def scenario() -> None:
        async with running(redis_url, cooldown_s=0) as h:
            await h.set_price("BTCUSDT", "48000")
            beyond = entry("beyond")
            await h.send(beyond)
            assert (await h.result(beyond)).error == "price_beyond_levels"
            await h.set_price("BTCUSDT", "50600")
            moved = entry("moved")
            await h.send(moved)
            assert (await h.result(moved)).error == "price_moved"
            assert await h.paper.positions() == {}

    run(scenario())


# --- fault 9: fills of the symbol first, and the position checked against the exchange -----------------------


def _closed_behind(redis_url: str, *, queued: bool) -> None:
    async def scenario() -> None:
        h = Harness(redis_url, cooldown_s=0)
        await h.paper.start()
        await h.set_price("BTCUSDT", "50000")
        await h.consumer.setup()
        old = entry("old-position")
        async with h.executor.guard(old):  # opened, with its stop at 48,500 on the exchange
            await commit(h.redis, (await h.executor.execute(old, "")).ops)
        before = await h.position()
        assert before is not None and before.plan_id == old.plan_id
        await h.set_price("BTCUSDT", "48400")
        [stop_fill] = await h.paper.check_triggers("BTCUSDT")  # the exchange closes it: not booked yet
        if queued:
            await h.router.accept(stop_fill)  # the event arrived, waiting behind the executor's lock
        assert await h.position() is not None
        new = entry("new-position", price="48400")
        async with h.executor.guard(new):
            effects = await h.executor.execute(new, "")
            await commit(h.redis, effects.ops)
        position = await h.position()
        assert position is not None and position.plan_id == new.plan_id and position.quantity == D("0.01")
        assert position.sl_order_id == f"qt-{new.plan_id}-sl"
        fills = await h.fills()
        assert [(f.kind, f.position_after) for f in fills] == [
            (FillKind.ENTRY, D("0.01")), (FillKind.STOP, D(0)), (FillKind.ENTRY, D("0.01"))]
        assert fills[1].reason is ExitReason.STOP_LOSS and fills[1].position_plan_id == old.plan_id
        assert fills[2].position_plan_id == new.plan_id
        assert (await h.paper.positions())["BTCUSDT"].position_amt == D("0.01")
        await h.paper.close()
        await h.redis.aclose()

    run(scenario())


def test_an_entry_books_the_symbols_waiting_exchange_fills_first(redis_url: str) -> None:
    """The old position's stop filled on the exchange and its event waits behind the executor's lock: the
    entry books it first, then opens a new position under its own plan id with its own stop."""
    _closed_behind(redis_url, queued=True)


def test_an_entry_checks_the_position_it_joins_against_the_exchange(redis_url: str) -> None:
    """The same with the stop's event not even arrived: the exchange disagrees with the hash, the entry
    books the missed stop fill (fills_since) first, then opens the new position."""
    _closed_behind(redis_url, queued=False)



# --- found by the second reading -------------------------------------------------------------------------------


def test_no_resend_leaves_an_instance_whose_lease_lapsed(redis_url: str) -> None:
    """The lease is checked right before every send, resends included: an entry's first send gets a 429
    with Retry-After; meanwhile the lease stops being renewed. The resend is not sent (LeaseLost), and the
    plan is not counted as a failed delivery either — it stays pending for whoever holds the lease."""
    from services.apply_layer.lease import Lease, LeaseLost

    async def scenario() -> None:
        h0 = Harness(redis_url)
        lease = Lease(h0.redis, "apply_layer@test", 3000)
        assert await lease.acquire(asyncio.Event(), 0.1)
        script = Script(first_order_retry_after_s=0.3)
        plan = entry("lease-lapsed")
        async with running(redis_url, wrap=faulty(script, lease.check)) as h:
            await h.send(plan)
            await poll(_async(lambda: script.sent == ["429"]))
            assert lease._task is not None
            lease._task.cancel()  # its renewals stop (Redis unreachable from this host, say)
            await poll(_async(lambda: lease._task is not None and lease._task.done()))
            await asyncio.sleep(0.5)
            assert script.sent == ["429"] and await h.paper.positions() == {}
            assert await h.results(plan.plan_id) == []
            assert not await h.redis.xlen(keys.dlq_stream(Stream.APPLY_PLAN))
            with pytest.raises(LeaseLost):
                lease.check()
        await h0.redis.aclose()

    run(scenario())


def test_a_stop_the_exchange_expired_is_placed_again(redis_url: str) -> None:
    """The exchange expires the position's stop (ALGO_UPDATE EXPIRED): an alert, and a new stop for the
    position's quantity under a new id; the position hash records it."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            plan = entry("expired-stop")
            await h.send(plan)
            await h.result(plan)
            before = await h.position()
            assert before is not None
            await h.paper.expire_conditional("BTCUSDT", before.sl_order_id, "test: expired")

            async def replaced() -> bool:
                p = await h.position()
                return p is not None and p.sl_order_id not in ("", before.sl_order_id)

            await poll(replaced)
            after = await h.position()
            assert after is not None
            stop = await h.paper.get_conditional("BTCUSDT", after.sl_order_id)
            assert (stop.status, stop.quantity, stop.trigger_price) == (ConditionalStatus.NEW, D("0.01"),
                                                                        D("48500"))
            assert [a["kind"] for a in await h.stream(Stream.ALERTS)] == ["PROTECTION_ENDED"]

    run(scenario())


def test_a_stop_ended_while_the_lease_is_renewed_late_is_placed_again_once_it_is(redis_url: str) -> None:
    """Found by the fleet chaos run: Redis restarted, the lease's renewal was late, and the exchange expired
    a stop meanwhile. Placing the new stop met LeaseLost ("not renewed lately") and the exchange-event
    loop stopped the service (exit 1). Now the event waits, queued, and the stop is placed once the lease
    is renewed again; one alert."""
    from services.apply_layer.lease import LeaseLost

    late = {"renewal": False}

    def check() -> None:
        if late["renewal"]:
            raise LeaseLost("the lease was not renewed lately: no order is sent")

    async def scenario() -> None:
        async with running(redis_url, wrap=faulty(Script(), check)) as h:
            plan = entry("late-lease")
            await h.send(plan)
            await h.result(plan)
            before = await h.position()
            assert before is not None
            late["renewal"] = True
            await h.paper.expire_conditional("BTCUSDT", before.sl_order_id, "test: expired")
            await poll(lambda: _queued(h))  # the event arrived and waits for the lease
            assert (await h.position()) == before
            late["renewal"] = False

            async def replaced() -> bool:
                p = await h.position()
                return p is not None and p.sl_order_id not in ("", before.sl_order_id)

            await poll(replaced)
            assert [a["kind"] for a in await h.stream(Stream.ALERTS)] == ["PROTECTION_ENDED"]

    run(scenario())


async def _queued(h: Harness) -> bool:
    return bool(h.router._count)


def test_a_position_whose_stop_cannot_be_placed_again_is_closed(redis_url: str) -> None:
    """The stop is rejected and a new one cannot be placed (the exchange refuses conditionals): with
    apply.unprotected = close, apply_layer closes the position (reason protection_lost) and alerts."""
    script = Script()

    async def scenario() -> None:
        async with running(redis_url, wrap=faulty(script)) as h:
            plan = entry("unprotectable")
            await h.send(plan)
            await h.result(plan)
            position = await h.position()
            assert position is not None
            script.fail_conditionals = True
            await h.paper.reject_conditional("BTCUSDT", position.sl_order_id)

            async def closed() -> bool:
                return await h.position() is None

            await poll(closed)
            exits = [f for f in await h.fills() if f.kind is FillKind.EXIT]
            assert [(f.reason, f.qty) for f in exits] == [(ExitReason.PROTECTION_LOST, D("0.01"))]
            kinds = [a["kind"] for a in await h.stream(Stream.ALERTS)]
            assert kinds == ["PROTECTION_ENDED", "PROTECTION_NOT_PLACED"]
            assert await h.paper.positions() == {}

    run(scenario())


def test_the_settling_round_finds_a_stop_ended_while_apply_layer_was_down(redis_url: str) -> None:
    """The stop expired while no apply_layer listened (its event is gone): the settling round asks the
    exchange about every position's protective orders and places the stop again."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            plan = entry("audit")
            await h.send(plan)
            await h.result(plan)
        h = Harness(redis_url)  # apply_layer is down
        await h.paper.start()
        position = await h.position()
        assert position is not None
        await h.paper.expire_conditional("BTCUSDT", position.sl_order_id, "expired while down")
        h.paper.take_ended()  # nobody heard it
        await settle_round(h.executor)
        after = await h.position()
        assert after is not None and after.sl_order_id not in ("", position.sl_order_id)
        assert (await h.paper.get_conditional("BTCUSDT", after.sl_order_id)).status is ConditionalStatus.NEW
        await h.paper.close()
        await h.redis.aclose()

    run(scenario())


def _async(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fn()

    return check


def test_a_protective_order_left_resting_with_no_position_is_cancelled_by_the_settling_round(
        redis_url: str) -> None:
    """Found by the long fleet chaos run on Binance: after the quiesce a stop of ours rested on SOLUSDT with no
    position (a cancel lost to a fault). A quantity-based reduce-only stop outlives its position and would
    close a later position of the symbol at a stale level: the settling round cancels it. The stop of an
    open position is left alone, and an order that is not ours is never touched."""

    async def scenario() -> None:
        async with running(redis_url, prices={"BTCUSDT": "50000", "ETHUSDT": "3000"}) as h:
            opened = entry("kept")
            await h.send(opened)
            await h.result(opened)
            position = await h.position()
            assert position is not None and position.sl_order_id
            orphan = await h.paper.place_conditional("ETHUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("2900"),
                                                     client_order_id(hex16("orphan"), "sl"),
                                                     close_position=False, quantity=D("0.1"))
            foreign = await h.paper.place_conditional("ETHUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("2800"),
                                                      "manual-stop", close_position=False, quantity=D("0.1"))
            await settle_round(h.executor)
            left = {c.client_algo_id for c in await h.paper.open_conditionals()}
            assert orphan.client_algo_id not in left
            assert foreign.client_algo_id in left and position.sl_order_id in left

    run(scenario())
