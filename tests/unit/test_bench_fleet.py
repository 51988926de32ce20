"""The fleet benchmarks' pure parts: the generated market (rules the paper exchange loads, entries its
gates and filters accept), the quantiles, the fake Binance's messages (what marketdata's parser reads)
and the book kept from the fleet's streams."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bench.fleet import Book, Seen, id_ms, quantile, summary, tick_ops
from bench.marketdata_ws import Market, kline_event, mark_event
from bench.universe import entry_qty, long_entry, open_policy, start_price, symbol_names, write_rules
from common.bus.effects import HashSet, Publish
from common.contracts import ExecutionResult, MarketTick
from common.exchange.binance.market import KlineUpdate, MarkPrice, parse_ws_message
from common.streams import Service, Stream
from tests.plans import update_stop


def test_rules_of_580_symbols_load_with_every_template(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules.json", 580)
    names = symbol_names(580)
    assert list(rules) == names and len(set(names)) == 580
    assert all(r.tradable and r.max_leverage >= 10 for r in rules.values())
    assert len({r.tick_size for r in rules.values()}) >= 5  # the repo's paper symbols taken in turn


def test_entries_fit_the_symbol_and_the_policy(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules.json", 16)
    for r in rules.values():
        price = start_price(r)
        qty = entry_qty(r, price)
        assert qty >= r.min_qty and qty * price >= r.min_notional and qty % r.step_size == 0
        plan = long_entry("x", r, price)
        assert plan.stop_loss is not None and plan.take_profit is not None
        assert plan.stop_loss < price < plan.take_profit
        assert r.round_price(plan.stop_loss) == plan.stop_loss
    policy = open_policy(list(rules), 20)
    assert set(policy.allowlist) == set(rules) and policy.limits.max_open_positions == 20 and policy.version


def test_quantiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.5) == 50 and quantile(values, 0.99) == 99 and quantile(values, 1.0) == 100
    assert quantile([7.0], 0.99) == 7 and quantile([], 0.5) == 0
    assert summary(values)["p99"] == 99 and summary([]) == {"n": 0}
    assert id_ms("1733000000123-4") == 1733000000123


def test_ticks_are_marketdatas_writes() -> None:
    ops = tick_ops({"B000USDT": Decimal("1.5")}, ts=5)
    assert isinstance(ops[0], Publish) and ops[0].stream == Stream.MARKET_TICK
    assert isinstance(ops[0].message, MarketTick) and ops[0].message.mark_price == Decimal("1.5")
    assert isinstance(ops[1], HashSet) and ops[1].mapping["ts"] == "5"


def test_fake_binance_messages_parse_as_binance_ones() -> None:
    market = Market({"B000USDT": 1.25}, span_s=0.0)
    market.step()
    mark = parse_ws_message({"stream": "b000usdt@markPrice@1s", "data": mark_event("B000USDT", 1.25, 1000)})
    assert isinstance(mark, MarkPrice) and mark.mark_price == Decimal("1.25")
    k = market.klines["B000USDT"]
    event = parse_ws_message({"stream": "b000usdt@kline_1m",
                              "data": kline_event("B000USDT", k, market.open_time, 1000, market.due_close())})
    assert isinstance(event, KlineUpdate) and event.kline.closed and event.kline.open_time == market.open_time
    opened = market.open_time
    market.roll()
    assert market.open_time == opened + 60_000 and not market.due_close()


def test_book_keeps_the_first_close_and_the_stop_updates() -> None:
    book = Book()
    update = update_stop("u", "a" * 16, "97", symbol="B000USDT")
    fill = ExecutionResult(source=Service.APPLY_LAYER, trace_id="b" * 16, fill_id="f1", plan_id="c" * 16,
                           symbol="B000USDT", side="SELL", qty=Decimal("1"), price=Decimal("96"), fee=Decimal("0"),
                           reduce_only=True, kind="EXIT", position_after=Decimal("0"), position_plan_id="a" * 16)
    later = fill.model_copy(update={"fill_id": "f2"})
    book.take([(Stream.APPLY_PLAN, Seen("1-0", update)), (Stream.EXECUTION_RESULT, Seen("2-0", fill)),
               (Stream.EXECUTION_RESULT, Seen("3-0", later))])
    assert book.stop_updates == {"a" * 16: [update.plan_id]} and not book.stop_settled("a" * 16)
    assert book.closes["a" * 16].entry_id == "2-0" and book.closes["a" * 16].ms == 2
