"""Key names and the one way to read a name back from a key."""

from __future__ import annotations

from common import keys


def test_tail_reads_the_symbol_of_each_kind_of_key() -> None:
    """``tail`` gives the variable part of a key its builder made — symbols unchanged, CJK included — and
    None for a key of another kind that shares the prefix (a ledger key is not a position key)."""
    assert keys.tail(keys.position("BTCUSDT"), keys.position) == "BTCUSDT"
    assert keys.tail(keys.position("币安人生USDT"), keys.position) == "币安人生USDT"
    assert keys.tail(keys.position_ledger("ETHUSDT"), keys.position) is None
    assert keys.tail(keys.position_ledger("ETHUSDT"), keys.position_ledger) == "ETHUSDT"
    assert keys.tail(keys.position_snapshot("SOLUSDT"), keys.position_snapshot) == "SOLUSDT"
    assert keys.tail(keys.exit_state("XRPUSDT"), keys.exit_state) == "XRPUSDT"
    assert keys.tail(keys.reconcile_drift("XRPUSDT"), keys.reconcile_drift) == "XRPUSDT"
    assert keys.tail(keys.apply_plan("0123456789abcdef"), keys.apply_plan) == "0123456789abcdef"
    assert keys.tail(keys.position(""), keys.position) is None
    assert keys.tail("other:BTCUSDT", keys.position) is None
