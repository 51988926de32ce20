"""What must hold after a chaos run, computed from what the fleet left in Redis and on the exchange.

Each check returns a :class:`Check`: its name, whether it holds, the figure it rests on and, when it does
not hold, the offending items (at most a few), so a failing run says what broke.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.contracts import ApplyResult, Decision, ExecutionResult, TradeClosed

ZERO = Decimal(0)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Check:
    name: str
    holds: bool
    figure: str
    offenders: tuple[Any, ...] = field(default_factory=tuple)

    def line(self) -> str:
        mark = "ok  " if self.holds else "FAIL"
        extra = f"  offenders: {list(self.offenders)[:5]}" if self.offenders else ""
        return f"{mark} {self.name}: {self.figure}{extra}"


def one_result_per_plan(plan_entries: Iterable[str], results: Iterable[ApplyResult]) -> Check:
    """Every apply.plan entry has exactly one apply.result; a plan id published again gets its second
    result as SKIP duplicate_plan, so each plan id has exactly one deciding (non-duplicate) result."""
    entries = Counter(plan_entries)
    answered: Counter[str] = Counter()
    deciding: Counter[str] = Counter()
    for r in results:
        answered[r.plan_id] += 1
        if not (r.decision is Decision.SKIP and r.error == "duplicate_plan"):
            deciding[r.plan_id] += 1
    wrong = sorted({p for p in set(entries) | set(answered)
                    if answered[p] != entries[p] or deciding[p] != 1})
    return Check("one apply.result per plan", not wrong,
                 f"{sum(entries.values())} plan entries, {len(entries)} plans, {sum(answered.values())} results",
                 tuple((p, entries[p], answered[p], deciding[p]) for p in wrong))


def one_order_per_executed_plan(results: Iterable[ApplyResult], main_order_ids: Iterable[str]) -> Check:
    """The exchange holds one market order ``qt-<plan_id>`` for each plan that executed one, and none
    for any other plan."""
    executed = {r.plan_id for r in results if r.decision is Decision.EXECUTE and r.filled_qty > 0}
    orders = Counter(cid[3:] for cid in main_order_ids)
    twice = sorted(p for p, n in orders.items() if n > 1)
    missing = sorted(executed - set(orders))
    extra = sorted(set(orders) - executed)
    holds = not twice and not missing and not extra
    return Check("one exchange order per executed plan", holds,
                 f"{len(executed)} executed plans, {sum(orders.values())} orders",
                 tuple([("twice", p) for p in twice] + [("no order", p) for p in missing]
                       + [("no result", p) for p in extra]))


def positions_equal_exchange(ours: Mapping[str, Decimal], theirs: Mapping[str, Decimal]) -> Check:
    """Every position hash holds the exchange's signed quantity (a symbol absent from a side holds 0)."""
    wrong = sorted((s, ours.get(s, ZERO), theirs.get(s, ZERO)) for s in set(ours) | set(theirs)
                   if ours.get(s, ZERO) != theirs.get(s, ZERO))
    return Check("position hashes equal the exchange", not wrong,
                 f"{len([q for q in ours.values() if q])} open positions", tuple(wrong))


def one_live_stop_each(open_positions: Mapping[str, str], live_stops: Mapping[str, list[str]]) -> Check:
    """Every open position has exactly one live stop on the exchange, the one its hash names
    (``open_positions``: symbol -> sl_order_id; ``live_stops``: symbol -> live stop client ids)."""
    wrong = [(s, sl, live_stops.get(s, [])) for s, sl in sorted(open_positions.items())
             if live_stops.get(s, []) != [sl]]
    orphans = sorted(s for s, ids in live_stops.items() if ids and s not in open_positions)
    return Check("one live protective stop per open position", not wrong,
                 f"{len(open_positions)} positions, {sum(len(v) for v in live_stops.values())} live stops"
                 f"{f', orphan stops on {orphans}' if orphans else ''}", tuple(wrong))


@dataclass
class _Book:
    qty: Decimal = ZERO  # signed
    avg: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO


def recompute_books(fills: Iterable[ExecutionResult]) -> dict[str, _Book]:
    """An independent ledger from execution.result (average cost, fees), one fill per fill_id."""
    books: defaultdict[str, _Book] = defaultdict(_Book)
    seen: set[str] = set()
    for f in fills:
        if f.fill_id in seen:
            continue
        seen.add(f.fill_id)
        b = books[f.symbol]
        signed = f.qty if f.side.value == "BUY" else -f.qty
        b.fees += f.fee
        if b.qty == 0 or (b.qty > 0) == (signed > 0):
            total = b.qty + signed
            b.avg = (b.avg * abs(b.qty) + f.price * f.qty) / abs(total)
            b.qty = total
            continue
        closing = min(abs(signed), abs(b.qty))
        direction = 1 if b.qty > 0 else -1
        b.realized += (f.price - b.avg) * closing * direction
        rest = abs(signed) - closing
        b.qty += signed
        if rest > 0:  # flipped through zero: the rest opens at this price
            b.avg = f.price
        elif b.qty == 0:
            b.avg = ZERO
    return dict(books)


def ledger_matches(fills: Iterable[ExecutionResult], ledgers: Mapping[str, tuple[Decimal, Decimal]],
                   account: tuple[Decimal, Decimal] | None) -> Check:
    """The symbol ledgers (realized, fees) and the account equal the recomputation to 0.01 USDT."""
    books = recompute_books(fills)
    wrong = []
    for symbol in sorted(set(books) | set(ledgers)):
        b = books.get(symbol, _Book())
        realized, fees = ledgers.get(symbol, (ZERO, ZERO))
        if abs(b.realized - realized) > CENT or abs(b.fees - fees) > CENT:
            wrong.append((symbol, str(realized), str(b.realized.quantize(CENT)), str(fees), str(b.fees.quantize(CENT))))
    total_realized = sum((b.realized for b in books.values()), ZERO)
    total_fees = sum((b.fees for b in books.values()), ZERO)
    if account is not None and (abs(account[0] - total_realized) > CENT or abs(account[1] - total_fees) > CENT):
        wrong.append(("account", str(account[0]), str(total_realized.quantize(CENT)), str(account[1]),
                      str(total_fees.quantize(CENT))))
    return Check("ledger equals the recomputation from execution.result", not wrong,
                 f"realized {total_realized.quantize(CENT)}, fees {total_fees.quantize(CENT)} over {len(books)} "
                 "symbols", tuple(wrong))


def closed_trades_sum(closed: Iterable[TradeClosed], ledger_realized: Decimal, open_realized: Decimal) -> Check:
    """trade.closed sums to the realized PnL of the closed positions (all realized minus what the open
    trades have realized so far)."""
    trades = list(closed)
    total = sum((t.realized_pnl for t in trades), ZERO)
    expected = ledger_realized - open_realized
    return Check("trade.closed sums to the realized PnL of closed positions", abs(total - expected) <= CENT,
                 f"{len(trades)} trades, sum {total.quantize(CENT)}, expected {expected.quantize(CENT)}")


def groups_drained(groups: Mapping[tuple[str, str], tuple[int, int]]) -> Check:
    """Every consumer group of every grouped stream has lag 0 and nothing pending."""
    wrong = sorted((s, g, lag, pending) for (s, g), (lag, pending) in groups.items() if lag or pending)
    return Check("every consumer group drained (lag 0, pending 0)", not wrong, f"{len(groups)} groups", tuple(wrong))


def dlqs_hold_the_poison(injected: Mapping[str, set[str]], dead: Mapping[str, set[str]]) -> Check:
    """The dead-letter streams hold exactly the injected poison (by origin entry id), nothing else."""
    wrong = sorted((s, sorted(injected.get(s, set()) ^ dead.get(s, set()))[:3])
                   for s in set(injected) | set(dead) if injected.get(s, set()) != dead.get(s, set()))
    return Check("the DLQs hold exactly the injected poison", not wrong,
                 f"{sum(len(v) for v in injected.values())} injected, {sum(len(v) for v in dead.values())} "
                 "dead-lettered", tuple(wrong))


def no_restart_loop(unexpected_exits: Mapping[str, list[int]]) -> Check:
    """No service died on its own (every death was a kill of ours), so none is in a restart loop."""
    wrong = sorted((s, codes) for s, codes in unexpected_exits.items() if codes)
    return Check("no service died on its own", not wrong, f"{sum(len(c) for c in unexpected_exits.values())} "
                 "unexpected exits", tuple(wrong))


def secrets_absent(secrets: Iterable[str], texts: Mapping[str, str]) -> Check:
    """The API key and secret appear in no log, stream entry, metric or HTTP answer."""
    wrong = sorted(name for name, text in texts.items() if any(s and s in text for s in secrets))
    return Check("the Binance key and secret appear nowhere", not wrong, f"{len(texts)} sources searched",
                 tuple(wrong))
