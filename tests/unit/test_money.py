"""USDT amounts on the 1e-8 grid (ROUND_HALF_EVEN), where they are computed and where they are stored: a
replay-like run of fills whose PnL comes from division results (average entries) books amounts that read
as money and sum exactly."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

from common.books import SymbolLedger, account_from_hash, account_to_hash, ledger_from_hash, ledger_to_hash
from common.contracts.enums import Side
from common.maths.ledger import USDT_PLACES, LedgerPosition, apply_fill, book, new_account, usdt

D = Decimal
START = D("10000")
NOW = 1_795_000_000_000


def on_grid(value: Decimal) -> bool:
    return value == value.quantize(USDT_PLACES)


def test_usdt_rounds_half_even_to_1e_8() -> None:
    """The rule: 1e-8, ties to even, no trailing zeros, no negative zero."""
    assert usdt(D("181.27012999999999991")) == D("181.27013")
    assert usdt(D("0.000000015")) == D("0.00000002") and usdt(D("0.000000025")) == D("0.00000002")
    assert usdt(D("-0.000000005")) == 0 and str(usdt(D("-0.000000005"))) == "0"
    assert str(usdt(D("10000.00000000"))) == "10000" and str(usdt(D("12.50"))) == "12.5"


def test_a_replay_of_divisions_stores_amounts_that_sum_exactly() -> None:
    """Entries at several prices (average entries that do not terminate), partial exits paying a share of
    their fee, flips: every realized PnL and fee share is on the grid, the stored account and ledgers hold
    at most 8 decimals, and the account's realized PnL is exactly the sum of the symbols' and of the closed
    trades', its fees the sum of the fees, its equity the start plus realized minus fees."""
    rng = random.Random(20261125)
    account = new_account(START, NOW)
    stored_account = account_to_hash(account, NOW)
    positions = {s: LedgerPosition.flat() for s in ("XRPUSDT", "SOLUSDT")}
    ledgers = {s: SymbolLedger() for s in positions}
    closed_realized: list[Decimal] = []
    closed_fees: list[Decimal] = []
    long_averages = 0
    prices = {"XRPUSDT": D("0.6123"), "SOLUSDT": D("151.37")}
    for n in range(600):
        symbol = rng.choice(sorted(positions))
        tick = D("0.0001") if symbol == "XRPUSDT" else D("0.01")
        prices[symbol] += tick * rng.randint(-40, 41)
        price = prices[symbol]
        qty = D(rng.randint(1, 900)) / (D(10) if symbol == "XRPUSDT" else D(1000))
        fee = usdt(qty * price * D("0.0005"))
        side = rng.choice((Side.BUY, Side.SELL))
        outcome = apply_fill(positions[symbol], side, qty, price, fee, NOW + n)
        assert on_grid(outcome.realized_pnl), outcome.realized_pnl
        positions[symbol] = outcome.position_after
        exponent = outcome.position_after.avg_entry.as_tuple().exponent
        long_averages += isinstance(exponent, int) and exponent < -12
        assert on_grid(outcome.position_after.fees) and on_grid(outcome.position_after.realized_pnl)
        if outcome.trade is not None:
            assert on_grid(outcome.trade.realized_pnl) and on_grid(outcome.trade.pnl_net)
            closed_realized.append(outcome.trade.realized_pnl)
            closed_fees.append(outcome.trade.fees)
        # as harvest_brain books it: read what is stored, add, store again
        before = account_from_hash(stored_account)
        stored_account = account_to_hash(book(before, outcome.realized_pnl, fee, NOW + n), NOW + n)
        ledger = ledger_from_hash(ledger_to_hash(ledgers[symbol]))
        ledgers[symbol] = replace(ledger, realized_pnl=ledger.realized_pnl + outcome.realized_pnl,
                                  fees=ledger.fees + fee)
    assert len(closed_realized) > 10
    # the PnL came from averages that do not terminate (prices keep their precision)
    assert long_averages > 20
    for name in ("equity", "realized_pnl", "fees", "peak_equity", "day_start_equity"):
        text = stored_account[name]
        assert len(text.partition(".")[2]) <= 8, (name, text)
    stored_ledgers = {s: ledger_to_hash(ledger) for s, ledger in ledgers.items()}
    for fields in stored_ledgers.values():
        assert len(fields["realized_pnl"].partition(".")[2]) <= 8 and len(fields["fees"].partition(".")[2]) <= 8
    final = account_from_hash(stored_account)
    symbols_realized = sum((ledger_from_hash(f).realized_pnl for f in stored_ledgers.values()), D(0))
    symbols_fees = sum((ledger_from_hash(f).fees for f in stored_ledgers.values()), D(0))
    assert final.realized_pnl == symbols_realized
    assert final.fees == symbols_fees
    assert final.equity == START + final.realized_pnl - final.fees
    open_realized = sum((p.realized_pnl for p in positions.values()), D(0))
    assert final.realized_pnl == sum(closed_realized, D(0)) + open_realized


def test_an_unquantized_account_is_stored_on_the_grid() -> None:
    """An amount booked elsewhere with more digits (an old hash, an exchange's PnL) is stored on the grid."""
    account = replace(new_account(START, NOW), realized_pnl=D("181.270129999999999991"),
                      equity=D("10181.270129999999999991"), fees=D("0.1234567891"))
    fields = account_to_hash(account, NOW)
    assert (fields["realized_pnl"], fields["equity"], fields["fees"]) == ("181.27013", "10181.27013", "0.12345679")
    assert ledger_to_hash(SymbolLedger(realized_pnl=D("-2.000000005")))["realized_pnl"] == "-2"
