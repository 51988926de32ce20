"""What apply_layer does before taking new plans: settle SUBMITTING records by asking the exchange,
book fills it missed, and report drift between its position hashes and the exchange."""

from __future__ import annotations

from common import keys
from common.contracts import Decision, FillKind, encode
from common.exchange.base import client_order_id
from common.streams import Stream
from services.apply_layer.records import load_record, mark_submitting
from services.apply_layer.settle import settle_submitting
from tests.helpers import run
from tests.integration.apply_layer.harness import D, Harness, running
from tests.plans import close, entry


def test_submitting_plan_found_on_exchange_is_recorded_not_resent(redis_url: str) -> None:
    """A crash after the send: the record is SUBMITTING and the exchange has the order. At start the plan
    is settled by querying: EXECUTE with that order, its stream entry acknowledged, no second order."""

    async def scenario() -> None:
        h = Harness(redis_url)
        await h.paper.start()
        await h.set_price("BTCUSDT", "50000")
        plan = entry("crashed")
        await h.consumer.setup()
        entry_id = await h.redis.xadd(keys.stream(Stream.APPLY_PLAN), encode(plan))
        await h.redis.xreadgroup("apply_layer", "apply_layer@test", {keys.stream(Stream.APPLY_PLAN): ">"})
        cid = client_order_id(plan.plan_id)
        await mark_submitting(h.redis, plan, cid, entry_id, 3600)
        await h.paper.place_market_order("BTCUSDT", plan.side, D("0.01"), cid, reduce_only=False)  # type: ignore[arg-type]

        assert await settle_submitting(h.executor, periodic=False) == 1
        [result] = await h.results(plan.plan_id)
        assert result.decision is Decision.EXECUTE and result.filled_qty == D("0.01")
        record = await load_record(h.redis, plan.plan_id)
        assert record is not None and record.state.value == "DONE"
        assert (await h.redis.xpending(keys.stream(Stream.APPLY_PLAN), "apply_layer"))["pending"] == 0
        assert (await h.paper.positions())["BTCUSDT"].position_amt == D("0.01")
        position = await h.position()
        assert position is not None and position.quantity == D("0.01")
        await h.redis.aclose()

    run(scenario())


def test_submitting_plan_not_on_exchange_is_submitted_once(redis_url: str) -> None:
    """A crash before the send reached the exchange: "order does not exist" → it is submitted, once."""

    async def scenario() -> None:
        h = Harness(redis_url)
        await h.paper.start()
        await h.set_price("BTCUSDT", "50000")
        plan = entry("never-sent")
        await mark_submitting(h.redis, plan, client_order_id(plan.plan_id), "", 3600)
        assert await settle_submitting(h.executor, periodic=False) == 1
        [result] = await h.results(plan.plan_id)
        assert result.decision is Decision.EXECUTE
        assert (await h.paper.positions())["BTCUSDT"].position_amt == D("0.01")
        assert len(await h.fills()) == 1
        await h.redis.aclose()

    run(scenario())


def test_missed_stop_fill_is_booked_at_start(redis_url: str) -> None:
    """A stop that filled while apply_layer was down is found through fills_since and booked once."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            opened = entry("missed")
            await h.send(opened)
            await h.result(opened)
        h = Harness(redis_url)  # apply_layer is down
        await h.set_price("BTCUSDT", "48000")
        assert len(await h.paper.check_triggers("BTCUSDT")) == 1  # the exchange fills the stop
        assert await h.position() is not None
        assert (await h.router.catch_up()).booked == 1
        assert (await h.router.catch_up()).booked == 0
        stop = [f for f in await h.fills() if f.kind is FillKind.STOP]
        assert len(stop) == 1 and stop[0].position_after == D(0)
        assert await h.position() is None
        await h.redis.aclose()

    run(scenario())


def test_an_entry_on_a_symbol_the_exchange_disagrees_on_is_skipped(redis_url: str) -> None:
    """The position an entry would join is checked against the exchange first: the exchange holds less
    (an order outside the fleet) and no missed fill of ours explains it, so the entry is SKIP
    risk_limit:reconcile_drift with an alert, and no order is sent; exits still run, for what the
    exchange holds."""

    async def scenario() -> None:
        async with running(redis_url, cooldown_s=0) as h:
            opened = entry("drift-open")
            await h.send(opened)
            await h.result(opened)
            await h.paper.place_market_order("BTCUSDT", opened.side.opposite, D("0.004"), "manual-1",  # type: ignore[union-attr]
                                             reduce_only=True)
            blocked = entry("drift-blocked")
            await h.send(blocked)
            assert (await h.result(blocked)).error == "risk_limit:reconcile_drift"
            assert (await h.paper.positions())["BTCUSDT"].position_amt == D("0.006")  # nothing sent
            alerts = await h.stream(Stream.ALERTS)
            assert [a["kind"] for a in alerts] == ["RECONCILE_DRIFT"]
            exit_plan = close("drift-close", opened.plan_id)
            await h.send(exit_plan)
            exited = await h.result(exit_plan)
            assert (exited.decision, exited.filled_qty) == (Decision.EXECUTE, D("0.006"))  # what the exchange held

    run(scenario())


def test_position_monitors_open_drift_blocks_entries(redis_url: str) -> None:
    """position_monitor's drift key (the one detector's verdict) blocks entries on the symbol; once it is
    deleted (RESOLVED) entries go again."""

    async def scenario() -> None:
        async with running(redis_url, cooldown_s=0) as h:
            await h.redis.hset(keys.reconcile_drift("BTCUSDT"), mapping={"kind": "QTY_MISMATCH"})
            first = entry("blocked-1")
            await h.send(first)
            assert (await h.result(first)).error == "risk_limit:reconcile_drift"
            await h.redis.delete(keys.reconcile_drift("BTCUSDT"))
            second = entry("blocked-2")
            await h.send(second)
            assert (await h.result(second)).decision is Decision.EXECUTE

    run(scenario())
