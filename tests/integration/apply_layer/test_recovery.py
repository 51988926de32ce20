"""What apply_layer does before taking new plans: settle SUBMITTING records by asking the exchange,
book fills it missed, and report drift between its position hashes and the exchange."""

from __future__ import annotations

from common import keys
from common.contracts import Decision, FillKind, ReconcileEvent, ReconcileKind, decode, encode
from common.exchange.base import client_order_id
from common.streams import Stream
from services.apply_layer.reconcile import reconcile, settle_submitting
from services.apply_layer.records import load_record, mark_submitting
from tests.helpers import run
from tests.integration.apply_layer.harness import D, Harness, close, entry, running


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

        assert await settle_submitting(h.redis, h.executor) == 1
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
        assert await settle_submitting(h.redis, h.executor) == 1
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
        assert await h.router.catch_up() == 1
        assert await h.router.catch_up() == 0
        stop = [f for f in await h.fills() if f.kind is FillKind.STOP]
        assert len(stop) == 1 and stop[0].position_after == D(0)
        assert await h.position() is None
        await h.redis.aclose()

    run(scenario())


def test_drift_is_reported_blocks_entries_and_resolves(redis_url: str) -> None:
    """A position hash the exchange does not have: MISSING_ON_EXCHANGE in reconcile.events and alerts,
    entries for the symbol blocked, exits still allowed; once they agree, RESOLVED unblocks."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            opened = entry("drift-open")
            await h.send(opened)
            await h.result(opened)
            await h.paper.place_market_order("BTCUSDT", opened.side.opposite, D("0.004"), "manual-1",  # type: ignore[union-attr]
                                             reduce_only=True)
            [event] = await reconcile(h.redis, h.paper, h.executor.locks)
            assert (event.kind, event.redis_qty, event.exchange_qty) == (ReconcileKind.QTY_MISMATCH, D("0.01"),
                                                                         D("0.006"))
            assert await h.redis.get(keys.apply_blocked("BTCUSDT")) == "QTY_MISMATCH"
            assert len(await h.stream(Stream.ALERTS)) == 1
            assert await reconcile(h.redis, h.paper, h.executor.locks) == []  # reported once, not every pass
            blocked = entry("drift-blocked")
            await h.send(blocked)
            assert (await h.result(blocked)).error == "risk_limit:reconcile_drift"
            exit_plan = close("drift-close", opened.plan_id)
            await h.send(exit_plan)
            exited = await h.result(exit_plan)
            assert (exited.decision, exited.filled_qty) == (Decision.EXECUTE, D("0.006"))  # what the exchange held
            position = await h.position()
            assert position is not None and position.quantity == D("0.004")  # still drifting: still blocked
            assert await reconcile(h.redis, h.paper, h.executor.locks) == []
            await h.paper.place_market_order("BTCUSDT", opened.side, D("0.004"), "manual-2",  # type: ignore[arg-type]
                                             reduce_only=False)
            [resolved] = await reconcile(h.redis, h.paper, h.executor.locks)
            assert resolved.kind is ReconcileKind.RESOLVED
            assert not await h.redis.exists(keys.apply_blocked("BTCUSDT"))
            kinds = [decode(ReconcileEvent, f).kind for f in await h.stream(Stream.RECONCILE_EVENTS)]
            assert kinds == [ReconcileKind.QTY_MISMATCH, ReconcileKind.RESOLVED]

    run(scenario())
